"""Documents out of news archives: Reuters SGML, JSON Lines, CSV, folders of .txt, and
.tar.gz / .zip archives of these.

Everything is read as a stream; archive entries are never written to disk, and an archive with
an entry that would escape its folder (absolute path, ``..``, links, devices) is refused as a
whole before any of its records is produced. A record that cannot be read (bad JSON, bad
encoding, empty text...) comes out as a ``BadRecord`` with its reason, so one bad line never
fails a job.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from service.errors import InvalidArgument, NotFound, PermissionDenied
from training.corpus import CorpusError, decode, parse_sgml

FORMATS = ("sgm", "jsonl", "csv", "txt")
EXTENSIONS = {".sgm": "sgm", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "txt"}
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")

_TEXT = re.compile(r"<TEXT\b[^>]*>(.*?)</TEXT>", re.S)

csv.field_size_limit(sys.maxsize)


@dataclass(frozen=True)
class Record:
    """One document to score."""

    id: str
    text: str


@dataclass(frozen=True)
class BadRecord:
    """A document (or a whole file) that could not be read, and why."""

    source: str
    reason: str
    id: str | None = None


@dataclass(frozen=True)
class ReadOptions:
    """How to read an input: its format (``auto`` picks by extension) and field names."""

    format: str = "auto"
    id_field: str = "id"
    text_field: str = "text"
    max_chars: int = 100_000

    def __post_init__(self) -> None:
        if self.format != "auto" and self.format not in FORMATS:
            raise InvalidArgument(f"unknown format {self.format!r}: use auto, {', '.join(FORMATS)}")
        if not self.id_field or not self.text_field:
            raise InvalidArgument("id_field and text_field must not be empty")


Item = Record | BadRecord
Opener = Callable[[], BinaryIO]


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVES)


def format_of(name: str) -> str | None:
    return EXTENSIONS.get(PurePosixPath(name).suffix.lower())


# -- where inputs may come from ------------------------------------------------------------

def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_input(spec: str, roots: list[Path]) -> list[Path]:
    """The files and folders an input spec (path, folder or glob) names, all under ``roots``.

    Paths are resolved (symlinks and ``..`` followed) before the check, so neither can reach
    outside an allowed root. Raises PermissionDenied, NotFound or InvalidArgument.
    """
    if not spec or not spec.strip():
        raise InvalidArgument("input path is empty")
    if not os.path.isabs(spec):
        raise InvalidArgument(f"input path {spec!r} must be absolute")
    if not roots:
        raise PermissionDenied("no input roots are allowed on this server (NEWSCLF_ALLOWED_ROOTS)")
    if glob.has_magic(spec):
        matches = [Path(match).resolve() for match in sorted(glob.glob(spec, recursive=True))]
        outside = [match for match in matches if not _under(match, roots)]
        if outside:
            raise PermissionDenied(f"input {spec} reaches outside the allowed roots ({outside[0]})")
        if not matches:
            raise NotFound(f"input {spec} matches nothing")
        return matches
    path = Path(spec).resolve()
    if not _under(path, roots):
        raise PermissionDenied(f"input {spec} is outside the allowed roots")
    if not path.exists():
        raise NotFound(f"input {spec} does not exist")
    return [path]


# -- one file's records ----------------------------------------------------------------------

def _checked(source: str, doc_id: object, text: object, options: ReadOptions) -> Item:
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
        return BadRecord(source, f"no {options.id_field!r} field")
    if isinstance(doc_id, (dict, list, bool)):
        return BadRecord(source, f"{options.id_field!r} is not a string or number")
    doc_id = str(doc_id)
    if text is None:
        return BadRecord(source, f"no {options.text_field!r} field", doc_id)
    if not isinstance(text, str):
        return BadRecord(source, f"{options.text_field!r} is not a string", doc_id)
    if _has_bad_bytes(doc_id) or _has_bad_bytes(text):
        return BadRecord(source, "not valid UTF-8", None if _has_bad_bytes(doc_id) else doc_id)
    if not text.strip():
        return BadRecord(source, "empty text", doc_id)
    if len(text) > options.max_chars:
        return BadRecord(source, f"text longer than {options.max_chars} characters", doc_id)
    return Record(doc_id, text)


def _has_bad_bytes(text: str) -> bool:
    """True when ``surrogateescape`` decoding met bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_sgm(name: str, stream: BinaryIO, options: ReadOptions) -> Iterator[Item]:
    """Reuters SGML: one record per story, id = NEWID, text = title and body.

    Stories without TITLE and BODY (tables, ``TYPE="UNPROC"``) are scored on their whole TEXT,
    so every story of an archive gets a result.
    """
    raw = stream.read().decode("latin-1")
    try:
        documents = parse_sgml(raw, name)
    except CorpusError as exc:
        yield BadRecord(name, str(exc))
        return
    if not documents:
        yield BadRecord(name, "no <REUTERS> stories in file")
    cursor = 0
    for doc in documents:
        text = doc.text
        if not text:
            text, cursor = _whole_text(raw, doc.newid, cursor)
        yield _checked(f"{name}#{doc.newid}", doc.newid, text, options)


