"""A tiny webhook receiver: verifies Mutate's signature and prints the payload.

    python examples/webhook_receiver.py --port 9090 --count 1

Listens on 127.0.0.1 only. The secret is the organization's `whsec_...`
signing secret, from --secret or the MUTATE_WEBHOOK_SECRET variable. Each
message is checked with `mutate.common.webhooks.verify` (the Standard
Webhooks scheme: HMAC-SHA256 over `id.timestamp.body`, timestamp within five
minutes): a verified one is answered 204 and printed, anything else 400 and
reported as REJECTED. With --count N it exits (status 0) after N verified
messages; with --timeout S it gives up (status 1) after S seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mutate.common import webhooks


class _Receiver(ThreadingHTTPServer):
    def __init__(self, port: int, secret: str, count: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.secret = secret
        self.remaining = count
        self.done = threading.Event()
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            payload = webhooks.verify(self.server.secret, dict(self.headers), body)
        except webhooks.WebhookVerificationError as exc:
            print(f"REJECTED webhook: {exc}", flush=True)
            self.send_response(400)
            self.end_headers()
            return
        self.send_response(204)
        self.end_headers()
        print(
            f"verified webhook {self.headers['webhook-id']}: "
            f"{payload.get('type')} {payload.get('jobId', '')} "
            f"status={payload.get('status', '')}",
            flush=True,
        )
        print(json.dumps(payload, indent=2, ensure_ascii=False), flush=True)
        with self.server.lock:
            self.server.remaining -= 1
            if self.server.remaining == 0:
                self.server.done.set()

    def log_message(self, format: str, *args: object) -> None:
        # The verdicts above say all there is to say.
        return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument(
        "--secret",
        default=os.environ.get("MUTATE_WEBHOOK_SECRET", ""),
        help="whsec_... (default: $MUTATE_WEBHOOK_SECRET)",
    )
    parser.add_argument(
        "--count", type=int, default=0, help="exit after N verified messages"
    )
    parser.add_argument(
        "--timeout", type=float, default=0, help="exit with status 1 after S seconds"
    )
    args = parser.parse_args(argv)
    if not args.secret.startswith(webhooks.SECRET_PREFIX):
        parser.error("a whsec_... secret is needed: --secret or MUTATE_WEBHOOK_SECRET")
    server = _Receiver(args.port, args.secret, args.count)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"listening on http://127.0.0.1:{args.port}/", flush=True)
    try:
        finished = server.done.wait(args.timeout or None)
    except KeyboardInterrupt:
        finished = True
    finally:
        server.shutdown()
        server.server_close()
    if not finished:
        print(f"no webhook within {args.timeout:g}s", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
