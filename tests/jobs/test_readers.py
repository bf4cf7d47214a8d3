"""Reading every input format, bad records, unsafe archives and the allowed-roots check."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from jobs.readers import BadRecord, ReadOptions, Record, read_input, resolve_input
from scoring.errors import InvalidArgument, NotFound, PermissionDenied
from tests.support.inputs import (
    NEWS,
    add_to_tar,
    add_to_zip,
    bad_jsonl,
    news_files,
    write_csv,
    write_jsonl,
    write_txt_folder,
)
from training.corpus import TOTAL_DOCUMENTS


def read(path: Path, roots: list[Path] | None = None, **options) -> list:
    roots = [root.resolve() for root in roots or [path.parent if path.is_file() else path]]
    return list(read_input(resolve_input(str(path), roots), roots, ReadOptions(**options)))


def ids(items: list) -> list[str]:
    return [item.id for item in items if isinstance(item, Record)]


def test_jsonl_with_configured_fields(tmp_path):
    expected = write_jsonl(tmp_path / "news.jsonl", id_field="doc", text_field="body")
    items = read(tmp_path / "news.jsonl", id_field="doc", text_field="body")
    assert ids(items) == expected
    assert [item.text for item in items] == NEWS


def test_csv_with_configured_columns_keeps_quoted_commas_and_newlines(tmp_path):
    expected = write_csv(tmp_path / "news.csv", id_col="key", text_col="story")
    items = read(tmp_path / "news.csv", id_field="key", text_field="story")
    assert ids(items) == expected
    assert items[0].text.startswith(NEWS[0]) and ",\n with a comma" in items[0].text


def test_folder_of_txt_uses_relative_paths_as_ids(tmp_path):
    expected = write_txt_folder(tmp_path)
    assert ids(read(tmp_path)) == expected


def test_sgm_file_yields_every_story_by_newid(corpus_dir, tmp_path):
    items = read(corpus_dir / "reut2-000.sgm", roots=[corpus_dir])
    assert ids(items) == [str(n) for n in range(1, 1001)]
    assert items[0].text.startswith("BAHIA COCOA REVIEW")
    # A table story without TITLE/BODY is scored on its whole TEXT, not dropped.
    assert next(i for i in items if i.id == "99").text.startswith("FEDERAL RESERVE WEEKLY REPORT")


def test_corpus_folder_reads_sgm_only_and_reports_the_one_empty_story(corpus_dir):
    items = read(corpus_dir, roots=[corpus_dir])
    assert len(items) == TOTAL_DOCUMENTS
    bad = [item for item in items if isinstance(item, BadRecord)]
    assert [(b.id, b.reason) for b in bad] == [("12793", "empty text")]
    assert len(set(ids(items))) == TOTAL_DOCUMENTS - 1


def test_tar_gz_of_sgm_reads_like_the_file(corpus_dir, tmp_path):
    data = (corpus_dir / "reut2-001.sgm").read_bytes()
    add_to_tar(tmp_path / "wire.tar.gz", {"feed/reut2-001.sgm": data, "feed/README.txt": b"x"})
    from_archive = read(tmp_path / "wire.tar.gz")
    from_file = read(corpus_dir / "reut2-001.sgm", roots=[corpus_dir])
    assert ids(from_archive) == ids(from_file) and len(from_archive) == 1000


def test_zip_of_txt_and_tar_of_jsonl(tmp_path):
    add_to_zip(tmp_path / "stories.zip", news_files("in/"))
    assert ids(read(tmp_path / "stories.zip")) == [f"in/story{i}.txt" for i in range(len(NEWS))]
    write_jsonl(tmp_path / "a.jsonl")
    add_to_tar(tmp_path / "lines.tgz", {"a.jsonl": (tmp_path / "a.jsonl").read_bytes()})
    assert ids(read(tmp_path / "lines.tgz")) == [f"j{i}" for i in range(len(NEWS))]


def test_bad_jsonl_records_come_out_with_reasons(tmp_path):
    good, bad = bad_jsonl(tmp_path / "mixed.jsonl")
    items = read(tmp_path / "mixed.jsonl")
    assert ids(items) == good
    errors = {item.source[len("mixed.jsonl"):]: item.reason
              for item in items if isinstance(item, BadRecord)}
    assert set(errors) == set(bad)
    for where, reason in bad.items():
        assert reason in errors[where]


def test_csv_without_the_text_column_is_one_bad_record(tmp_path):
    write_csv(tmp_path / "news.csv")
    items = read(tmp_path / "news.csv", text_field="headline")
    assert len(items) == 1 and "lacks column(s) 'headline'" in items[0].reason


def test_csv_row_with_bad_encoding_is_a_bad_record(tmp_path):
    (tmp_path / "n.csv").write_bytes(b"id,text\na,good news\nb,caf\xe9 au lait\nc,more news\n")
    items = read(tmp_path / "n.csv")
    assert ids(items) == ["a", "c"]
    assert [(i.id, i.reason) for i in items if isinstance(i, BadRecord)] == [("b", "not valid UTF-8")]


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archive_with_escaping_entry_is_refused_before_any_record(tmp_path, name, kind):
    archive = tmp_path / f"bad.{kind}"
    files = {"ok.txt": b"fine news", name: b"payload"}
    (add_to_tar if kind == "tar.gz" else add_to_zip)(archive, files)
    produced = []
    with pytest.raises(PermissionDenied, match="refused: entry"):
        for item in read_input([archive], [tmp_path], ReadOptions()):
            produced.append(item)
    assert produced == []
    assert not (tmp_path.parent / "evil.txt").exists()


def test_archive_with_symlink_entry_is_refused(tmp_path):
    with tarfile.open(tmp_path / "link.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("passwd.txt")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(PermissionDenied, match="link or special file"):
        read(tmp_path / "link.tar.gz")


def test_paths_outside_allowed_roots_are_refused(tmp_path):
    root = tmp_path / "allowed"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    for spec in ["/etc/passwd", f"{root}/../outside.jsonl", f"{root}/escape/passwd",
                 f"{root}/escape/*"]:
        with pytest.raises(PermissionDenied):
            resolve_input(spec, [root])
    with pytest.raises(PermissionDenied, match="no input roots"):
        resolve_input("/etc/passwd", [])


def test_resolve_input_errors_and_globs(tmp_path):
    write_jsonl(tmp_path / "a.jsonl")
    write_jsonl(tmp_path / "b.jsonl")
    with pytest.raises(InvalidArgument, match="absolute"):
        resolve_input("relative/path.jsonl", [tmp_path])
    with pytest.raises(NotFound):
        resolve_input(str(tmp_path / "missing.jsonl"), [tmp_path])
    with pytest.raises(NotFound, match="matches nothing"):
        resolve_input(str(tmp_path / "*.csv"), [tmp_path])
    paths = resolve_input(str(tmp_path / "*.jsonl"), [tmp_path])
    assert [p.name for p in paths] == ["a.jsonl", "b.jsonl"]
    assert len(ids(list(read_input(paths, [tmp_path], ReadOptions())))) == 2 * len(NEWS)


def test_unknown_format_is_invalid(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00")
    with pytest.raises(InvalidArgument, match="cannot tell the format"):
        read(tmp_path / "x.bin")
    with pytest.raises(InvalidArgument, match="unknown format"):
        ReadOptions(format="xml")