def _whole_text(raw: str, newid: int, start: int) -> tuple[str, int]:
    """The decoded TEXT of story ``newid``, searched from ``start`` (stories come in file order)."""
    begin = raw.find(f'NEWID="{newid}"', start)
    if begin < 0:
        return "", start
    end = raw.find("</REUTERS>", begin)
    match = _TEXT.search(raw, begin, end if end >= 0 else len(raw))
    return (decode(match.group(1)).strip() if match else ""), max(begin, end)


def read_jsonl(name: str, stream: BinaryIO, options: ReadOptions) -> Iterator[Item]:
    """JSON Lines: one object per line with ``id_field`` and ``text_field``."""
    for number, raw in enumerate(stream, start=1):
        source = f"{name}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield BadRecord(source, "not valid UTF-8")
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield BadRecord(source, f"not JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            yield BadRecord(source, "not a JSON object")
            continue
        yield _checked(source, obj.get(options.id_field), obj.get(options.text_field), options)


def read_csv(name: str, stream: BinaryIO, options: ReadOptions) -> Iterator[Item]:
    """CSV with a header row naming ``id_field`` and ``text_field`` columns."""
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    rows = csv.reader(text)
    try:
        header = next(rows)
    except StopIteration:
        yield BadRecord(name, "empty CSV file")
        return
    except csv.Error as exc:
        yield BadRecord(f"{name}:1", f"unreadable CSV header: {exc}")
        return
    missing = [col for col in (options.id_field, options.text_field) if col not in header]
    if missing:
        yield BadRecord(name, f"CSV header lacks column(s) {', '.join(map(repr, missing))}")
        return
    id_col, text_col = header.index(options.id_field), header.index(options.text_field)
    while True:
        source = f"{name}:{rows.line_num + 1}"
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadRecord(source, f"unreadable CSV row: {exc}")
            continue
        if not row:
            continue
        if len(row) != len(header):
            yield BadRecord(source, f"row has {len(row)} fields, header has {len(header)}")
            continue
        yield _checked(source, row[id_col], row[text_col], options)


def read_txt(name: str, stream: BinaryIO, options: ReadOptions) -> Iterator[Item]:
    """A plain-text file is one document whose id is its relative path."""
    data = stream.read(options.max_chars * 4 + 1)
    if len(data) > options.max_chars * 4:
        yield BadRecord(name, f"text longer than {options.max_chars} characters", name)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        yield BadRecord(name, "not valid UTF-8", name)
        return
    yield _checked(name, name, text, options)


READERS: dict[str, Callable[[str, BinaryIO, ReadOptions], Iterator[Item]]] = {
    "sgm": read_sgm, "jsonl": read_jsonl, "csv": read_csv, "txt": read_txt,
}


# -- folders and archives --------------------------------------------------------------------

def _pick_format(names: Iterable[str], options: ReadOptions, where: str) -> str:
    """The format to read from a folder or archive: the given one, else the most specific found.

    Reuters folders also hold .txt lists of category names, so SGML wins over plain text.
    """
    if options.format != "auto":
        return options.format
    present = {format_of(name) for name in names}
    for fmt in FORMATS:
        if fmt in present:
            return fmt
    raise InvalidArgument(f"{where} holds no {', '.join(EXTENSIONS)} files")


def _entry_problem(name: str) -> str | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in path.parts:
        return "escapes the archive with '..'"
    return None


def _check_entries(archive: Path, entries: Iterable[tuple[str, bool]]) -> list[str]:
    """Regular-file entry names of an archive, or PermissionDenied for the first unsafe one.

    ``entries`` gives (name, is_regular_file_or_folder) for each entry.
    """
    names = []
    for name, regular in entries:
        problem = _entry_problem(name) or (None if regular else "is a link or special file")
        if problem:
            raise PermissionDenied(f"archive {archive.name} refused: entry {name!r} {problem}")
        names.append(name)
    return names


def _tar_entries(archive: Path) -> list[str]:
    with tarfile.open(archive, "r|*") as tar:
        entries = [(m.name, m.isfile() or m.isdir()) for m in tar]
    return _check_entries(archive, entries)


def _read_tar(archive: Path, options: ReadOptions) -> Iterator[Item]:
    names = _tar_entries(archive)
    fmt = _pick_format(names, options, f"archive {archive.name}")
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            if member.isfile() and format_of(member.name) == fmt:
                handle = tar.extractfile(member)
                if handle is not None:
                    yield from READERS[fmt](member.name, handle, options)


def _zip_entries(zf: zipfile.ZipFile) -> list[tuple[str, bool]]:
    # Unix mode bits sit in the upper half of external_attr; 0o120000 marks a symlink.
    return [(i.filename, (i.external_attr >> 16) & 0o170000 != 0o120000) for i in zf.infolist()]


def _read_zip(archive: Path, options: ReadOptions) -> Iterator[Item]:
    with zipfile.ZipFile(archive) as zf:
        _check_entries(archive, _zip_entries(zf))
        files = [i for i in zf.infolist() if not i.is_dir()]
        fmt = _pick_format((i.filename for i in files), options, f"archive {archive.name}")
        for info in files:
            if format_of(info.filename) == fmt:
                with zf.open(info) as handle:
                    yield from READERS[fmt](info.filename, handle, options)


def _read_archive(archive: Path, options: ReadOptions) -> Iterator[Item]:
    try:
        if archive.name.lower().endswith(".zip"):
            yield from _read_zip(archive, options)
        else:
            yield from _read_tar(archive, options)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidArgument(f"archive {archive.name} is corrupt or unreadable: {exc}") from exc


def _read_folder(folder: Path, roots: list[Path], options: ReadOptions) -> Iterator[Item]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    fmt = _pick_format((p.name for p in files), options, f"folder {folder}")
    for path in files:
        if format_of(path.name) != fmt:
            continue
        if not _under(path.resolve(), roots):
            raise PermissionDenied(f"{path} links outside the allowed roots")
        with path.open("rb") as handle:
            yield from READERS[fmt](path.relative_to(folder).as_posix(), handle, options)


def _read_file(path: Path, options: ReadOptions) -> Iterator[Item]:
    fmt = options.format if options.format != "auto" else format_of(path.name)
    if fmt is None:
        raise InvalidArgument(f"cannot tell the format of {path.name}: give format "
                              f"({', '.join(FORMATS)}) or use {', '.join(EXTENSIONS)}")
    with path.open("rb") as handle:
        yield from READERS[fmt](path.name, handle, options)


def check_archives(paths: list[Path]) -> None:
    """Refuse (PermissionDenied) an archive with an unsafe entry, without reading its records.

    Lets a submitter learn at once that an archive is refused; the reader checks again.
    """
    for path in paths:
        if path.is_file() and is_archive(path):
            try:
                if path.name.lower().endswith(".zip"):
                    with zipfile.ZipFile(path) as zf:
                        _check_entries(path, _zip_entries(zf))
                else:
                    _tar_entries(path)
            except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
                raise InvalidArgument(f"archive {path.name} is corrupt or unreadable: {exc}") from exc


def read_input(paths: list[Path], roots: list[Path], options: ReadOptions) -> Iterator[Item]:
    """Records of every resolved input path, in order; raises only for a whole-input problem."""
    for path in paths:
        if path.is_dir():
            yield from _read_folder(path, roots, options)
        elif is_archive(path):
            yield from _read_archive(path, options)
        else:
            yield from _read_file(path, options)
