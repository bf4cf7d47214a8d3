"""Reader for the Reuters-21578 Distribution 1.0 SGML files.

The files are Latin-1 SGML, not XML: they carry numeric character references for control
codes (``&#3;`` ends every story) and one undeclared stray byte, so a small regex reader is
both simpler and more faithful than an XML parser.  A source is either a folder of
``reut2-NNN.sgm`` files or the official ``reuters21578.tar.gz``; both are verified (all 22
files present, SHA256SUMS when the folder carries one, every file ends with a complete story)
and anything wrong raises :class:`CorpusError` with one readable line.
"""

from __future__ import annotations

import hashlib
import html
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

SGML_FILES = tuple(f"reut2-{i:03d}.sgm" for i in range(22))
CHECKSUMS_FILE = "SHA256SUMS"
DOCUMENTS_PER_FILE = 1000
TOTAL_DOCUMENTS = 21578


def _element(tag: str, attributes: str = "") -> re.Pattern:
    """``<tag …>content</tag>``, content up to the first end tag: ``(.*?)`` unrolled into runs
    without ``<``, which the regex engine takes several times faster."""
    return re.compile(rf"<{tag}{attributes}>([^<]*(?:<(?!/{tag}>)[^<]*)*)</{tag}>")


_DOC = _element("REUTERS", r"\b([^>]*)")
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_D = _element("D")
_FIELDS = {tag: _element(tag, r"\b[^>]*") for tag in ("DATE", "TITLE", "BODY", "TEXT")}
_LISTS = {tag: _element(tag) for tag in ("TOPICS", "PLACES")}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"[ \t]+")


class CorpusError(Exception):
    """The corpus is missing, incomplete or corrupt; the message says which file and why."""


@dataclass(frozen=True)
class Document:
    """One news story, with the fields the product uses."""

    newid: int
    date: str
    lewissplit: str
    topics: tuple[str, ...]
    title: str
    body: str
    places: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        """What the models read: the title followed by the body."""
        return _join(self.title, self.body)


def _join(title: str, body: str) -> str:
    return f"{title}\n{body}".strip()


def decode(raw: str) -> str:
    """SGML text to plain text: character references decoded, control characters dropped.

    Newlines and tabs are kept as layout; everything else below 0x20 (the wire-service
    framing codes such as ``&#2;``/``&#3;``) carries no meaning for a reader.
    """
    return _CONTROL.sub("", html.unescape(raw))


def _field(tag: str, chunk: str) -> str:
    match = _FIELDS[tag].search(chunk)
    return decode(match.group(1)).strip() if match else ""


def _list(tag: str, chunk: str) -> tuple[str, ...]:
    match = _LISTS[tag].search(chunk)
    return tuple(decode(d).strip() for d in _D.findall(match.group(1))) if match else ()


def _elements(text: str, source: str) -> Iterator[tuple[int, dict[str, str], str]]:
    """NEWID, attributes and content of each ``<REUTERS>`` element."""
    for attrs, chunk in _DOC.findall(text):
        attributes = dict(_ATTR.findall(attrs))
        try:
            newid = int(attributes["NEWID"])
        except (KeyError, ValueError) as exc:
            raise CorpusError(f"{source}: a <REUTERS> element has no valid NEWID") from exc
        yield newid, attributes, chunk


def _title(chunk: str) -> str:
    return _SPACES.sub(" ", _field("TITLE", chunk))


def parse_sgml(text: str, source: str = "<text>") -> list[Document]:
    """Parse the stories in one SGML file's text (already decoded from Latin-1)."""
    return [Document(newid=newid, date=_field("DATE", chunk), lewissplit=attributes.get("LEWISSPLIT", ""),
                     topics=_list("TOPICS", chunk), title=_title(chunk), body=_field("BODY", chunk),
                     places=_list("PLACES", chunk))
            for newid, attributes, chunk in _elements(text, source)]


def story_texts(text: str, source: str = "<text>") -> list[tuple[int, str]]:
    """NEWID and text of each story: what scoring reads, without the fields only training needs.

    The text is :attr:`Document.text`, or the whole TEXT for stories with neither title nor
    body (tables, ``TYPE="UNPROC"``), so every story has something to score.
    """
    return [(newid, _join(_title(chunk), _field("BODY", chunk)) or _field("TEXT", chunk))
            for newid, _, chunk in _elements(text, source)]


def _check_file(name: str, data: bytes) -> list[Document]:
    text = data.decode("latin-1")
    opened, closed = text.count("<REUTERS "), text.count("</REUTERS>")
    if opened == 0 or opened != closed or not text.rstrip().endswith("</REUTERS>"):
        raise CorpusError(f"{name} is corrupt or truncated ({opened} stories opened, {closed} closed)")
    documents = parse_sgml(text, name)
    if len(documents) != opened:
        raise CorpusError(f"{name} is corrupt: {opened} stories but {len(documents)} parsed")
    return documents


def _read_checksums(folder: Path) -> dict[str, str]:
    path = folder / CHECKSUMS_FILE
    if not path.is_file():
        return {}
    sums = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _folder_files(folder: Path) -> Iterator[tuple[str, bytes]]:
    missing = [name for name in SGML_FILES if not (folder / name).is_file()]
    if missing:
        raise CorpusError(f"corpus folder {folder} lacks {', '.join(missing[:3])}"
                          + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
    sums = _read_checksums(folder)
    for name in SGML_FILES:
        data = (folder / name).read_bytes()
        expected = sums.get(name)
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise CorpusError(f"{folder / name} is corrupt: SHA256 does not match {CHECKSUMS_FILE}")
        yield name, data


def _tar_files(archive: Path) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [name for name in SGML_FILES if name not in members]
            if missing:
                raise CorpusError(f"archive {archive} lacks {', '.join(missing[:3])}"
                                  + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
            for name in SGML_FILES:
                handle = tar.extractfile(members[name])
                if handle is None:
                    raise CorpusError(f"archive {archive}: {name} is not a regular file")
                yield name, handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CorpusError(f"archive {archive} is corrupt or unreadable: {exc}") from exc


def read_corpus(source: str | Path) -> list[Document]:
    """All 21,578 stories of a folder or ``reuters21578.tar.gz``, in file order.

    Raises :class:`CorpusError` when the source is missing, incomplete or fails a check.
    """
    source = Path(source)
    if source.is_dir():
        files: Iterable[tuple[str, bytes]] = _folder_files(source)
    elif source.is_file():
        files = _tar_files(source)
    else:
        raise CorpusError(f"corpus not found at {source} (a folder of reut2-*.sgm files "
                          "or reuters21578.tar.gz; `python -m training download` fetches it)")
    documents: list[Document] = []
    for name, data in files:
        documents.extend(_check_file(name, data))
    if len(documents) != TOTAL_DOCUMENTS:
        raise CorpusError(f"corpus at {source} holds {len(documents)} stories, expected {TOTAL_DOCUMENTS}")
    return documents
