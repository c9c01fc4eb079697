"""Writes buf/validate/validate.proto as a FileDescriptorSet into protos/third_party.

The protovalidate rules our protos import ship on PyPI only as compiled descriptors, so we
keep the descriptor (not the source) and feed it to protoc with --descriptor_set_in.
Run with: uv run --no-project --with protovalidate==2.1.0 python scripts/vendor_protovalidate.py
"""

import ast
from pathlib import Path

from google.protobuf import descriptor_pb2  # type: ignore[import-not-found,unused-ignore]
from protovalidate._gen.buf.validate import validate_pb  # type: ignore[import-not-found]

OUT = Path(__file__).resolve().parent.parent / "protos" / "third_party" / "buf_validate.binpb"


def main() -> None:
    source = Path(validate_pb.__file__).read_text()
    start = source.index("_DESC = file_desc(\n") + len("_DESC = file_desc(\n")
    literal = source[start : source.index("\n", start)].strip().rstrip(",")
    file_proto = descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(literal))
    file_set = descriptor_pb2.FileDescriptorSet(file=[file_proto])
    OUT.write_bytes(file_set.SerializeToString(deterministic=True))
    print(f"wrote {OUT} ({file_proto.name}, {len(file_proto.message_type)} messages)")


if __name__ == "__main__":
    main()
