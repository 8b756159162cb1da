"""What each `mutate` command does, on top of `MutateClient`.

Handlers take the parsed arguments, print the result (table or JSON) on
stdout and return an exit code; errors propagate as `ClientError` and are
turned into exit codes in one place (`cli.main`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

from google.protobuf import message

from mutate.client import _output, _transfer
from mutate.client._client import MutateClient
from mutate.client._config_file import load_configuration
from mutate.client._errors import ClientError
from mutate.client._progress import JobProgress
from mutate.client._retry import RetryPolicy
from mutate.client._settings import CliSettings
from mutate.v1 import job_pb2, public_api_pb2

Job = job_pb2.Job
pb = public_api_pb2
Handler = Callable[["Context", argparse.Namespace], int]

JOB_STATUSES = {
    Job.Status.Name(value).lower(): value
    for value in Job.Status.values()
    if value != Job.STATUS_UNSPECIFIED
}
OK = 0
JOB_FAILED = 1


class MissingApiKey(ClientError):
    """No API key was given (flag or environment)."""


class Context:
    """The settings, the output streams and a client made on first use."""

    def __init__(
        self,
        settings: CliSettings,
        *,
        args: argparse.Namespace,
        stdout: TextIO,
        stderr: TextIO,
    ) -> None:
        self.settings = settings
        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(getattr(args, "quiet", False))
        self.stdout = stdout
        self.stderr = stderr
        self._client: MutateClient | None = None

    @property
    def client(self) -> MutateClient:
        if self._client is None:
            if not self.settings.api_key:
                raise MissingApiKey("no API key: set MUTATE_API_KEY or pass --api-key")
            self._client = MutateClient(
                self.settings.address,
                self.settings.api_key,
                timeout=self.settings.timeout,
                retries=RetryPolicy(
                    attempts=self.settings.retries,
                    initial_backoff=self.settings.retry_backoff,
                ),
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def show(self, msg: message.Message, human: Callable[[], str]) -> None:
        """Print `msg` as JSON with --json, else the human form."""
        self.stdout.write((_output.to_json(msg) if self.json else human()) + "\n")

    def note(self, text: str) -> None:
        """A remark for people on stderr (not with --quiet or --json)."""
        if not self.quiet and not self.json:
            self.stderr.write(text + "\n")


# ------------------------------------------------------------ paging


P = TypeVar("P", bound=message.Message)


def _pages(
    fetch: Callable[[str], P], args: argparse.Namespace, items: str
) -> tuple[P, str]:
    """The first page, or with --all every page merged into one response."""
    page = fetch(args.page_token)
    token: str = page.next_page_token  # type: ignore[attr-defined]
    while args.all and token:
        more = fetch(token)
        getattr(page, items).extend(getattr(more, items))
        token = more.next_page_token  # type: ignore[attr-defined]
    if args.all:
        page.next_page_token = ""  # type: ignore[attr-defined]
    return page, token


def _more(context: Context, token: str) -> None:
    if token:
        context.note(f"more: --page-token {token} (or --all)")


# ------------------------------------------------------------ configurations


def configs_create(context: Context, args: argparse.Namespace) -> int:
    configuration = load_configuration(Path(args.file))
    created = context.client.create_configuration(configuration)
    context.show(created, lambda: _output.configuration_detail(created))
    return OK


def configs_list(context: Context, args: argparse.Namespace) -> int:
    page, token = _pages(
        lambda t: context.client.list_configurations(
            page_size=args.page_size, page_token=t, name_contains=args.name_contains
        ),
        args,
        "configurations",
    )
    context.show(page, lambda: _output.configuration_rows(page.configurations))
    _more(context, token)
    return OK


def configs_get(context: Context, args: argparse.Namespace) -> int:
    found = context.client.get_configuration(args.id, version=args.version)
    context.show(found, lambda: _output.configuration_detail(found))
    return OK


def configs_versions(context: Context, args: argparse.Namespace) -> int:
    page, token = _pages(
        lambda t: context.client.list_configuration_versions(
            args.id, page_size=args.page_size, page_token=t
        ),
        args,
        "versions",
    )
    context.show(page, lambda: _output.configuration_rows(page.versions))
    _more(context, token)
    return OK


def configs_update(context: Context, args: argparse.Namespace) -> int:
    configuration = load_configuration(Path(args.file))
    updated = context.client.update_configuration(
        args.id,
        configuration,
        update_mask=parse_mask(args.mask),
        expected_version=args.expected_version,
    )
    context.show(updated, lambda: _output.configuration_detail(updated))
    return OK


def configs_delete(context: Context, args: argparse.Namespace) -> int:
    context.client.delete_configuration(args.id)
    if context.json:
        context.stdout.write("{}\n")
    else:
        context.stdout.write(f"deleted {args.id}\n")
    return OK


def configs_test(context: Context, args: argparse.Namespace) -> int:
    result = context.client.test_configuration(
        args.id, Path(args.sample), max_rows=args.rows, version=args.version
    )
    context.show(result, lambda: _output.preview(result))
    return JOB_FAILED if result.HasField("error") else OK


def parse_mask(text: str) -> list[str]:
    """`rules,outputFormat` → ["rules", "output_format"] (FieldMask paths)."""
    paths = [p.strip() for p in text.split(",") if p.strip()]
    return [re.sub(r"(?<!^)(?=[A-Z])", "_", p).lower() for p in paths]


# ------------------------------------------------------------ jobs


def jobs_submit(context: Context, args: argparse.Namespace) -> int:
    _check_output(args)
    job = context.client.submit(
        Path(args.file),
        args.config,
        configuration_version=args.version,
        mode=args.mode,
        webhook_url=args.webhook,
        client_reference=args.reference,
        idempotency_key=args.idempotency_key,
    )
    if not (args.wait or args.output):
        context.show(job, lambda: _output.job_detail(job))
        return _job_exit(context, job)
    context.note(f"submitted {job.id}")
    return _wait_and_download(context, args, job.id)


def jobs_wait(context: Context, args: argparse.Namespace) -> int:
    _check_output(args)
    return _wait_and_download(context, args, args.id)


def _wait_and_download(context: Context, args: argparse.Namespace, job_id: str) -> int:
    progress = JobProgress(context.stderr) if not context.quiet else None
    try:
        job = context.client.wait(
            job_id,
            on_update=progress.update if progress else None,
            timeout=args.wait_timeout,
        )
    finally:
        if progress is not None:
            progress.finish()
    if job.status != Job.COMPLETED or args.no_download:
        if args.output != "-" or args.no_download:
            # With `-o -` stdout is the file's: a failed job leaves it empty
            # (the reason goes to stderr) rather than filling it with a table.
            context.show(job, lambda: _output.job_detail(job))
        return _job_exit(context, job)
    saved = _download(context, job.id, args.output)
    if args.output != "-":
        context.show(job, lambda: _output.job_detail(job))
        context.note(f"saved {saved}")
    return OK


def _check_output(args: argparse.Namespace) -> None:
    """Refuse an `-o` that cannot be written (a folder, a missing folder)
    before anything else: before credentials are needed, and before
    submitting or waiting rather than once the job is done."""
    if args.output not in (None, "-") and not getattr(args, "no_download", False):
        _transfer.check_destination(Path(args.output))


def _job_exit(context: Context, job: job_pb2.Job) -> int:
    """1 when the job ended badly (with the reason on stderr), else 0."""
    if job.status in (Job.FAILED, Job.CANCELLED, Job.DEAD_LETTERED):
        reason = _output.job_error(job.error) if job.HasField("error") else ""
        context.stderr.write(
            f"mutate: job {job.id} {_output.status_name(job.status)}"
            + (f": {reason}" if reason else "")
            + "\n"
        )
        return JOB_FAILED
    return OK


def _download(context: Context, job_id: str, output: str | None) -> Path:
    if output != "-":
        return context.client.download(job_id, output)
    # To stdout: into a temporary folder first, so a failed transfer
    # writes nothing half-way into a pipe.
    with tempfile.TemporaryDirectory(prefix="mutate-") as folder:
        path = context.client.download(job_id, directory=folder)
        with path.open("rb") as source:
            binary = getattr(context.stdout, "buffer", None)
            if binary is None:
                context.stdout.write(source.read().decode("utf-8", "replace"))
            else:
                context.stdout.flush()
                shutil.copyfileobj(source, binary)
                binary.flush()
        return Path("-")


def jobs_get(context: Context, args: argparse.Namespace) -> int:
    job = context.client.get_job(args.id)
    context.show(job, lambda: _output.job_detail(job))
    return OK


def jobs_list(context: Context, args: argparse.Namespace) -> int:
    page, token = _pages(
        lambda t: context.client.list_jobs(
            status=JOB_STATUSES[args.status] if args.status else 0,
            configuration_id=args.config,
            page_size=args.page_size,
            page_token=t,
        ),
        args,
        "jobs",
    )
    context.show(page, lambda: _output.job_rows(page.jobs))
    _more(context, token)
    return OK


def jobs_cancel(context: Context, args: argparse.Namespace) -> int:
    job = context.client.cancel_job(args.id)
    context.show(job, lambda: _output.job_detail(job))
    return OK


def jobs_retry(context: Context, args: argparse.Namespace) -> int:
    job = context.client.retry_job(args.id)
    context.show(job, lambda: _output.job_detail(job))
    return OK


def jobs_delete(context: Context, args: argparse.Namespace) -> int:
    context.client.delete_job(args.id)
    context.stdout.write("{}\n" if context.json else f"deleted {args.id}\n")
    return OK


def jobs_download(context: Context, args: argparse.Namespace) -> int:
    if args.url_only:
        download = context.client.get_download(args.id)
        context.show(download, lambda: download.url)
        return OK
    _check_output(args)
    saved = _download(context, args.id, args.output)
    if args.output != "-":
        if context.json:
            context.stdout.write(json.dumps({"path": str(saved)}) + "\n")
        else:
            context.stdout.write(f"{saved}\n")
    return OK


def jobs_deliveries(context: Context, args: argparse.Namespace) -> int:
    page = context.client.list_job_deliveries(args.id)
    context.show(page, lambda: _output.delivery_rows(page.deliveries))
    return OK


# ------------------------------------------------------------ queue


def queue_stats(context: Context, args: argparse.Namespace) -> int:
    stats = context.client.queue_stats()
    context.show(stats, lambda: _output.queue_stats(stats))
    return OK


def queue_dead_letters(context: Context, args: argparse.Namespace) -> int:
    page, token = _pages(
        lambda t: context.client.list_dead_letters(
            page_size=args.page_size, page_token=t
        ),
        args,
        "jobs",
    )
    context.show(page, lambda: _output.job_rows(page.jobs))
    _more(context, token)
    return OK


def queue_redrive(context: Context, args: argparse.Namespace) -> int:
    result = context.client.redrive_dead_letters(args.ids)
    context.show(result, lambda: _output.job_rows(result.jobs))
    return OK
