"""Result files of a job: JSON Lines rows per chunk (parts), merged in input order, and CSV.

A row carries the same fields, under the same names, as a document of the API's answer
(``id``, ``topics`` of ``name`` and ``probability``, ``abstained``), plus the model and version
that scored it, because both are ranked by ``scoring.ranking.rank``.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from jobs.files import atomic_file
from jobs.model import JobPaths
from scoring.backends.base import BackendResult
from scoring.ranking import rank


def result_lines(ids: list[str], result: BackendResult, top_k: int) -> list[str]:
    """JSON Lines of the ranked topics of each document, probabilities rounded to 6 digits.

    Built from pre-encoded pieces rather than one ``json.dumps`` per document: at tens of
    thousands of documents a second the encoder is a visible share of a chunk's time.
    """
    threshold = result.metadata.threshold.value if result.metadata.threshold else None
    ranking = rank(result.probabilities, top_k, threshold)
    best = np.round(ranking.probabilities, 6).tolist()
    names = [json.dumps(label) for label in result.labels]
    tail = f', "model": {json.dumps(result.model)}, "version": {result.version}}}\n'
    return [f'{{"id": {json.dumps(doc_id, ensure_ascii=False)}, "topics": ['
            + ", ".join(f'{{"name": {names[i]}, "probability": {p!r}}}' for i, p in zip(indices, row))
            + f'], "abstained": {"true" if abstained else "false"}' + tail
            for doc_id, indices, row, abstained in zip(ids, ranking.indices.tolist(), best,
                                                        ranking.abstained.tolist())]


def merge(parts: list[Path], target: Path) -> int:
    """Concatenate ``parts`` in order into ``target`` (synced, renamed into place); rows written."""
    merged = 0
    with atomic_file(target, "wb") as out:
        for part in parts:
            with part.open("rb") as handle:
                for line in handle:
                    out.write(line)
                    merged += 1
    return merged


def write_csv(path: Path, parts: list[Path], top_k: int) -> None:
    """One row per document: id, model, version, abstained, then topic_N / probability_N."""
    header = ["id", "model", "version", "abstained"]
    for n in range(1, top_k + 1):
        header += [f"topic_{n}", f"probability_{n}"]
    with atomic_file(path) as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for part in parts:
            with part.open(encoding="utf-8") as handle:
                for line in handle:
                    row = json.loads(line)
                    cells = [row["id"], row["model"], row["version"], str(row["abstained"]).lower()]
                    for topic in row["topics"]:
                        cells += [topic["name"], topic["probability"]]
                    writer.writerow(cells)


def discard(paths: JobPaths) -> None:
    """Remove a job's chunk files, result parts and any temporary file a killed task left
    (kept: the results, CSV, errors and record files)."""
    shutil.rmtree(paths.scratch, ignore_errors=True)
    shutil.rmtree(paths.results / "parts", ignore_errors=True)
    for leftover in paths.results.glob(".*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
