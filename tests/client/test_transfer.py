"""Downloads over a presigned URL, against a tiny HTTP server on 127.0.0.1:
the finished file gets a normal mode, the partial one stays private."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mutate.client import TransferError, UsageError, _transfer

BODY = b"a,b\n1,2\n" * 1000


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        if self.path != "/result.csv":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _get(
    url: str, destination: Path, on_progress: _transfer.ByteProgress | None = None
) -> int:
    return _transfer.get_file(url, destination, timeout=10, on_progress=on_progress)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_download_gets_the_mode_the_umask_gives(
    base_url: str, tmp_path: Path, umask: None, mask: int, mode: int
) -> None:
    os.umask(mask)
    partial_modes: list[int] = []

    def look_at_the_partial_file(done: int, expected: int) -> None:
        partial_modes.extend(_mode(p) for p in tmp_path.glob(".clean.csv.*.part"))

    target = tmp_path / "clean.csv"
    assert _get(f"{base_url}/result.csv", target, on_progress=look_at_the_partial_file)
    assert target.read_bytes() == BODY
    assert oct(_mode(target)) == oct(mode)
    # While it is incomplete the file is readable by its owner only.
    assert partial_modes and set(partial_modes) == {0o600}
    assert [p.name for p in tmp_path.iterdir()] == ["clean.csv"]


def test_umask_is_read_without_proc_too(
    monkeypatch: pytest.MonkeyPatch, umask: None
) -> None:
    os.umask(0o027)

    def no_proc(*args: object, **kwargs: object) -> object:
        raise OSError("no /proc here")

    assert _transfer._process_umask() == 0o027
    monkeypatch.setattr(_transfer, "open", no_proc, raising=False)
    assert _transfer._process_umask() == 0o027
    assert os.umask(0o022) == 0o027  # the fallback put the umask back


def test_a_replaced_file_keeps_its_mode(
    base_url: str, tmp_path: Path, umask: None
) -> None:
    target = tmp_path / "clean.csv"
    target.write_bytes(b"old")
    target.chmod(0o600)
    _get(f"{base_url}/result.csv", target)
    assert target.read_bytes() == BODY
    assert oct(_mode(target)) == oct(0o600)


def test_a_failed_download_leaves_nothing(base_url: str, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="HTTP 404"):
        _get(f"{base_url}/missing.csv", tmp_path / "clean.csv")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ destinations
# `-o DEST` behaves like curl's or a shell redirection, except that a regular
# file is only replaced once the download is complete.


def _read_all_in_background(path: str | int, into: list[bytes]) -> threading.Thread:
    """A reader for a FIFO or pipe: opening a FIFO for writing blocks until
    someone opens it for reading."""

    def read() -> None:
        with open(path, "rb") as pipe:
            into.append(pipe.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_a_fifo_is_written_into_not_replaced(base_url: str, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = _read_all_in_background(str(fifo), received)
    assert _get(f"{base_url}/result.csv", fifo) == len(BODY)
    reader.join(timeout=10)
    assert received == [BODY]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_dev_fd_pipe_is_written_into(base_url: str) -> None:
    # What `-o >(wc -c)` passes: /dev/fd/N of a pipe.
    read_end, write_end = os.pipe()
    received: list[bytes] = []
    reader = _read_all_in_background(read_end, received)
    try:
        assert _get(f"{base_url}/result.csv", Path(f"/dev/fd/{write_end}"))
    finally:
        os.close(write_end)  # the reader sees the end once every writer is gone
    reader.join(timeout=10)
    assert received == [BODY]


def test_a_dev_fd_file_is_written_into_the_same_file(
    base_url: str, tmp_path: Path
) -> None:
    # `-o /dev/stdout > out.csv`: the descriptor's file gets the bytes; a
    # rename would leave the descriptor on an orphaned, empty file.
    out = tmp_path / "out.csv"
    with out.open("wb") as held:
        _get(f"{base_url}/result.csv", Path(f"/dev/fd/{held.fileno()}"))
        assert os.fstat(held.fileno()).st_ino == out.stat().st_ino
    assert out.read_bytes() == BODY
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_a_character_device_is_written_into(base_url: str, tmp_path: Path) -> None:
    # A device node of our own (the null device's numbers), never /dev/null.
    device = tmp_path / "mynull"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert _get(f"{base_url}/result.csv", device) == len(BODY)
    assert stat.S_ISCHR(device.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["mynull"]


def test_a_symlink_is_followed_to_its_target(
    base_url: str, tmp_path: Path, umask: None
) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "clean.csv"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to("real/clean.csv")
    _get(f"{base_url}/result.csv", link)
    assert link.is_symlink() and os.readlink(link) == "real/clean.csv"
    assert target.read_bytes() == BODY
    assert oct(_mode(target)) == oct(0o640)
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["clean.csv"]


def test_a_dangling_symlink_makes_the_file_it_names(
    base_url: str, tmp_path: Path, umask: None
) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    # Through a symlinked folder and `..`: real/sub/.., as the kernel reads
    # it, not the tmp_path that trimming "alias/.." as text would give.
    (tmp_path / "alias").symlink_to("real/sub")
    link = tmp_path / "link.csv"
    link.symlink_to("alias/../new.csv")
    _get(f"{base_url}/result.csv", link)
    assert link.is_symlink()
    assert (tmp_path / "real" / "new.csv").read_bytes() == BODY
    assert oct(_mode(tmp_path / "real" / "new.csv")) == oct(0o644)


def test_a_folder_is_a_usage_error(base_url: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a folder"):
        _get(f"{base_url}/result.csv", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_a_usage_error_not_created(
    base_url: str, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="folder .*nowhere does not exist"):
        _get(f"{base_url}/result.csv", tmp_path / "nowhere" / "clean.csv")
    assert list(tmp_path.iterdir()) == []


def test_a_file_below_a_file_is_a_usage_error(base_url: str, tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"x")
    with pytest.raises(UsageError, match="cannot write"):
        _get(f"{base_url}/result.csv", tmp_path / "plain" / "clean.csv")


def test_a_replaced_setuid_file_keeps_only_permission_bits(
    base_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "tool"
    target.write_bytes(b"old")
    target.chmod(0o4755 | stat.S_ISGID)
    _get(f"{base_url}/result.csv", target)
    assert oct(stat.S_IMODE(target.stat().st_mode)) == oct(0o755)


def test_a_failed_download_through_a_symlink_leaves_the_target(
    base_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "clean.csv"
    target.write_bytes(b"old")
    (tmp_path / "link.csv").symlink_to("clean.csv")
    with pytest.raises(TransferError, match="HTTP 404"):
        _get(f"{base_url}/missing.csv", tmp_path / "link.csv")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.csv", "link.csv"]
