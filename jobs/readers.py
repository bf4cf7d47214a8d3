"""Documents out of news archives: Reuters SGML, JSON Lines, CSV, folders of .txt, and
.tar.gz / .zip archives of these.

Everything is read as a stream; archive entries are never written to disk, and an archive with
an entry that would escape its folder (absolute path, ``..``, links, devices) is refused as a
whole before any of its records is produced. A record that cannot be read (bad JSON, bad
encoding, empty text, a line over the record cap...) comes out as a ``BadRecord`` with its
reason, so one bad line never fails a job.

Hostile inputs are bounded: only regular files are opened (checked with ``stat`` first, so a
FIFO or a device is never read), globs and folders are walked without following symlinked
folders and within a file budget and a deadline, and archive entries are checked against the
size and count caps from their headers before their data is decompressed. Memory stays within
a few ``max_record_bytes``: no file or entry is ever read whole.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import fnmatch
import glob
import gzip
import json
import os
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from scoring.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from training.corpus import CorpusError, story_texts

FORMATS = ("sgm", "jsonl", "csv", "txt")
EXTENSIONS = {".sgm": "sgm", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "txt"}
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")

_STORY_END = "</REUTERS>"
BLOCK = 1 << 16


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
    max_entry_bytes: int = 1 << 30
    max_input_bytes: int = 16 << 30
    max_archive_entries: int = 100_000
    max_record_bytes: int = 4 << 20
    max_depth: int = 32
    max_input_files: int = 100_000
    scan_timeout_s: float = 60.0

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


def _resolved(path: str | Path, spec: str) -> Path:
    """``path`` with symlinks and ``..`` resolved; InvalidArgument for a path the OS refuses."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise InvalidArgument(f"input {spec} is not a usable path: {exc}") from None


def _split_glob(spec: str) -> tuple[str, list[str]]:
    """The fixed folder before the first wildcard, and the pattern parts after it."""
    parts = spec.split("/")
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = "/".join(parts[:first]) or "/"
    pattern = [part for part in parts[first:] if part not in ("", ".")]
    if ".." in pattern:
        raise InvalidArgument(f"input {spec}: '..' is not allowed after a wildcard")
    return base, pattern


def _checked_spec(spec: str, roots: list[Path]) -> None:
    if not spec or not spec.strip():
        raise InvalidArgument("input path is empty")
    if "\x00" in spec or not spec.isprintable():
        raise InvalidArgument("input path contains a NUL byte or control characters")
    if not os.path.isabs(spec):
        raise InvalidArgument(f"input path {spec!r} must be absolute")
    if not roots:
        raise PermissionDenied("no input roots are allowed on this server (NEWSCLF_ALLOWED_ROOTS)")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _stat(path: Path, spec: str) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise NotFound(f"input {spec} does not exist") from None
    except OSError as exc:
        raise InvalidArgument(f"input {spec} is not usable: {exc.strerror}") from None


def check_input(spec: str, roots: list[Path]) -> None:
    """What a submitter can be told at once, in a few system calls: the spec is usable, it lies
    under ``roots`` and (for a plain path) names a regular file or a folder.

    Nothing is listed, opened or decompressed here: a glob is expanded, and archives are
    checked, by the worker's ``prepare``. Raises InvalidArgument, PermissionDenied or NotFound.
    """
    _checked_spec(spec, roots)
    if glob.has_magic(spec):
        base_spec, _ = _split_glob(spec)
        base = _resolved(base_spec, spec)
        if not _under(base, roots):
            raise PermissionDenied(f"input {spec} is outside the allowed roots")
        if not stat.S_ISDIR(_stat(base, spec).st_mode):
            raise NotFound(f"input {spec}: {base_spec} is not a folder")
        return
    path = _resolved(spec, spec)
    if not _under(path, roots):
        raise PermissionDenied(f"input {spec} is outside the allowed roots")
    mode = _stat(path, spec).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InvalidArgument(f"input {spec} is {_kind(mode)}: only regular files and folders are read")


class _Budget:
    """How many directory entries a glob or folder walk may still look at, and until when."""

    def __init__(self, options: ReadOptions, what: str):
        self.left = options.max_input_files
        self.limit = options.max_input_files
        self.deadline = time.monotonic() + options.scan_timeout_s
        self.options = options
        self.what = what

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise ResourceExhausted(f"{self.what} holds more than {self.limit} entries "
                                    "(NEWSCLF_MAX_INPUT_FILES): name a narrower input")
        if time.monotonic() > self.deadline:
            raise ResourceExhausted(f"listing {self.what} took longer than "
                                    f"{self.options.scan_timeout_s:g} s (NEWSCLF_INPUT_SCAN_TIMEOUT_S)")


