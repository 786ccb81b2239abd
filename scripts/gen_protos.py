"""Regenerate federation/wire from proto/ (the generated code is a build product).

`--check` regenerates into a temporary folder and fails if anything differs from the
committed files, so a .proto change cannot land without its generated code.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
WIRE = ROOT / "federation" / "wire"
HEADER = '"""Generated from proto/ by scripts/gen_protos.py; do not edit."""\n'
IMPORT_RE = re.compile(r"^from liaison\.", re.MULTILINE)


def plugin(name: str) -> str:
    """protoc's --plugin option for a plugin installed beside this Python (the virtualenv's
    bin/), so that the generation works from any shell, with or without the venv on PATH."""
    path = Path(sys.executable).parent / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise SystemExit(
            f"{name} is not installed beside {sys.executable}: run scripts/setup.sh "
            "(it installs mypy-protobuf into .venv), then .venv/bin/python scripts/gen_protos.py"
        )
    return f"--plugin={name}={path}"


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        plugin("protoc-gen-mypy"),
        plugin("protoc-gen-mypy_grpc"),
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out.rglob("*.py*"):
        text = IMPORT_RE.sub("from federation.wire.liaison.", path.read_text())
        path.write_text(text)
    for folder in [p for p in out.rglob("*") if p.is_dir()]:
        (folder / "__init__.py").touch()
    (out / "__init__.py").write_text(HEADER)


def same_tree(a: Path, b: Path) -> list[str]:
    diffs: list[str] = []
    files_a = {
        p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    files_b = {
        p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    diffs += [f"missing: {p}" for p in sorted(files_a - files_b)]
    diffs += [f"extra: {p}" for p in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        if not filecmp.cmp(a / rel, b / rel, shallow=False):
            diffs.append(f"differs: {rel}")
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        if args.check:
            diffs = same_tree(out, WIRE)
            for line in diffs:
                print(f"federation/wire {line}", file=sys.stderr)
            if diffs:
                print(
                    "generated code is stale: run `.venv/bin/python scripts/gen_protos.py`",
                    file=sys.stderr,
                )
                return 1
            return 0
        shutil.rmtree(WIRE, ignore_errors=True)
        shutil.copytree(out, WIRE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
