"""Progress of a job on stderr: a redrawn bar on a terminal, lines otherwise.

Stdout stays free for the result, so `mutate jobs submit … --json | jq`
works with or without a terminal.
"""

from __future__ import annotations

from typing import TextIO

from mutate.client._output import status_name
from mutate.v1 import job_pb2

Job = job_pb2.Job


class JobProgress:
    """Feed it each state of a job (`update`), then call `finish`."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None, width: int = 30):
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._width = width
        self._last: tuple[int, int, int] | None = None
        self._drawn = False

    def update(self, job: job_pb2.Job) -> None:
        state = (job.attempt, job.status, job.progress_percent)
        if state == self._last:
            return
        self._last = state
        if self._tty:
            self._stream.write("\r" + self.bar(job))
            self._drawn = True
        else:
            self._stream.write(self.line(job) + "\n")
        self._stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False

    def bar(self, job: job_pb2.Job) -> str:
        percent = 100 if job.status == Job.COMPLETED else job.progress_percent
        filled = round(self._width * percent / 100)
        bar = "#" * filled + "." * (self._width - filled)
        # Trailing spaces wipe a longer status drawn before.
        return f"{job.id} [{bar}] {percent:3d}% {status_name(job.status):<13}"

    @staticmethod
    def line(job: job_pb2.Job) -> str:
        text = f"{job.id}: {status_name(job.status)}"
        if job.status == Job.RUNNING:
            text += f" {job.progress_percent}%"
        if job.attempt > 1:
            text += f" (attempt {job.attempt})"
        return text
