"""Hostile inputs: files that are not regular, unusable paths, caps on sizes, counts, depth and
record length, and globs that must not walk out of their root or loop."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from jobs.model import JobRequest
from jobs.readers import BadRecord, ReadOptions, Record, check_input, read_input, resolve_input
from scoring.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from tests.support.inputs import NEWS, add_to_tar, add_to_zip, write_jsonl


def read(path: Path, roots: list[Path], **options) -> list:
    opts = ReadOptions(**options)
    return list(read_input(resolve_input(str(path), roots, opts), roots, opts))


def within(seconds: float, call):
    """``call()``'s result, failing the test if it takes longer than ``seconds``."""
    started = time.monotonic()
    result = call()
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"took {elapsed:.2f}s"
    return result


def test_fifo_is_refused_by_stat_without_blocking(tmp_path):
    fifo = tmp_path / "feed.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(InvalidArgument, match="a FIFO"):
        within(2, lambda: check_input(str(fifo), [tmp_path]))
    # The worker's reader refuses it too (a glob match is not checked at submit).
    with pytest.raises(InvalidArgument, match="a FIFO"):
        within(2, lambda: read(tmp_path / "*.jsonl", [tmp_path]))
    # Inside a folder it is passed over, not opened.
    write_jsonl(tmp_path / "good.jsonl")
    items = within(2, lambda: read(tmp_path, [tmp_path]))
    assert [i.id for i in items] == [f"j{i}" for i in range(len(NEWS))]


def test_character_device_is_refused(tmp_path):
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    roots = [tmp_path.resolve(), Path("/dev")]
    with pytest.raises(InvalidArgument, match="a character device"):
        check_input(str(tmp_path / "zero.jsonl"), roots)
    with pytest.raises(InvalidArgument, match="a character device"):
        within(2, lambda: read(tmp_path / "z*.jsonl", roots))


@pytest.mark.parametrize("spec", ["/data/a\x00b.jsonl", "/data/tab\there.jsonl"])
def test_nul_bytes_and_control_characters_are_invalid(tmp_path, spec):
    with pytest.raises(InvalidArgument, match="NUL byte or control"):
        check_input(spec, [tmp_path])
    with pytest.raises(ValueError, match="NUL byte|control characters"):
        JobRequest(input=spec)


def test_symlink_loop_glob_returns_fast_and_matches_nothing(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "loop").symlink_to(tmp_path)
    (tmp_path / "self").symlink_to(tmp_path / "self")
    within(2, lambda: check_input(f"{tmp_path}/**/no-such-file", [tmp_path]))
    with pytest.raises(NotFound, match="matches nothing"):
        within(2, lambda: resolve_input(f"{tmp_path}/**/no-such-file", [tmp_path]))


def test_glob_does_not_follow_a_symlinked_folder_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    write_jsonl(outside / "secret.jsonl")
    write_jsonl(root / "mine.jsonl")
    (root / "out").symlink_to(outside)
    assert [p.name for p in resolve_input(f"{root}/**/*.jsonl", [root])] == ["mine.jsonl"]
    (root / "link.jsonl").symlink_to(outside / "secret.jsonl")
    with pytest.raises(PermissionDenied, match="outside the allowed roots"):
        resolve_input(f"{root}/*.jsonl", [root])


def test_glob_and_folder_walks_are_bounded(tmp_path):
    for i in range(30):
        write_jsonl(tmp_path / f"f{i:02d}.jsonl", count=1)
    with pytest.raises(ResourceExhausted, match="NEWSCLF_MAX_INPUT_FILES"):
        read(tmp_path / "*.jsonl", [tmp_path], max_input_files=10)
    with pytest.raises(ResourceExhausted, match="NEWSCLF_MAX_INPUT_FILES"):
        read(tmp_path, [tmp_path], max_input_files=10)
    deep = tmp_path / "deep"
    folder = deep
    for i in range(6):
        folder = folder / f"d{i}"
    folder.mkdir(parents=True)
    write_jsonl(folder / "x.jsonl", count=1)
    with pytest.raises(ResourceExhausted, match="NEWSCLF_MAX_DEPTH"):
        read(deep, [tmp_path], max_depth=3)
    assert len(read(deep, [tmp_path], max_depth=8)) == 1


