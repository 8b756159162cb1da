"""`mutate-transformer convert`: run a configuration on a file, offline.

    mutate-transformer convert INPUT --config CONFIG.json [--output OUT]
                               [--log LOG.json] [--sheets] [--preview N]

CONFIG.json is the proto3 JSON of `mutate.v1.Configuration` (as in
examples/configurations/), unknown fields refused. The result goes to OUT, or
to stdout; it is written only when the conversion succeeds. Exit status:

    0  success
    1  the file cannot be converted, or the configuration parses but fails
       validation (INVALID_CONFIGURATION, as the API would refuse it), or a
       MUTATE_LIMIT_* variable is not a positive number
    2  a bad command line: arguments, an input, output or log file that cannot
       be read or written, a configuration file that is not valid proto3 JSON
       of a Configuration (syntax, unknown field, enum name)

The reason is one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from google.protobuf import json_format

from mutate.transformer.engine import EngineError, Limits, convert, preview
from mutate.v1 import configuration_pb2

__all__ = ["convert_command"]

_PROG = "mutate-transformer convert"
EXIT_FAILED = 1
EXIT_USAGE = 2


class _Usage(Exception):
    """A command-line mistake, or a configuration file that does not parse
    (exit status 2); a configuration that parses but is refused by validation
    is an EngineError (exit status 1)."""


def convert_command(argv: list[str]) -> int:
    """Entry point of the `convert` subcommand; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return int(exc.code or 0)
    try:
        return _run(args)
    except _Usage as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except EngineError as exc:
        _fail(f"{exc.code}: {exc.message}")
        if args.log:
            _write_log(args.log, exc.execution_log, [], error=exc)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Apply a Mutate configuration to a file, without any server.",
    )
    parser.add_argument("input", type=Path, help="the XLSX/XLSM, CSV or JSON file")
    parser.add_argument(
        "--config",
        type=Path,
        help="configuration as proto3 JSON; without it the defaults apply",
    )
    parser.add_argument(
        "--output", "-o", type=Path, help="result file (default stdout)"
    )
    parser.add_argument("--log", type=Path, help="write the execution log as JSON")
    parser.add_argument(
        "--sheets",
        action="store_true",
        help="list the workbook's sheets (tab order, kind, visibility) and exit",
    )
    parser.add_argument(
        "--preview",
        type=int,
        metavar="N",
        help="print the first N rows before and after the rules, as JSON",
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    configuration = _load_configuration(args.config)
    data = _read_input(args.input)
    limits = Limits.from_env(os.environ)
    if args.sheets:
        return _list_sheets(data, args.input.name, limits)
    if args.preview is not None:
        response = preview(
            data, args.input.name, configuration, max_rows=args.preview, limits=limits
        )
        print(json_format.MessageToJson(response, ensure_ascii=False))
        if response.HasField("error"):
            _fail(f"{response.error.code}: {response.error.message}")
            return EXIT_FAILED
        return 0
    with tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024) as spooled:
        spool = cast(BinaryIO, spooled)
        result = convert(data, args.input.name, configuration, spool, limits=limits)
        spool.seek(0)
        _deliver(spool, args.output)
    for warning in result.warnings:
        print(f"{_PROG}: warning: {warning}", file=sys.stderr)
    if args.log:
        _write_log(args.log, result.execution_log, result.warnings, result=result)
    return 0


def _load_configuration(path: Path | None) -> configuration_pb2.Configuration:
    configuration = configuration_pb2.Configuration()
    if path is None:
        return configuration
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Usage(f"cannot read configuration {path}: {exc}") from exc
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _Usage(f"invalid configuration {path}: {exc}") from exc
    if not isinstance(document, dict):
        # json_format would read a string as a message and blame a field "s".
        raise _Usage(
            f"invalid configuration {path}: expected a JSON object like "
            "examples/configurations/*.json"
        )
    try:
        json_format.ParseDict(document, configuration, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        message = str(exc).replace("\n", " ")
        raise _Usage(f"invalid configuration {path}: {message}") from exc
    return configuration


def _read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Usage(f"cannot read {path}: {exc.strerror or exc}") from exc


def _deliver(spool: BinaryIO, output: Path | None) -> None:
    if output is None:
        try:
            shutil.copyfileobj(spool, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # The reader went away (`| head`); stop quietly like other tools.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise _Usage("output pipe closed by the reader") from None
        return
    # Write beside the target, then rename: a failure never leaves half a file.
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("wb") as handle:
            shutil.copyfileobj(spool, handle)
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise _Usage(f"cannot write {output}: {exc.strerror or exc}") from exc


def _list_sheets(data: bytes, file_name: str, limits: Limits) -> int:
    from mutate.transformer.engine._xlsx import XlsxWorkbook

    workbook = XlsxWorkbook(data, file_name, limits)
    try:
        worksheet_index = 0
        for sheet in workbook.index.sheets:
            index = ""
            if sheet.kind == "worksheet":
                index = str(worksheet_index)
                worksheet_index += 1
            print(f"{index}\t{sheet.name}\t{sheet.kind}\t{sheet.state}")
    finally:
        workbook.close()
    return 0


def _write_log(
    path: Path,
    entries: Sequence[configuration_pb2.ExecutionLogEntry],
    warnings: Sequence[str],
    *,
    result: Any = None,
    error: EngineError | None = None,
) -> None:
    document: dict[str, Any] = {
        "executionLog": [json_format.MessageToDict(entry) for entry in entries],
        "warnings": list(warnings),
    }
    if result is not None:
        document.update(rows=result.rows, columns=result.columns)
    if error is not None:
        document["error"] = json_format.MessageToDict(error.to_proto())
    try:
        path.write_text(
            json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    except OSError as exc:
        raise _Usage(f"cannot write log {path}: {exc.strerror or exc}") from exc


def _fail(message: str) -> None:
    line = " ".join(message.split())
    print(f"{_PROG}: {line}", file=sys.stderr)
