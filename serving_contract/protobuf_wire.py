"""Writing protobuf wire format by hand: the two primitives every hand-written message here needs.

The model server builds ``tf.train.Example`` bytes from JSON (model_server/example_codec.py) and the
gateway writes TF Serving's gRPC requests (flask_server/grpc_messages.py) without importing
TensorFlow or generated protobuf classes; both write fields with these. Standard library only.
"""

from __future__ import annotations

WIRE_VARINT = 0
WIRE_LEN = 2


def varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 becomes its ten-byte two's complement, as protobuf writes it."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def len_field(field: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message, packed repeated): key, length, payload."""
    return varint(field << 3 | WIRE_LEN) + varint(len(payload)) + payload


def varint_field(field: int, value: int) -> bytes:
    """A varint field (int32/int64/uint/bool/enum)."""
    return varint(field << 3 | WIRE_VARINT) + varint(value)
