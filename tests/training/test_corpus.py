"""The SGML reader on real excerpts, and the checks on folders and archives."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from training.corpus import SGML_FILES, CorpusError, parse_sgml, read_corpus, story_texts
from training.download import ARCHIVE_NAME, download

DATA = Path(__file__).resolve().parent.parent / "data"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _excerpt(name: str):
    return parse_sgml((DATA / name).read_bytes().decode("latin-1"), name)


def test_parser_reads_fields_of_real_stories():
    docs = _excerpt("reut2-000-excerpt.sgm")
    assert [d.newid for d in docs] == [1, 2, 3, 30]
    first = docs[0]
    assert first.date == "26-FEB-1987 15:01:01.79"
    assert first.lewissplit == "TRAIN"
    assert first.topics == ("cocoa",)
    assert first.places == ("el-salvador", "usa", "uruguay")
    assert first.title == "BAHIA COCOA REVIEW"
    assert first.body.startswith("Showers continued throughout the week in\nthe Bahia cocoa zone")
    assert first.body.endswith("Reuter")
    assert first.text == f"{first.title}\n{first.body}"
    assert docs[1].topics == ()


def test_parser_decodes_character_references_and_drops_control_characters():
    docs = _excerpt("reut2-000-excerpt.sgm")
    standard_oil = docs[1]
    assert standard_oil.title == "STANDARD OIL <SRD> TO FORM FINANCIAL UNIT"
    assert "Plc <BP>, which also owns" in standard_oil.body
    assert "&lt;" not in standard_oil.body and "&#" not in standard_oil.body
    for doc in docs:
        assert not CONTROL.search(doc.title + doc.body + doc.date), doc.newid


def test_brief_story_has_a_title_and_an_empty_body():
    brief = _excerpt("reut2-000-excerpt.sgm")[-1]
    assert brief.topics == ("money-supply",)
    assert brief.title == "ASSETS OF MONEY MARKET MUTUAL FUNDS ROSE 720.4 MLN DLRS IN LATEST WEEK"
    assert brief.body == ""
    assert brief.text == brief.title


def test_story_texts_are_the_documents_texts_or_their_whole_text(corpus_dir):
    for name in SGML_FILES[:3]:
        text = (corpus_dir / name).read_bytes().decode("latin-1")
        docs = parse_sgml(text, name)
        texts = story_texts(text, name)
        assert [newid for newid, _ in texts] == [d.newid for d in docs]
        assert [t for (_, t), d in zip(texts, docs) if d.text] == [d.text for d in docs if d.text]
    table = ('<REUTERS NEWID="7"><TEXT TYPE="UNPROC">&#2;\nGRAIN <WHT> TABLE\n  a  1\n&#3;</TEXT></REUTERS>'
             '<REUTERS NEWID="8"><TEXT><TITLE>A <B> TITLE</TITLE><BODY>x </BOD y</BODY></TEXT></REUTERS>')
    assert story_texts(table) == [(7, "GRAIN <WHT> TABLE\n  a  1"), (8, "A <B> TITLE\nx </BOD y")]


def test_parser_reads_latin1_bytes():
    (doc,) = _excerpt("reut2-017-latin1.sgm")
    assert doc.newid == 17980 and doc.lewissplit == "TEST"
    assert "growth.\u00fcside measures" in doc.body  # byte 0xFC, then &#5;&#30; dropped
    assert not CONTROL.search(doc.body)


def test_full_corpus_reads_every_story(corpus_dir):
    docs = read_corpus(corpus_dir)
    assert len(docs) == 21578
    assert [d.newid for d in docs[:3]] == [1, 2, 3] and docs[-1].newid == 21578


@pytest.fixture
def corpus_copy(tmp_path, corpus_dir) -> Path:
    """A writable copy of the corpus (symlinks for the unchanged files)."""
    copy = tmp_path / "reuters21578"
    copy.mkdir()
    for path in Path(corpus_dir).iterdir():
        (copy / path.name).symlink_to(path.resolve())
    return copy


@pytest.fixture(scope="module")
def archive(tmp_path_factory, corpus_dir) -> Path:
    """The corpus packed like the official reuters21578.tar.gz."""
    path = tmp_path_factory.mktemp("archive") / "reuters21578.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name in SGML_FILES:
            tar.add(Path(corpus_dir) / name, arcname=name)
    return path


def test_tar_gz_gives_the_same_documents(archive, corpus_dir):
    from_archive = read_corpus(archive)
    from_folder = read_corpus(corpus_dir)
    assert from_archive == from_folder


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="corpus not found"):
        read_corpus(tmp_path / "nowhere")


def test_missing_file_is_named(corpus_copy):
    (corpus_copy / "reut2-013.sgm").unlink()
    with pytest.raises(CorpusError, match="lacks reut2-013.sgm"):
        read_corpus(corpus_copy)


def test_checksum_mismatch_is_reported(corpus_copy, corpus_dir):
    target = corpus_copy / "reut2-004.sgm"
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data[:5000] + bytes([data[5000] ^ 0x20]) + data[5001:])  # one flipped bit
    with pytest.raises(CorpusError, match=r"reut2-004.sgm is corrupt: SHA256"):
        read_corpus(corpus_copy)


def test_truncated_file_is_reported_without_checksums(corpus_copy):
    (corpus_copy / "SHA256SUMS").unlink()
    target = corpus_copy / "reut2-021.sgm"
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusError, match="reut2-021.sgm is corrupt or truncated"):
        read_corpus(corpus_copy)


def test_corrupt_archive_is_reported(tmp_path):
    archive = tmp_path / "reuters21578.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 this is not really gzip" * 10)
    with pytest.raises(CorpusError, match="corrupt or unreadable"):
        read_corpus(archive)


def test_archive_missing_files_is_reported(tmp_path, corpus_dir):
    archive = tmp_path / "partial.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(Path(corpus_dir) / "reut2-000.sgm", arcname="reut2-000.sgm")
    with pytest.raises(CorpusError, match="lacks reut2-001.sgm"):
        read_corpus(archive)



def test_download_verifies_before_the_archive_appears(tmp_path, archive):
    # a local file:// address stands in for the UCI server: tests never touch the network
    dest = tmp_path / "data"
    written = download(dest, url=archive.as_uri())
    assert written == dest / ARCHIVE_NAME and len(read_corpus(written)) == 21578
    assert not list(dest.glob("*.part"))


def test_download_of_a_broken_file_leaves_nothing(tmp_path):
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"<html>moved</html>")
    dest = tmp_path / "data"
    with pytest.raises(CorpusError, match="corrupt or unreadable"):
        download(dest, url=bogus.as_uri())
    assert not list(dest.iterdir())
    with pytest.raises(CorpusError, match="download from .* failed"):
        download(dest, url=(tmp_path / "missing.tar.gz").as_uri())