def test_archive_caps_are_checked_from_headers_before_decompressing(tmp_path):
    big = b'{"id": "a", "text": "' + b"x" * 5000 + b'"}\n'
    add_to_tar(tmp_path / "big.tar.gz", {"big.jsonl": big})
    with pytest.raises(ResourceExhausted, match="NEWSCLF_MAX_ENTRY_BYTES"):
        read(tmp_path / "big.tar.gz", [tmp_path], max_entry_bytes=4096)
    add_to_zip(tmp_path / "big.zip", {"big.jsonl": big})
    with pytest.raises(ResourceExhausted, match="NEWSCLF_MAX_ENTRY_BYTES"):
        read(tmp_path / "big.zip", [tmp_path], max_entry_bytes=4096)
    add_to_tar(tmp_path / "many.tar.gz", {f"s{i}.txt": b"news" for i in range(20)})
    with pytest.raises(ResourceExhausted, match="NEWSCLF_MAX_ARCHIVE_ENTRIES"):
        read(tmp_path / "many.tar.gz", [tmp_path], max_archive_entries=10)
    with pytest.raises(ResourceExhausted, match="NEWSCLF_MAX_INPUT_BYTES"):
        read(tmp_path / "big.tar.gz", [tmp_path], max_input_bytes=4096)


def test_a_lying_tar_header_cannot_pass_the_entry_cap(tmp_path):
    """A bomb's header says its size: a 1 GiB entry is refused without decompressing it."""
    archive = tmp_path / "bomb.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("bomb.jsonl")
        info.size = 1 << 30
        tar.addfile(info, _Zeros(1 << 30))
    with pytest.raises(ResourceExhausted, match="1073741824 bytes"):
        within(2, lambda: read(archive, [tmp_path], max_entry_bytes=1 << 20))


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, produced on demand."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_long_lines_and_stories_are_bad_records_read_in_bounded_pieces(tmp_path):
    (tmp_path / "long.jsonl").write_bytes(
        b'{"id": "a", "text": "' + b"y" * 100_000 + b'"}\n{"id": "b", "text": "wheat exports rose"}\n')
    items = read(tmp_path / "long.jsonl", [tmp_path], max_record_bytes=4096)
    assert isinstance(items[0], BadRecord) and "line longer than 4096 bytes" in items[0].reason
    assert items[1] == Record("b", "wheat exports rose")
    (tmp_path / "long.csv").write_bytes(b"id,text\na,ok news\nb," + b"z" * 100_000 + b"\nc,more\n")
    items = read(tmp_path / "long.csv", [tmp_path], max_record_bytes=4096)
    assert items[0] == Record("a", "ok news")
    assert isinstance(items[1], BadRecord) and "rest of the file skipped" in items[1].reason
    story = b'<REUTERS NEWID="1"><TEXT><BODY>' + b"w " * 50_000 + b"</BODY></TEXT>"
    (tmp_path / "long.sgm").write_bytes(story)
    items = read(tmp_path / "long.sgm", [tmp_path], max_record_bytes=4096)
    assert len(items) == 1 and "a story longer than 4096 bytes" in items[0].reason


def test_deeply_nested_json_is_a_bad_record(tmp_path):
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n" + '{"id": 1, "text": "oil"}\n')
    items = read(tmp_path / "deep.jsonl", [tmp_path], max_record_bytes=1 << 20)
    assert isinstance(items[0], BadRecord) and items[1] == Record("1", "oil")


def test_check_input_does_not_list_anything(tmp_path):
    """Submit-side checks are a few stat calls: a glob over a whole tree returns at once, and a
    glob whose fixed folder is outside the roots is refused before any listing."""
    within(0.5, lambda: check_input("/usr/**/no-such-file", [Path("/usr")]))
    with pytest.raises(PermissionDenied):
        within(0.5, lambda: check_input("/usr/lib/**/no-such-file", [tmp_path]))
