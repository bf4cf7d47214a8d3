"""Small inputs of every format, good and bad, written into a test's folder."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile
from pathlib import Path

NEWS = [
    "Oil prices rose sharply after OPEC agreed to cut crude output",
    "The company reported quarterly earnings per share up 12 pct",
    "Wheat and corn exports to the Soviet Union increased this month",
    "The central bank raised its discount rate to defend the currency",
    "Shareholders approved the acquisition of the rival firm for 300 mln dlrs",
]


def write_jsonl(path: Path, id_field: str = "id", text_field: str = "text",
                count: int = len(NEWS)) -> list[str]:
    ids = [f"j{i}" for i in range(count)]
    with path.open("w", encoding="utf-8") as out:
        for i, doc_id in enumerate(ids):
            out.write(json.dumps({id_field: doc_id, text_field: NEWS[i % len(NEWS)]}) + "\n")
    return ids


def write_csv(path: Path, id_col: str = "id", text_col: str = "text") -> list[str]:
    ids = [f"c{i}" for i in range(len(NEWS))]
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["source", id_col, text_col])
        for doc_id, text in zip(ids, NEWS):
            writer.writerow(["wire", doc_id, text + ",\n with a comma and a newline"])
    return ids


def write_txt_folder(folder: Path) -> list[str]:
    ids = []
    for i, text in enumerate(NEWS):
        rel = f"day{i % 2}/story{i}.txt"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8")
        ids.append(rel)
    (folder / "notes.md").write_text("not news", encoding="utf-8")
    return sorted(ids)


def bad_jsonl(path: Path) -> tuple[list[str], dict[str, str]]:
    """Good ids, and for each bad line its source suffix and reason fragment."""
    lines = [
        json.dumps({"id": "good1", "text": NEWS[0]}).encode(),
        b"{not json",
        json.dumps({"id": "empty", "text": "   "}).encode(),
        b'{"id": "latin", "text": "caf\xe9 prices"}',
        json.dumps({"id": "notext"}).encode(),
        json.dumps(["a", "list"]).encode(),
        json.dumps({"id": "good2", "text": NEWS[1]}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    bad = {":2": "not JSON", ":3": "empty text", ":4": "not valid UTF-8",
           ":5": "no 'text' field", ":6": "not a JSON object"}
    return ["good1", "good2"], bad


def add_to_tar(archive: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def add_to_zip(archive: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)


def news_files(prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}story{i}.txt": text.encode() for i, text in enumerate(NEWS)}
