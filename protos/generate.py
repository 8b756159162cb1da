"""Regenerate the Python code for every .proto under protos/mutate.

Run through `make proto`. Output goes to protos/python (committed): message
modules, gRPC stubs and mypy stubs. The result depends only on the pinned
grpcio-tools and mypy-protobuf versions, so regenerating a clean checkout
leaves `git status` empty.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
OUT = PROTO_ROOT / "python"
PACKAGE_DIR = OUT / "mutate" / "v1"


def _googleapis_include() -> Path:
    # google/api/annotations.proto ships inside googleapis-common-protos.
    from google.api import annotations_pb2

    return Path(annotations_pb2.__file__).resolve().parent.parent.parent


def main() -> int:
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "mutate").rglob("*.proto")
    )
    if PACKAGE_DIR.exists():
        shutil.rmtree(PACKAGE_DIR)
    PACKAGE_DIR.mkdir(parents=True)
    well_known = resources.files(grpc_tools) / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{_googleapis_include()}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_out={OUT}",
        f"--mypy_grpc_out={OUT}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        print("protoc failed", file=sys.stderr)
        return code
    (PACKAGE_DIR / "__init__.py").write_text(
        '"""Generated protobuf and gRPC modules of the Mutate API (mutate.v1)."""\n'
    )
    (PACKAGE_DIR / "py.typed").write_text("")
    return 0


if __name__ == "__main__":
    sys.exit(main())
