"""Regenerates libs/accord-api from protos/ (messages, gRPC stubs, type stubs, descriptor set).

`--check` regenerates into a scratch directory and fails if anything differs from what is
checked in, so the test command catches generated-code drift.
"""

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
# protos/ is the one include root: Accord's own files under accord/, and protovalidate's
# buf/validate/validate.proto (vendored, see protos/README.md) beside them.
PROTOS = ROOT / "protos"
VALIDATE = "buf/validate/validate.proto"
OUT = ROOT / "libs" / "accord-api" / "src"
# Generated trees; everything else under OUT (none today) is hand-kept.
GENERATED = ("accord", "buf")
DESCRIPTOR_SET = Path("accord") / "descriptor_set.binpb"


def _accord_protos() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "accord").rglob("*.proto"))


def _protoc(*args: str) -> None:
    well_known = str(resources.files("grpc_tools") / "_proto")
    argv = ["protoc", f"-I{PROTOS}", f"-I{well_known}"]
    if protoc.main([*argv, *args]) != 0:
        sys.exit(f"protoc failed: {' '.join(args)}")


def generate(out: Path) -> None:
    files = _accord_protos()
    targets = [f"--python_out={out}", f"--mypy_out={out}"]
    _protoc(*targets, f"--grpc_python_out={out}", f"--mypy_grpc_out={out}", *files)
    _protoc(*targets, VALIDATE)
    _protoc("--include_imports", "--include_source_info", f"-o{out / DESCRIPTOR_SET}", *files)
    for package in GENERATED:
        for folder in [out / package, *(p for p in (out / package).rglob("*") if p.is_dir())]:
            (folder / "__init__.py").touch()
    (out / "accord" / "py.typed").touch()
    (out / "buf" / "py.typed").touch()


def _differences(left: Path, right: Path) -> list[str]:
    found: list[str] = []
    cmp = filecmp.dircmp(left, right)
    found += [f"only in checked-in: {left / n}" for n in cmp.left_only]
    found += [f"missing from checked-in: {right / n}" for n in cmp.right_only]
    found += [f"differs: {left / n}" for n in cmp.diff_files]
    for name in cmp.common_dirs:
        found += _differences(left / name, right / name)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail on drift, write nothing")
    args = parser.parse_args()
    if not args.check:
        for package in GENERATED:
            shutil.rmtree(OUT / package, ignore_errors=True)
        generate(OUT)
        print(f"generated {len(_accord_protos())} protos into {OUT}")
        return
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch))
        drift = [d for p in GENERATED for d in _differences(OUT / p, Path(scratch) / p)]
    if drift:
        sys.exit("generated code is stale; run `make protos`:\n  " + "\n  ".join(drift))
    print("generated code is up to date")


if __name__ == "__main__":
    main()
