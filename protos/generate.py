"""Regenerate the Python code for every .proto under protos/mutate.

Run through `make proto`. Output goes to protos/python (committed): message
modules, gRPC stubs and mypy stubs. The result depends only on the pinned
grpcio-tools and mypy-protobuf versions, so regenerating a clean checkout
leaves `git status` empty.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
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


def _plugin(name: str) -> str:
    """The mypy-protobuf plugin next to this interpreter, PATH or not."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install mypy-protobuf (make install)")
    return f"--plugin={name}={found}"


def main() -> int:
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "mutate").rglob("*.proto")
    )
    well_known = resources.files(grpc_tools) / "_proto"
    # Generate beside the old code and swap only on success, so a failed run
    # (a typo in a .proto) never leaves the package without its modules.
    with tempfile.TemporaryDirectory(dir=OUT, prefix=".generate-") as scratch:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{_googleapis_include()}",
            f"-I{well_known}",
            _plugin("protoc-gen-mypy"),
            _plugin("protoc-gen-mypy_grpc"),
            f"--python_out={scratch}",
            f"--grpc_python_out={scratch}",
            f"--mypy_out={scratch}",
            f"--mypy_grpc_out={scratch}",
            *protos,
        ]
        code = protoc.main(args)
        if code != 0:
            print("protoc failed; generated code left as it was", file=sys.stderr)
            return code
        generated = Path(scratch) / "mutate" / "v1"
        (generated / "__init__.py").write_text(
            '"""Generated protobuf and gRPC modules of the Mutate API (mutate.v1)."""\n'
        )
        (generated / "py.typed").write_text("")
        if PACKAGE_DIR.exists():
            shutil.rmtree(PACKAGE_DIR)
        shutil.move(generated, PACKAGE_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
