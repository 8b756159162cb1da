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

from mutate.client import TransferError, _transfer

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
