"""Fetching the official Reuters-21578 archive from the UCI Machine Learning Repository."""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

from training.corpus import CorpusError, read_corpus

UCI_URL = ("https://archive.ics.uci.edu/ml/machine-learning-databases/"
           "reuters21578-mld/reuters21578.tar.gz")
ARCHIVE_NAME = "reuters21578.tar.gz"


def download(dest: Path, url: str = UCI_URL, timeout: float = 60.0) -> Path:
    """Download the archive to ``dest`` (a folder or file path) and verify it reads completely.

    Written to a ``.part`` file first and renamed only after verification, so an interrupted
    download never looks like a corpus.
    """
    dest = Path(dest)
    target = dest / ARCHIVE_NAME if dest.is_dir() or not dest.suffix else dest
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CorpusError(f"download from {url} failed: {exc}") from exc
    try:
        read_corpus(partial)
    except CorpusError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return target
