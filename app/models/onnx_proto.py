"""The few ONNX protobuf messages a graph needs, written directly (protobuf's wire format), so
that building the embedded model's graph needs neither the `onnx` package (9 MB, and 0.8 s to
import) nor anything else besides numpy.

Field numbers are those of onnx/onnx.proto (proto2): ModelProto, GraphProto, NodeProto,
AttributeProto, TensorProto, ValueInfoProto, TypeProto, TensorShapeProto, OperatorSetIdProto.
tests/test_torch_free_encoder.py reads the result back with the `onnx` package where it is
installed (the dev extra) and runs onnx's checker on it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

FLOAT, INT32, INT64, BOOL = 1, 6, 7, 9  # TensorProto.DataType
_NUMPY_TYPES = {"float32": FLOAT, "int32": INT32, "int64": INT64, "bool": BOOL}
_ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 2, 7  # AttributeProto.AttributeType


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: two's complement, ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _key(field, 2) + _varint(len(data)) + data


def _float(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", value)


def tensor(name: str, array: Any) -> bytes:
    """TensorProto: dims 1, data_type 2, name 8, raw_data 9 (little-endian)."""
    data_type = _NUMPY_TYPES[str(array.dtype)]
    dims = b"".join(_int(1, d) for d in array.shape)
    raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return dims + _int(2, data_type) + _bytes(8, name) + _bytes(9, raw)


def _attribute(name: str, value: Any) -> bytes:
    """AttributeProto: name 1, f 2, i 3, ints 8, type 20."""
    if isinstance(value, bool | int):
        body = _int(3, int(value)) + _int(20, _ATTR_INT)
    elif isinstance(value, float):
        body = _float(2, value) + _int(20, _ATTR_FLOAT)
    elif isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
        body = b"".join(_int(8, v) for v in value) + _int(20, _ATTR_INTS)
    else:
        raise TypeError(f"attribute {name}: {value!r}")
    return _bytes(1, name) + body


def node(
    op_type: str, inputs: Sequence[str], outputs: Sequence[str], domain: str = "", **attrs: Any
) -> bytes:
    """NodeProto: input 1, output 2, op_type 4, attribute 5, domain 7."""
    body = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
    body += _bytes(4, op_type)
    body += b"".join(_bytes(5, _attribute(k, v)) for k, v in sorted(attrs.items()))
    if domain:
        body += _bytes(7, domain)
    return body


def value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    """ValueInfoProto{name 1, type 2: TypeProto{tensor_type 1: {elem_type 1, shape 2:
    TensorShapeProto{dim 1: {dim_value 1 | dim_param 2}}}}}."""
    shape = b"".join(_bytes(1, _int(1, d) if isinstance(d, int) else _bytes(2, d)) for d in dims)
    tensor_type = _int(1, elem_type) + _bytes(2, shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def model(
    nodes: Iterable[bytes],
    initializers: Iterable[bytes],
    inputs: Iterable[bytes],
    outputs: Iterable[bytes],
    *,
    name: str,
    opsets: dict[str, int],
    ir_version: int,
    producer: str,
) -> bytes:
    """ModelProto{ir_version 1, producer_name 2, graph 7, opset_import 8}; GraphProto{node 1,
    name 2, initializer 5, input 11, output 12}."""
    graph = b"".join(_bytes(1, n) for n in nodes) + _bytes(2, name)
    graph += b"".join(_bytes(5, t) for t in initializers)
    graph += b"".join(_bytes(11, v) for v in inputs) + b"".join(_bytes(12, v) for v in outputs)
    opset_import = b"".join(
        _bytes(8, (_bytes(1, domain) if domain else b"") + _int(2, version))
        for domain, version in opsets.items()
    )
    return _int(1, ir_version) + _bytes(2, producer) + _bytes(7, graph) + opset_import