def _entries(folder: str, budget: _Budget) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            found = []
            for entry in entries:
                budget.spend()
                found.append(entry)
            return found
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _walk(folder: str, pattern: list[str], depth: int, budget: _Budget) -> Iterator[str]:
    """Paths under ``folder`` matching ``pattern`` (glob parts, ``**`` for any folders).

    Symlinked folders are never entered, so neither a loop nor a link out of the root is
    followed; hidden names match only a pattern that starts with a dot, as in ``glob``.
    """
    if not pattern:
        yield folder
        return
    if depth > budget.options.max_depth:
        raise ResourceExhausted(f"{budget.what} is nested deeper than {budget.options.max_depth} "
                                "folders (NEWSCLF_MAX_DEPTH)")
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        yield from _walk(folder, rest, depth, budget)
        for entry in _entries(folder, budget):
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                yield from _walk(entry.path, pattern, depth + 1, budget)
        return
    if not glob.has_magic(head):
        path = os.path.join(folder, head)
        if not rest:
            if os.path.lexists(path):
                yield path
        elif os.path.isdir(path) and not os.path.islink(path):
            yield from _walk(path, rest, depth + 1, budget)
        return
    for entry in _entries(folder, budget):
        if entry.name.startswith(".") and not head.startswith("."):
            continue
        if fnmatch.fnmatchcase(entry.name, head):
            if not rest:
                yield entry.path
            elif entry.is_dir(follow_symlinks=False):
                yield from _walk(entry.path, rest, depth + 1, budget)


def resolve_input(spec: str, roots: list[Path], options: ReadOptions | None = None) -> list[Path]:
    """The files and folders an input spec (path, folder or glob) names, all under ``roots``.

    Paths are resolved (symlinks and ``..`` followed) before the check, so neither can reach
    outside an allowed root; a glob is expanded under its fixed folder only, within the file
    budget and deadline of ``options``. Raises PermissionDenied, NotFound, InvalidArgument or
    ResourceExhausted.
    """
    options = options or ReadOptions()
    check_input(spec, roots)
    if not glob.has_magic(spec):
        return [_resolved(spec, spec)]
    base, pattern = _split_glob(spec)
    budget = _Budget(options, f"input {spec}")
    matches = sorted({_resolved(match, spec) for match in _walk(base, pattern, 0, budget)})
    outside = [match for match in matches if not _under(match, roots)]
    if outside:
        raise PermissionDenied(f"input {spec} reaches outside the allowed roots ({outside[0]})")
    if not matches:
        raise NotFound(f"input {spec} matches nothing")
    for match in matches:
        mode = _stat(match, str(match)).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InvalidArgument(f"input {spec}: {match} is {_kind(mode)}: only regular files and "
                                  "folders are read")
    return matches


def _open_regular(path: Path, name: str) -> BinaryIO:
    """``path`` opened for reading once ``stat`` shows a regular file; a FIFO, device or socket
    is refused before any ``open`` (which would block or read without end)."""
    mode = _stat(path, name).st_mode
    if not stat.S_ISREG(mode):
        raise InvalidArgument(f"{name} is {_kind(mode)}: only regular files are read")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped after the stat
            raise InvalidArgument(f"{name} is not a regular file")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class _Sizes:
    """The bytes a job may still read: each file or entry, and all of them together."""

    def __init__(self, options: ReadOptions):
        self.options = options
        self.total = 0

    def take(self, name: str, size: int) -> None:
        if size > self.options.max_entry_bytes:
            raise ResourceExhausted(f"{name} is {size} bytes (decompressed), over the "
                                    f"{self.options.max_entry_bytes}-byte cap per file (NEWSCLF_MAX_ENTRY_BYTES)")
        self.total += size
        if self.total > self.options.max_input_bytes:
            raise ResourceExhausted(f"the input is over {self.options.max_input_bytes} bytes "
                                    "(decompressed), the cap per job (NEWSCLF_MAX_INPUT_BYTES)")


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


def _lines(stream: BinaryIO, cap: int) -> Iterator[bytes | None]:
    """The lines of ``stream``, at most ``cap`` bytes each held in memory: a longer line comes
    out as None once it has been skipped."""
    while line := stream.readline(cap + 1):
        if len(line) <= cap or line.endswith(b"\n"):
            yield line
            continue
        while (rest := stream.readline(BLOCK)) and not rest.endswith(b"\n"):
            pass
        yield None


