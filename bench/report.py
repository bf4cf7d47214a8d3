"""Writes one benchmark's section of docs/benchmarks.md, leaving the other sections alone.

Each benchmark owns the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``, so
benchmarks can be re-run one at a time and the page stays one document.
"""

from __future__ import annotations

import platform
import re
from datetime import datetime, timezone
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery figure here was printed by a script in `bench/`; each section names its command.\n"


def machine() -> str:
    import os
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, markdown: str, doc: Path = DOC) -> Path:
    """Replace (or append) the section ``name`` with ``markdown`` and a timestamp line."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"<!-- BEGIN {name} -->\n{markdown.rstrip()}\n\n_Measured {stamp} on {machine()}._\n<!-- END {name} -->"
    text = doc.read_text(encoding="utf-8") if doc.exists() else HEADER
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: body, text)
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
    return doc
