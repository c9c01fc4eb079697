"""Renews protos/buf/validate/validate.proto from a protovalidate source distribution on PyPI.

protovalidate's wheels carry no .proto file; its sdist (1.1.2, for one) carries the
validate.proto it was built against under `upstream/proto/`. Take it from the release
whose rules the pinned runtime (`protovalidate` in libs/accord-kit) implements, then run
`make protos`. See protos/README.md.
Run with: uv run --no-project --with pip python scripts/vendor_protovalidate.py 1.1.2
"""

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MEMBER = "upstream/proto/buf/validate/validate.proto"
OUT = Path(__file__).resolve().parent.parent / "protos" / "buf" / "validate" / "validate.proto"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("version", help="the protovalidate sdist to take the file from")
    version = parser.parse_args().version
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable,
                *("-m", "pip", "download", "--quiet", "--no-deps", "--dest", scratch),
                *("--no-binary", "protovalidate", f"protovalidate=={version}"),
            ],
            check=True,
        )
        with tarfile.open(Path(scratch) / f"protovalidate-{version}.tar.gz") as sdist:
            member = sdist.extractfile(f"protovalidate-{version}/{MEMBER}")
            if member is None:
                sys.exit(f"protovalidate {version} carries no {MEMBER}")
            source = member.read()
    OUT.write_bytes(source)
    print(f"wrote {OUT} from protovalidate {version} (sha256 {hashlib.sha256(source).hexdigest()})")


if __name__ == "__main__":
    main()
