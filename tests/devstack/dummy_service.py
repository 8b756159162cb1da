"""A tiny gRPC server with health checking, standing in for a Mutate service.

    python dummy_service.py [--delay SECONDS] [--ignore-sigterm] [--exit CODE]
    python dummy_service.py migrate           # prints, exits 0
    python dummy_service.py admin create-org  # prints an API key, exits 0

Other arguments (`serve --with-worker`) are ignored. Listens on
MUTATE_GRPC_HOST:MUTATE_GRPC_PORT, reports SERVING after `--delay`, writes
`stopped` to $DUMMY_MARKER when it stops on SIGTERM, and starts a child process
(`sleep`) so tests can check that the whole group goes away.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from concurrent import futures
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--exit", type=int, default=None)
    args, rest = parser.parse_known_args()
    if rest[:1] == ["migrate"]:
        print("migrated", os.environ["MUTATE_DATABASE_URL"], flush=True)
        return 0
    if rest[:1] == ["admin"]:
        print("organization dev exists")
        print(f"dummy-key-{os.environ['MUTATE_GRPC_PORT']}", flush=True)
        return 0
    if args.exit is not None:
        print("exiting at once", flush=True)
        return int(args.exit)

    address = f"{os.environ['MUTATE_GRPC_HOST']}:{os.environ['MUTATE_GRPC_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    # The servicer reports the server ("") SERVING unless told otherwise.
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(address)
    server.start()
    child = subprocess.Popen(["sleep", "600"])
    print(f"listening on {address}, child {child.pid}", flush=True)

    stopped = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        if args.ignore_sigterm:
            print("ignoring SIGTERM", flush=True)
            return
        stopped.set()

    signal.signal(signal.SIGTERM, on_term)
    if stopped.wait(args.delay):
        return 0
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stopped.wait()
    server.stop(grace=1).wait()
    child.terminate()
    marker = os.environ.get("DUMMY_MARKER")
    if marker:
        with open(marker, "w") as handle:
            handle.write("stopped")
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
