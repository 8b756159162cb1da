"""`mutate-transformer convert`: in-process for behaviour, and as a subprocess
under an address-space limit and a timeout for memory and time bounds."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from mutate.transformer.cli import convert_command

from .engine.conftest import REPO_ROOT, corpus_dir, sheet_bytes

CORPUS = corpus_dir()


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


@pytest.fixture
def book(tmp_path: Path) -> Path:
    return _write(
        tmp_path,
        "book.xlsx",
        sheet_bytes([["a", "b"], [1, None], [None, None], [3, "x"]]),
    )


def test_convert_to_file_with_log(tmp_path: Path, book: Path) -> None:
    config = _write(
        tmp_path,
        "c.json",
        json.dumps(
            {
                "name": "drop empty rows",
                "rules": [{"id": "empty", "deleteRows": {"condition": "EMPTY"}}],
            }
        ),
    )
    out, log = tmp_path / "out.csv", tmp_path / "log.json"
    status = convert_command(
        [str(book), "--config", str(config), "--output", str(out), "--log", str(log)]
    )
    assert status == 0
    assert out.read_bytes() == b"a,b\n1,\n3,x\n"
    document = json.loads(log.read_text())
    assert document["rows"] == 2 and document["columns"] == 2
    assert document["executionLog"][0]["ruleId"] == "empty"
    assert document["executionLog"][0]["message"] == "deleted 1 rows"


def test_convert_to_stdout(
    book: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert convert_command([str(book)]) == 0
    assert capfdbinary.readouterr().out == b"a,b\n1,\n,\n3,x\n"


def test_unknown_configuration_field_refused(
    tmp_path: Path, book: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, "c.json", '{"rules": [{"id": "x", "deleteRowz": {}}]}')
    assert convert_command([str(book), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("mutate-transformer convert: invalid configuration ")
    assert "deleteRowz" in err


@pytest.mark.parametrize("text", ['"rules"', "[1, 2]", "42", "null"])
def test_configuration_that_is_not_an_object_refused(
    tmp_path: Path, book: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    config = _write(tmp_path, "c.json", text)
    assert convert_command([str(book), "--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"mutate-transformer convert: invalid configuration {config}: "
        "expected a JSON object like examples/configurations/*.json\n"
    )


def test_invalid_rule_refused_with_path(
    tmp_path: Path, book: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, "c.json", '{"rules": [{"id": "d", "deleteRows": {}}]}')
    assert convert_command([str(book), "--config", str(config)]) == 1
    assert capsys.readouterr().err == (
        "mutate-transformer convert: INVALID_CONFIGURATION: "
        "rules[0].deleteRows.condition: give a condition (CONTAINS, EQUALS, "
        "STARTS_WITH, REGEX, EMPTY) or rows\n"
    )


@pytest.mark.parametrize(
    ("text", "status", "words"),
    [
        # Not a Configuration in proto3 JSON: a usage error, like a bad flag.
        ('{"rules": [', 2, "invalid configuration "),
        ('{"conversionType": "XLSX_TO_CVS"}', 2, "XLSX_TO_CVS"),
        # Parses, refused by validation as the API would refuse it: 1.
        ('{"conversionType": 99}', 1, "INVALID_CONFIGURATION: conversionType: 99"),
        (
            json.dumps(
                {
                    "rules": [
                        {"id": f"r{i}", "deleteRows": {"condition": "EMPTY"}}
                        for i in range(1001)
                    ]
                }
            ),
            1,
            "INVALID_CONFIGURATION: rules: a configuration may hold at most 1000",
        ),
    ],
)
def test_exit_status_of_bad_configurations(
    tmp_path: Path,
    book: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    status: int,
    words: str,
) -> None:
    config = _write(tmp_path, "c.json", text)
    assert convert_command([str(book), "--config", str(config)]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert words in err


def test_bad_limit_variable_exits_1(
    book: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUTATE_LIMIT_MAX_CELLS", "lots")
    assert convert_command([str(book)]) == 1
    assert capsys.readouterr().err == (
        "mutate-transformer convert: INVALID_CONFIGURATION: "
        "MUTATE_LIMIT_MAX_CELLS='lots' is not a number\n"
    )


def test_failure_leaves_no_output_and_writes_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path, "broken.xlsx", b"PK\x03\x04 truncated")
    out, log = tmp_path / "out.csv", tmp_path / "log.json"
    assert convert_command([str(source), "-o", str(out), "--log", str(log)]) == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("mutate-transformer convert: INVALID_FILE: broken.xlsx is ")
    assert err.count("\n") == 1
    assert json.loads(log.read_text())["error"]["code"] == "INVALID_FILE"


def test_missing_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert convert_command(["/nonexistent/file.xlsx"]) == 2
    assert capsys.readouterr().err == (
        "mutate-transformer convert: cannot read /nonexistent/file.xlsx: "
        "No such file or directory\n"
    )


def test_sheet_list(capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / "files" / "sheetjs_BlankSheetTypes.xlsm"
    assert convert_command([str(path), "--sheets"]) == 0
    assert capsys.readouterr().out == (
        "0\tSheet1\tworksheet\tvisible\n"
        "\tChart1\tchartsheet\tvisible\n"
        "\tMacro1\tmacrosheet\tvisible\n"
        "\tDialog1\tdialogsheet\tvisible\n"
    )


def test_preview(book: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert convert_command([str(book), "--preview", "1"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["after"]["rows"] == [{"rowNumber": "2", "cells": ["1", ""]}]


# -- subprocess: memory and time bounds


def _bench_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "engine_bench", REPO_ROOT / "benchmarks" / "engine_bench.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ADDRESS_SPACE = 1536 * 1024 * 1024


def _run_limited(
    args: list[str], timeout: float
) -> tuple[subprocess.CompletedProcess[bytes], float, float]:
    """Run the CLI under RLIMIT_AS; return the result, seconds and peak RSS MB.

    The peak comes from wait4() on this one child: RUSAGE_CHILDREN would be
    the peak of every child the test session ever reaped (services included).
    """

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "mutate.transformer", "convert", *args],
            stdout=out,
            stderr=err,
            preexec_fn=limit,
        )
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout:
                process.kill()
                os.wait4(process.pid, 0)
                pytest.fail(f"convert ran longer than {timeout} s")
            time.sleep(0.02)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        completed = subprocess.CompletedProcess(
            process.args, process.returncode, out.read(), err.read()
        )
    return completed, seconds, usage.ru_maxrss / 1024


@pytest.mark.slow
def test_large_workbook_within_memory_and_time(tmp_path: Path) -> None:
    bench = _bench_module()
    source = tmp_path / "big.xlsx"
    bench.generate(source, 10_000)
    out = tmp_path / "big.csv"
    result, seconds, rss_mb = _run_limited([str(source), "-o", str(out)], timeout=60)
    assert result.returncode == 0, result.stderr
    lines = out.read_bytes().count(b"\n")
    assert lines == 10_001
    assert seconds < 60
    assert 20 < rss_mb < 300  # a real measurement, and under the bound


def test_zip_bomb_fails_fast_under_memory_limit(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        # 256 MB of zeros compress about 1000:1.
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as part:
            block = b"\x00" * (1 << 24)
            for _ in range(16):
                part.write(block)
    source = _write(tmp_path, "bomb.xlsx", buffer.getvalue())
    result, seconds, _ = _run_limited([str(source)], timeout=30)
    assert result.returncode == 1
    assert b"LIMIT_EXCEEDED" in result.stderr
    assert result.stderr.count(b"\n") == 1
    assert seconds < 30


def test_main_dispatches_convert(book: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mutate.transformer", "convert", str(book)],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "MUTATE_LIMIT_MAX_CELLS": "3"},
    )
    assert result.returncode == 1
    assert result.stderr == (
        b"mutate-transformer convert: LIMIT_EXCEEDED: sheet 'Data' holds more than "
        b"3 cells (limit max_cells)\n"
    )
