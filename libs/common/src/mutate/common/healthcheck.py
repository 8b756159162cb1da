"""A gRPC health probe for container health checks, with nothing but Python.

`python -m mutate.common.healthcheck [ADDRESS] [--service NAME]` asks the
standard health service (grpc.health.v1) and exits 0 when the answer is
SERVING, 1 otherwise, so an image needs no `grpc_health_probe` binary. Without
ADDRESS it asks 127.0.0.1 on `MUTATE_GRPC_PORT`, the port the service in the
same container listens on. Kubernetes uses its own `grpc:` probes instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def check(address: str, *, service: str = "", timeout: float = 2.0) -> str:
    """The status name the server at `address` reports for `service`.

    Raises grpc.RpcError when the server cannot be asked.
    """
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def default_address(env: Mapping[str, str]) -> str | None:
    """127.0.0.1 on the port the container's service listens on, if known."""
    port = env.get("MUTATE_GRPC_PORT", "").strip()
    return f"127.0.0.1:{port}" if port else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mutate.common.healthcheck",
        description="Exit 0 when a gRPC server reports SERVING.",
    )
    parser.add_argument(
        "address",
        nargs="?",
        default=default_address(os.environ),
        help="host:port; default 127.0.0.1:$MUTATE_GRPC_PORT",
    )
    parser.add_argument(
        "--service", default="", help="service name; default the whole server"
    )
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="seconds to wait for an answer"
    )
    args = parser.parse_args(argv)
    if not args.address:
        parser.error("no ADDRESS given and MUTATE_GRPC_PORT is not set")

    try:
        status = check(args.address, service=args.service, timeout=args.timeout)
    except grpc.RpcError as exc:
        reason = exc.code().name if isinstance(exc, grpc.Call) else str(exc)
        print(f"unhealthy: {reason} from {args.address}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"unhealthy: {status} from {args.address}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
