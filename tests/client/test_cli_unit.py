"""The CLI without a platform: parsing, settings, output, files, exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import pytest

from mutate.client import (
    ApiError,
    AuthError,
    ConfigurationFileError,
    NotFoundError,
    TransferError,
    UnavailableError,
    UsageError,
    _output,
    load_configuration,
    parse_configuration,
)
from mutate.client._commands import parse_mask
from mutate.client._progress import JobProgress
from mutate.client._settings import CliSettings
from mutate.client.cli import ExitCode, build_parser, exit_code, main
from mutate.devstack import _proc
from mutate.v1 import configuration_pb2, job_pb2, transformer_pb2

from .conftest import EXAMPLES

Job = job_pb2.Job


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), env=env or {}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------ parsing


def test_parser_global_options_before_or_after_the_command() -> None:
    parser = build_parser()

    before = parser.parse_args(["--json", "--address", "h:1", "jobs", "get", "j"])
    after = parser.parse_args(["jobs", "get", "j", "--json", "--address", "h:1"])

    assert (before.json, before.address) == (True, "h:1")
    assert (after.json, after.address) == (True, "h:1")
    assert after.id == "j"


def test_parser_submit_options() -> None:
    args = build_parser().parse_args(
        ["jobs", "submit", "f.xlsx", "--config", "cfg_1", "--mode", "sync",
         "--webhook", "https://h/x", "--reference", "r", "-o", "out.csv"]
    )  # fmt: skip

    assert (args.file, args.config, args.mode) == ("f.xlsx", "cfg_1", "sync")
    assert (args.webhook, args.reference, args.output) == (
        "https://h/x",
        "r",
        "out.csv",
    )
    assert args.wait is False and args.version == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "submit", "f.csv"],  # --config missing
        ["jobs", "submit", "f.csv", "--config", "c", "--mode", "fast"],
        ["jobs", "list", "--status", "done"],
        ["configs", "test", "c", "f.csv", "--rows", "0"],
        ["--timeout", "-1", "queue", "stats"],
        ["nothing"],
        [],
    ],
    ids=["no-config", "bad-mode", "bad-status", "zero-rows", "bad-timeout",
         "unknown-group", "empty"],
)  # fmt: skip
def test_usage_errors_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(*argv)

    assert code == ExitCode.USAGE
    assert "usage: mutate" in capsys.readouterr().err


@pytest.mark.parametrize("group", ["configs", "jobs", "queue"])
def test_a_missing_command_is_named_for_people(
    group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(group)

    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "required: COMMAND" in err and "_command" not in err


def test_help_documents_exit_codes_and_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run("--help")[0] == 0
    text = capsys.readouterr().out
    for code in ExitCode:
        assert f"{int(code):>3}  " in text
    assert "MUTATE_API_KEY" in text and "MUTATE_ADDRESS" in text


def test_missing_api_key_is_an_auth_error_without_a_call() -> None:
    code, out, err = run("jobs", "list")

    assert code == ExitCode.AUTH
    assert out == "" and "MUTATE_API_KEY" in err


def test_missing_api_key_with_json_prints_a_json_error() -> None:
    code, _, err = run("jobs", "list", "--json")

    assert code == ExitCode.AUTH
    assert json.loads(err)["error"]["exitCode"] == 5


def test_unreachable_gateway_exits_6_after_the_retries() -> None:
    (port,) = _proc.free_ports(1)
    env = {
        "MUTATE_ADDRESS": f"127.0.0.1:{port}",
        "MUTATE_API_KEY": "mk_x",
        "MUTATE_RETRIES": "2",
        "MUTATE_RETRY_BACKOFF_MS": "10",
        "MUTATE_TIMEOUT_MS": "2000",
    }

    code, _, err = run("queue", "stats", env=env)

    assert code == ExitCode.UNAVAILABLE
    assert "UNAVAILABLE" in err and f"127.0.0.1:{port}" in err


def test_bad_environment_value_is_a_usage_error() -> None:
    code, _, err = run("queue", "stats", env={"MUTATE_TIMEOUT_MS": "soon"})

    assert code == ExitCode.USAGE
    assert "MUTATE_TIMEOUT_MS" in err


def test_settings_flags_override_environment() -> None:
    env = {"MUTATE_ADDRESS": "env:1", "MUTATE_API_KEY": "mk_env"}
    assert CliSettings.from_env(env).address == "env:1"
    assert CliSettings.from_env({}).address == "127.0.0.1:50051"
    assert CliSettings.from_env({"MUTATE_TIMEOUT_MS": "1500"}).timeout == 1.5
    assert "mk_env" not in repr(CliSettings.from_env(env))


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("x"), ExitCode.USAGE),
        (ConfigurationFileError("x"), ExitCode.USAGE),
        (AuthError("x", code=grpc.StatusCode.UNAUTHENTICATED), ExitCode.AUTH),
        (AuthError("x", code=grpc.StatusCode.PERMISSION_DENIED), ExitCode.AUTH),
        (NotFoundError("x", code=grpc.StatusCode.NOT_FOUND), ExitCode.NOT_FOUND),
        (
            UnavailableError("x", code=grpc.StatusCode.UNAVAILABLE),
            ExitCode.UNAVAILABLE,
        ),
        (ApiError("x", code=grpc.StatusCode.ABORTED), ExitCode.API_ERROR),
        (TransferError("x"), ExitCode.API_ERROR),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.name,
)
def test_exit_code_of_each_error(error: Exception, code: ExitCode) -> None:
    assert exit_code(error) == code  # type: ignore[arg-type]


def test_parse_mask_accepts_json_and_proto_names() -> None:
    assert parse_mask("rules, outputFormat,read_options") == [
        "rules",
        "output_format",
        "read_options",
    ]
    assert parse_mask("") == []


# ------------------------------------------------------------ configuration files


def test_every_example_configuration_parses() -> None:
    for path in sorted(EXAMPLES.glob("*.json")):
        configuration = parse_configuration(path.read_text(), source=path.name)
        assert configuration.rules, path


def test_unknown_nested_field_is_named_with_its_path() -> None:
    text = json.dumps(
        {
            "name": "n",
            "conversionType": "CSV_TO_CSV",
            "rules": [
                {"id": "a", "deleteColumns": {"columns": ["A"]}},
                {"id": "b", "deleteRows": {"condition": "EQUALS", "vaule": "x"}},
            ],
        }
    )

    with pytest.raises(ConfigurationFileError) as caught:
        parse_configuration(text, source="c.json")

    assert "'rules[1].deleteRows.vaule'" in caught.value.message
    assert "did you mean 'value'" in caught.value.message
    assert caught.value.message.startswith("c.json: ")


def test_unknown_top_level_field_is_refused() -> None:
    with pytest.raises(ConfigurationFileError, match="'outputFromat'"):
        parse_configuration('{"outputFromat": {}}')


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"name": ', "line 1"),
        ("[1]", "not an array"),
        ('{"conversionType": "XLSX_TO_PDF"}', "XLSX_TO_PDF"),
        ('{"rules": {"id": 1}}', "rules"),
    ],
    ids=["truncated", "array", "bad-enum", "wrong-type"],
)
def test_malformed_configuration_is_refused(text: str, needle: str) -> None:
    with pytest.raises(ConfigurationFileError, match=needle):
        parse_configuration(text)


def test_output_only_fields_of_a_fetched_configuration_are_dropped() -> None:
    configuration = parse_configuration(
        json.dumps(
            {
                "id": "cfg_1",
                "version": "3",
                "createTime": "2024-01-01T00:00:00Z",
                "name": "kept",
            }
        )
    )

    assert configuration.name == "kept"
    assert configuration.id == "" and configuration.version == 0
    assert not configuration.HasField("create_time")


def test_configuration_file_errors_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"nmae": "x"}')
    env = {"MUTATE_API_KEY": "mk_x"}

    code, _, err = run("configs", "create", str(path), env=env)
    assert code == ExitCode.USAGE and "'nmae'" in err

    code, _, err = run("configs", "create", str(tmp_path / "none.json"), env=env)
    assert code == ExitCode.USAGE and "none.json" in err


# ------------------------------------------------------------ output


def test_table_aligns_columns_and_marks_empty_cells() -> None:
    text = _output.table(("ID", "NAME", "N"), [("a", "long name", 1), ("bbb", "", 22)])

    lines = text.splitlines()
    assert lines[0] == "ID   NAME       N"
    assert lines[1] == "a    long name  1"
    assert lines[2] == "bbb  -          22"


def test_fields_and_sizes() -> None:
    assert _output.fields([("id", "x"), ("status", "ok")]) == (
        "id:      x\nstatus:  ok"
    )
    assert _output.size(999) == "999 B"
    assert _output.size(65331) == "63.8 KiB"
    assert _output.size(5 * 1024 * 1024) == "5.0 MiB"


def test_job_detail_shows_error_and_execution_log() -> None:
    job = Job(
        id="job_1",
        status=Job.FAILED,
        configuration_id="cfg_1",
        configuration_version=2,
        input_file_name="in.xlsx",
        input_bytes=2048,
        error=job_pb2.JobError(
            code="WORKSHEET_NOT_FOUND", message="no sheet 'X'", rule_id="pick"
        ),
        execution_log=[
            configuration_pb2.ExecutionLogEntry(
                rule_id="pick",
                rule_type=configuration_pb2.SELECT_WORKSHEET,
                outcome=configuration_pb2.ExecutionLogEntry.ERROR,
                message="no sheet 'X'",
            )
        ],
    )
    job.create_time.FromSeconds(1_700_000_000)

    text = _output.job_detail(job)

    assert "status:         failed" in text
    assert "WORKSHEET_NOT_FOUND: no sheet 'X' (rule pick)" in text
    assert "cfg_1 (version 2)" in text
    assert "2023-11-14 22:13:20Z" in text
    assert "SELECT_WORKSHEET  error" in text


@pytest.mark.parametrize(
    ("rows", "columns", "shown"),
    [(1, 11, "1 row × 11 columns"), (3, 1, "3 rows × 1 column"),
     (300000, 6, "300,000 rows × 6 columns")],
)  # fmt: skip
def test_job_detail_counts_output_rows_and_columns(
    rows: int, columns: int, shown: str
) -> None:
    job = Job(
        id="job_1",
        status=Job.COMPLETED,
        output_file_name="out.csv",
        output_rows=rows,
        output_columns=columns,
    )

    assert f"out.csv (0 B, {shown})" in _output.job_detail(job)


def test_job_rows_and_json_use_camel_case() -> None:
    jobs = [
        Job(id="job_1", status=Job.RUNNING, progress_percent=40),
        Job(id="job_2", status=Job.COMPLETED, output_rows=12),
    ]

    table = _output.job_rows(jobs)

    assert "running 40%" in table and "completed" in table
    assert json.loads(_output.to_json(jobs[0]))["progressPercent"] == 40


def test_preview_prints_before_and_after_tables() -> None:
    preview = transformer_pb2.PreviewResponse(
        before=transformer_pb2.TablePreview(
            worksheet="S",
            header=["a", "b"],
            rows=[transformer_pb2.PreviewRow(row_number=2, cells=["1", "2"])],
            total_rows=10,
            total_columns=2,
        ),
        after=transformer_pb2.TablePreview(
            header=["a"],
            rows=[transformer_pb2.PreviewRow(row_number=2, cells=["1"])],
            total_rows=1,
            total_columns=1,
        ),
    )

    text = _output.preview(preview)

    assert "before (sheet 'S'): 10 rows × 2 columns, first 1 shown" in text
    assert "after: 1 row × 1 column" in text
    assert "ROW  a  b" in text


# ------------------------------------------------------------ progress


def test_progress_without_a_terminal_prints_one_line_per_change() -> None:
    stream = io.StringIO()
    progress = JobProgress(stream, tty=False)

    for status, percent in [(1, 0), (2, 10), (2, 10), (2, 50), (3, 100)]:
        progress.update(Job(id="job_1", status=status, progress_percent=percent))  # type: ignore[arg-type]
    progress.finish()

    assert stream.getvalue().splitlines() == [
        "job_1: pending",
        "job_1: running 10%",
        "job_1: running 50%",
        "job_1: completed",
    ]


def test_progress_on_a_terminal_redraws_one_bar() -> None:
    stream = io.StringIO()
    progress = JobProgress(stream, tty=True, width=10)

    progress.update(Job(id="job_1", status=Job.RUNNING, progress_percent=50))
    progress.update(Job(id="job_1", status=Job.COMPLETED, progress_percent=100))
    progress.finish()

    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "[#####.....]  50% running" in text
    assert "[##########] 100% completed" in text


# ------------------------------------------------------------ -o destinations
# Checked before any call (no API key needed to see the mistake), exit 2.


def test_download_into_a_folder_is_a_usage_error(tmp_path: Path) -> None:
    code, out, err = run("jobs", "download", "job_1", "-o", str(tmp_path))
    assert code == ExitCode.USAGE
    assert out == "" and f"mutate: error: {tmp_path} is a folder" in err


def test_download_into_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "x.csv"
    code, _, err = run("jobs", "download", "job_1", "-o", str(missing))
    assert code == ExitCode.USAGE
    assert f"folder {tmp_path / 'nowhere'} does not exist" in err
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("command", [["submit", "f.csv", "--config", "c"], ["wait"]])
def test_submit_and_wait_check_the_output_before_starting(
    tmp_path: Path, command: list[str]
) -> None:
    argv = ["jobs", *command, *(["job_1"] if command == ["wait"] else [])]
    code, _, err = run(*argv, "-o", str(tmp_path / "nowhere" / "x.csv"), "--json")
    assert code == ExitCode.USAGE
    error = json.loads(err)["error"]
    assert error["exitCode"] == ExitCode.USAGE
    # The output's, not f.csv's: it is looked at before the input is read.
    assert "nowhere does not exist" in error["message"]


def test_load_configuration_takes_a_path_as_text_too() -> None:
    # As docs/cli.md's Python example passes it.
    path = EXAMPLES / "kansas-csv-cleanup.json"
    assert load_configuration(str(path)) == load_configuration(path)