def _stories(name: str, stream: BinaryIO, cap: int) -> Iterator[str | BadRecord]:
    """The ``<REUTERS>`` elements of an SGML stream one at a time (decoded from Latin-1), so a
    file is never held whole; a story over ``cap`` bytes ends the file with a BadRecord."""
    buffer = ""
    found = False
    while block := stream.read(BLOCK):
        search = max(0, len(buffer) - len(_STORY_END))
        buffer += block.decode("latin-1")
        start = 0
        while (end := buffer.find(_STORY_END, max(start, search))) >= 0:
            end += len(_STORY_END)
            found = True
            yield buffer[start:end]
            start = end
        buffer = buffer[start:]
        if len(buffer) > cap:
            yield BadRecord(name, f"a story longer than {cap} bytes (NEWSCLF_MAX_RECORD_BYTES); "
                                  "rest of the file skipped")
            return
    if not found:
        yield BadRecord(name, "no <REUTERS> stories in file")


def read_sgm(name: str, stream: BinaryIO, options: ReadOptions) -> Iterator[Item]:
    """Reuters SGML: one record per story, id = NEWID, text = title and body.

    Stories without TITLE and BODY (tables, ``TYPE="UNPROC"``) are scored on their whole TEXT,
    so every story of an archive gets a result.
    """
    for story in _stories(name, stream, options.max_record_bytes):
        if isinstance(story, BadRecord):
            yield story
            continue
        try:
            texts = story_texts(story, name)
        except CorpusError as exc:
            yield BadRecord(name, str(exc))
            continue
        for newid, text in texts:
            yield _checked(f"{name}#{newid}", newid, text, options)


def read_jsonl(name: str, stream: BinaryIO, options: ReadOptions) -> Iterator[Item]:
    """JSON Lines: one object per line with ``id_field`` and ``text_field``."""
    for number, raw in enumerate(_lines(stream, options.max_record_bytes), start=1):
        source = f"{name}:{number}"
        if raw is None:
            yield BadRecord(source, f"line longer than {options.max_record_bytes} bytes "
                                    "(NEWSCLF_MAX_RECORD_BYTES)")
            continue
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
        except RecursionError:
            yield BadRecord(source, "JSON nested too deeply")
            continue
        if not isinstance(obj, dict):
            yield BadRecord(source, "not a JSON object")
            continue
        yield _checked(source, obj.get(options.id_field), obj.get(options.text_field), options)


class _LineTooLong(Exception):
    pass


def _text_lines(stream: BinaryIO, cap: int) -> Iterator[str]:
    for line in _lines(stream, cap):
        if line is None:
            raise _LineTooLong
        yield line.decode("utf-8", errors="surrogateescape")


def read_csv(name: str, stream: BinaryIO, options: ReadOptions) -> Iterator[Item]:
    """CSV with a header row naming ``id_field`` and ``text_field`` columns.

    A physical line over the record cap ends the file with a BadRecord: a CSV reader cannot
    find the next row boundary without reading the rest of it.
    """
    csv.field_size_limit(options.max_record_bytes)
    rows = csv.reader(_text_lines(stream, options.max_record_bytes))
    too_long = f"line longer than {options.max_record_bytes} bytes (NEWSCLF_MAX_RECORD_BYTES); rest of the file skipped"
    try:
        header = next(rows)
    except StopIteration:
        yield BadRecord(name, "empty CSV file")
        return
    except csv.Error as exc:
        yield BadRecord(f"{name}:1", f"unreadable CSV header: {exc}")
        return
    except _LineTooLong:
        yield BadRecord(f"{name}:1", too_long)
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
        except _LineTooLong:
            yield BadRecord(source, too_long)
            return
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


def _check_entries(archive: Path, entries: Iterable[tuple[str, bool, int]],
                   options: ReadOptions) -> list[str]:
    """Regular-file entry names of an archive, or an error for the first unsafe or oversized one.

    ``entries`` gives (name, is_regular_file_or_folder, declared size) for each entry; sizes
    and counts are checked from the headers, before any entry's data is decompressed.
    """
    names = []
    sizes = _Sizes(options)
    for name, regular, size in entries:
        problem = _entry_problem(name) or (None if regular else "is a link or special file")
        if problem:
            raise PermissionDenied(f"archive {archive.name} refused: entry {name!r} {problem}")
        if len(names) >= options.max_archive_entries:
            raise ResourceExhausted(f"archive {archive.name} has more than {options.max_archive_entries} "
                                    "entries (NEWSCLF_MAX_ARCHIVE_ENTRIES)")
        sizes.take(f"archive {archive.name}: entry {name!r}", size)
        names.append(name)
    return names


@contextmanager
def _tar_stream(archive: Path) -> Iterator[tarfile.TarFile]:
    """A tar (or gzip-compressed tar) read as a stream.

    Decompression goes through ``gzip.GzipFile``, which inflates in bounded steps: tarfile's own
    stream decompressor inflates a whole read at once and re-slices its buffer per block, so a
    bomb would cost it memory in proportion to the ratio and time in its square.
    """
    with _open_regular(archive, archive.name) as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        with (gzip.GzipFile(fileobj=raw) if compressed else contextlib.nullcontext(raw)) as stream, \
                tarfile.open(fileobj=stream, mode="r|", bufsize=BLOCK) as tar:
            yield tar


