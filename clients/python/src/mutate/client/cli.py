"""`mutate`: the command line of the Mutate API (docs/cli.md).

    mutate [--address A] [--api-key K] [--json] [--timeout S] GROUP COMMAND …

Human tables on stdout by default, proto3 JSON with `--json`; progress and
errors on stderr; exit codes scripts can trust (`ExitCode`).
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from mutate.client import _commands
from mutate.client._client import WaitTimeout
from mutate.client._errors import (
    ApiError,
    AuthError,
    ClientError,
    NotFoundError,
    TransferError,
    UnavailableError,
    UsageError,
)
from mutate.client._settings import ENVIRONMENT, CliSettings


class ExitCode(enum.IntEnum):
    OK = 0
    # The job ended failed, cancelled or dead-lettered (or a configuration
    # test failed on its sample).
    JOB_FAILED = 1
    USAGE = 2
    API_ERROR = 3
    NOT_FOUND = 4
    AUTH = 5
    UNAVAILABLE = 6
    WAIT_TIMEOUT = 7
    INTERRUPTED = 130
    # Standard output was closed early (`mutate … | head`), as a shell
    # reports a process ended by SIGPIPE.
    OUTPUT_CLOSED = 141


EXIT_CODE_HELP = {
    ExitCode.OK: "success",
    ExitCode.JOB_FAILED: "the job failed, was cancelled or dead-lettered "
    "(configs test: the rules failed on the sample)",
    ExitCode.USAGE: "usage error: bad arguments, unreadable or invalid local file",
    ExitCode.API_ERROR: "the API refused the request (INVALID_ARGUMENT, "
    "FAILED_PRECONDITION, ABORTED, …) or a transfer failed",
    ExitCode.NOT_FOUND: "no such configuration, job or delivery (NOT_FOUND)",
    ExitCode.AUTH: "missing, wrong or revoked API key "
    "(UNAUTHENTICATED, PERMISSION_DENIED)",
    ExitCode.UNAVAILABLE: "gateway unreachable, too slow or rate limiting, "
    "after the retries (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED)",
    ExitCode.WAIT_TIMEOUT: "--wait-timeout passed; the job is still running",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
    ExitCode.OUTPUT_CLOSED: "standard output was closed early (e.g. | head)",
}


def _epilog() -> str:
    codes = "\n".join(f"  {int(c):>3}  {text}" for c, text in EXIT_CODE_HELP.items())
    env = "\n".join(f"  {name:<24} {text}" for name, text in ENVIRONMENT)
    return f"environment:\n{env}\n\nexit codes:\n{codes}"


# ------------------------------------------------------------ parser


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes, before or after the command name.

    Below the top level they default to SUPPRESS, so a value given before
    the command is not reset by the subcommand's parser.
    """

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--address",
        default=default(None),
        help="gateway host:port or https://host (env MUTATE_ADDRESS)",
    )
    group.add_argument(
        "--api-key",
        default=default(None),
        help="API key (env MUTATE_API_KEY, which keeps it out of `ps`)",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=default(None),
        metavar="SECONDS",
        help="per-call timeout (env MUTATE_TIMEOUT_MS)",
    )
    group.add_argument(
        "--retries",
        type=_positive_int,
        default=default(None),
        metavar="N",
        help="tries per call while the gateway is unavailable (env MUTATE_RETRIES)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print proto3 JSON (camelCase) instead of tables",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="no progress or notes on stderr",
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


class _Builder:
    """Adds leaf commands that all take the global options."""

    def __init__(self, commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        self._commands = commands

    def group(self, name: str, help: str) -> _Builder:
        parser = self._commands.add_parser(name, help=help, description=help)
        # metavar: argparse names a missing command by it ("COMMAND", not
        # the internal dest "jobs_command").
        return _Builder(
            parser.add_subparsers(
                dest=f"{name}_command", required=True, metavar="COMMAND"
            )
        )

    def command(
        self, name: str, handler: _commands.Handler, help: str
    ) -> argparse.ArgumentParser:
        parser = self._commands.add_parser(
            name,
            help=help,
            description=help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(handler=handler)
        _global_options(parser, top=False)
        result: argparse.ArgumentParser = parser
        return result


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page-size", type=_positive_int, default=0, metavar="N")
    parser.add_argument("--page-token", default="", metavar="TOKEN")
    parser.add_argument(
        "--all", action="store_true", help="follow every page, not only the first"
    )


def _wait_options(parser: argparse.ArgumentParser, *, flag: bool) -> None:
    if flag:
        parser.add_argument(
            "--wait",
            action="store_true",
            help="wait for the job to end (progress on stderr), then download",
        )
    parser.add_argument(
        "--wait-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="give up waiting after this long (exit code 7)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="where to save the result (implies --wait; `-` for stdout); "
        "default: the output's file name in the current folder",
    )
    parser.add_argument(
        "--no-download", action="store_true", help="wait, but do not download"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mutate",
        description="Convert spreadsheets and data files with saved Mutate "
        "configurations, through the gateway's gRPC API.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, top=True)
    root = _Builder(parser.add_subparsers(dest="group", required=True, metavar="GROUP"))
    _configuration_commands(root.group("configs", "saved configurations"))
    _job_commands(root.group("jobs", "conversion jobs"))
    _queue_commands(root.group("queue", "the job queue"))
    # TODO: no `keys`, `deliveries` or `webhooks` groups yet; MutateClient
    # has the calls (create/revoke keys, redeliver, test webhook, rotate the
    # signing secret), the CLI does not expose them.
    return parser


def _configuration_commands(configs: _Builder) -> None:
    p = configs.command(
        "create", _commands.configs_create, "create a configuration from a JSON file"
    )
    p.add_argument("file", metavar="FILE.json", help="proto3 JSON of a Configuration")

    p = configs.command("list", _commands.configs_list, "list configurations")
    p.add_argument("--name-contains", default="", metavar="TEXT")
    _paging(p)

    p = configs.command("get", _commands.configs_get, "show a configuration")
    p.add_argument("id")
    p.add_argument("--version", type=_positive_int, default=0, help="a past version")

    p = configs.command(
        "versions", _commands.configs_versions, "list a configuration's versions"
    )
    p.add_argument("id")
    _paging(p)

    p = configs.command(
        "update", _commands.configs_update, "update a configuration from a JSON file"
    )
    p.add_argument("id")
    p.add_argument("file", metavar="FILE.json")
    p.add_argument(
        "--mask",
        default="",
        metavar="FIELDS",
        help="comma-separated top-level fields to replace, e.g. rules,outputFormat "
        "(default: every writable field)",
    )
    p.add_argument(
        "--expected-version",
        type=_positive_int,
        default=0,
        metavar="N",
        help="refuse the update (exit 3, ABORTED) unless N is the current version",
    )

    p = configs.command("delete", _commands.configs_delete, "delete a configuration")
    p.add_argument("id")

    p = configs.command(
        "test",
        _commands.configs_test,
        "run a configuration on a sample file: before/after tables and the log",
    )
    p.add_argument("id")
    p.add_argument("sample", metavar="SAMPLE_FILE")
    p.add_argument("--rows", type=_positive_int, default=0, metavar="N")
    p.add_argument("--version", type=_positive_int, default=0)


def _job_commands(jobs: _Builder) -> None:
    p = jobs.command("submit", _commands.jobs_submit, "convert a file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--config", required=True, metavar="ID", help="configuration id")
    p.add_argument("--version", type=_positive_int, default=0, metavar="N")
    p.add_argument("--mode", choices=("auto", "sync", "async"), default="auto")
    p.add_argument("--webhook", default="", metavar="URL")
    p.add_argument("--reference", default="", metavar="REF", help="client reference")
    p.add_argument(
        "--idempotency-key",
        default="",
        metavar="KEY",
        help="reuse to make a repeated submit return the same job "
        "(default: a new key per run, shared by its retries)",
    )
    _wait_options(p, flag=True)

    p = jobs.command("get", _commands.jobs_get, "show a job")
    p.add_argument("id")

    p = jobs.command("list", _commands.jobs_list, "list jobs, newest first")
    p.add_argument(
        "--status",
        choices=tuple(_commands.JOB_STATUSES),
        help="only jobs in this state",
    )
    p.add_argument("--config", default="", metavar="ID")
    _paging(p)

    p = jobs.command(
        "wait", _commands.jobs_wait, "wait for a job to end, then download"
    )
    p.add_argument("id")
    _wait_options(p, flag=False)

    p = jobs.command("cancel", _commands.jobs_cancel, "cancel a pending or running job")
    p.add_argument("id")

    p = jobs.command(
        "retry",
        _commands.jobs_retry,
        "run a failed, cancelled or dead-lettered job again",
    )
    p.add_argument("id")

    p = jobs.command("delete", _commands.jobs_delete, "delete a job and its files")
    p.add_argument("id")

    p = jobs.command(
        "download", _commands.jobs_download, "download a completed job's output"
    )
    p.add_argument("id")
    p.add_argument("-o", "--output", metavar="OUT", help="file, or `-` for stdout")
    p.add_argument(
        "--url-only", action="store_true", help="print a presigned URL instead"
    )

    p = jobs.command(
        "deliveries", _commands.jobs_deliveries, "webhook deliveries of a job"
    )
    p.add_argument("id")


def _queue_commands(queue: _Builder) -> None:
    queue.command("stats", _commands.queue_stats, "queue and webhook figures")
    p = queue.command(
        "dead-letters", _commands.queue_dead_letters, "dead-lettered jobs"
    )
    _paging(p)
    p = queue.command(
        "redrive",
        _commands.queue_redrive,
        "run dead-lettered jobs again (all you can see, or the ids given)",
    )
    p.add_argument("ids", nargs="*", metavar="JOB_ID")


# ------------------------------------------------------------ main


def _settings(args: argparse.Namespace, env: Mapping[str, str]) -> CliSettings:
    base = CliSettings.from_env(env)
    return CliSettings(
        address=args.address or base.address,
        api_key=args.api_key if args.api_key is not None else base.api_key,
        timeout=args.timeout or base.timeout,
        retries=args.retries or base.retries,
        retry_backoff=base.retry_backoff,
    )


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits 2 on a usage error and 0 after --help.
        return int(exc.code or 0)
    try:
        settings = _settings(args, os.environ if env is None else env)
    except UsageError as exc:
        return _fail(args, err, ExitCode.USAGE, exc)
    context = _commands.Context(settings, args=args, stdout=out, stderr=err)
    try:
        return int(args.handler(context, args))
    except KeyboardInterrupt:
        err.write("\ninterrupted\n")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # Nothing is left to tell the reader; point stdout at /dev/null so
        # the interpreter's final flush does not fail a second time.
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OUTPUT_CLOSED
    except WaitTimeout as exc:
        return _fail(args, err, ExitCode.WAIT_TIMEOUT, exc)
    except ClientError as exc:
        return _fail(args, err, exit_code(exc), exc, address=settings.address)
    finally:
        context.close()


def exit_code(error: ClientError) -> ExitCode:
    """The exit code for an error (see EXIT_CODE_HELP)."""
    if isinstance(error, UsageError):
        return ExitCode.USAGE
    if isinstance(error, AuthError):
        return ExitCode.AUTH
    if isinstance(error, NotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(error, UnavailableError):
        return ExitCode.UNAVAILABLE
    if isinstance(error, _commands.MissingApiKey):
        return ExitCode.AUTH
    if isinstance(error, (ApiError, TransferError)):
        return ExitCode.API_ERROR
    return ExitCode.API_ERROR


def _fail(
    args: argparse.Namespace,
    err: TextIO,
    code: ExitCode,
    error: ClientError,
    *,
    address: str = "",
) -> int:
    if getattr(args, "json", False):
        body: dict[str, object] = {"exitCode": int(code), "message": error.message}
        if isinstance(error, ApiError):
            body["code"] = error.code.name
            if error.reason:
                body["reason"] = error.reason
            if error.field_violations:
                body["fieldViolations"] = [
                    {"field": f, "description": d} for f, d in error.field_violations
                ]
        err.write(json.dumps({"error": body}, ensure_ascii=False) + "\n")
        return code
    text = str(error)
    if code == ExitCode.AUTH and isinstance(error, ApiError):
        text += "\n(check the API key: --api-key or MUTATE_API_KEY)"
    if code == ExitCode.UNAVAILABLE and address:
        text += f"\n(gateway at {address}: --address or MUTATE_ADDRESS)"
    err.write(f"mutate: error: {text}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