def _tar_entries(archive: Path, options: ReadOptions) -> list[str]:
    with _tar_stream(archive) as tar:
        return _check_entries(archive, ((m.name, m.isfile() or m.isdir(), m.size) for m in tar), options)


def _read_tar(archive: Path, options: ReadOptions, sizes: _Sizes) -> Iterator[Item]:
    names = _tar_entries(archive, options)
    fmt = _pick_format(names, options, f"archive {archive.name}")
    with _tar_stream(archive) as tar:
        for member in tar:
            if member.isfile() and format_of(member.name) == fmt:
                sizes.take(f"archive {archive.name}: entry {member.name!r}", member.size)
                handle = tar.extractfile(member)
                if handle is not None:
                    yield from READERS[fmt](member.name, handle, options)


def _zip_entries(zf: zipfile.ZipFile) -> list[tuple[str, bool, int]]:
    # Unix mode bits sit in the upper half of external_attr; 0o120000 marks a symlink.
    return [(i.filename, (i.external_attr >> 16) & 0o170000 != 0o120000, i.file_size)
            for i in zf.infolist()]


def _read_zip(archive: Path, options: ReadOptions, sizes: _Sizes) -> Iterator[Item]:
    with _open_regular(archive, archive.name) as raw, zipfile.ZipFile(raw) as zf:
        _check_entries(archive, _zip_entries(zf), options)
        files = [i for i in zf.infolist() if not i.is_dir()]
        fmt = _pick_format((i.filename for i in files), options, f"archive {archive.name}")
        for info in files:
            if format_of(info.filename) == fmt:
                sizes.take(f"archive {archive.name}: entry {info.filename!r}", info.file_size)
                with zf.open(info) as handle:
                    yield from READERS[fmt](info.filename, handle, options)


def _read_archive(archive: Path, options: ReadOptions, sizes: _Sizes) -> Iterator[Item]:
    try:
        if archive.name.lower().endswith(".zip"):
            yield from _read_zip(archive, options, sizes)
        else:
            yield from _read_tar(archive, options, sizes)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidArgument(f"archive {archive.name} is corrupt or unreadable: {exc}") from exc


def _folder_files(folder: Path, options: ReadOptions) -> list[Path]:
    """Regular, visible files under ``folder``, symlinked folders not entered; a FIFO or device
    in the folder is passed over, not opened."""
    budget = _Budget(options, f"folder {folder}")
    files = []
    for found in _walk(str(folder), ["**", "*"], 0, budget):
        path = Path(found)
        try:
            if stat.S_ISREG(path.stat().st_mode):
                files.append(path)
        except OSError:
            continue
    return sorted(files)


def _read_folder(folder: Path, roots: list[Path], options: ReadOptions, sizes: _Sizes) -> Iterator[Item]:
    files = _folder_files(folder, options)
    fmt = _pick_format((p.name for p in files), options, f"folder {folder}")
    for path in files:
        if format_of(path.name) != fmt:
            continue
        if not _under(_resolved(path, str(path)), roots):
            raise PermissionDenied(f"{path} links outside the allowed roots")
        yield from _read_regular(path, path.relative_to(folder).as_posix(), fmt, options, sizes)


def _read_regular(path: Path, name: str, fmt: str, options: ReadOptions, sizes: _Sizes) -> Iterator[Item]:
    with _open_regular(path, name) as handle:
        sizes.take(name, os.fstat(handle.fileno()).st_size)
        yield from READERS[fmt](name, handle, options)


def _read_file(path: Path, options: ReadOptions, sizes: _Sizes) -> Iterator[Item]:
    fmt = options.format if options.format != "auto" else format_of(path.name)
    if fmt is None:
        raise InvalidArgument(f"cannot tell the format of {path.name}: give format "
                              f"({', '.join(FORMATS)}) or use {', '.join(EXTENSIONS)}")
    yield from _read_regular(path, path.name, fmt, options, sizes)


def read_input(paths: list[Path], roots: list[Path], options: ReadOptions) -> Iterator[Item]:
    """Records of every resolved input path, in order; raises only for a whole-input problem
    (unsafe or corrupt archive, a path that is not a regular file, a cap exceeded)."""
    sizes = _Sizes(options)
    for path in paths:
        if path.is_dir():
            yield from _read_folder(path, roots, options, sizes)
        elif is_archive(path):
            yield from _read_archive(path, options, sizes)
        else:
            yield from _read_file(path, options, sizes)
