"""Serialised `tf.train.Example` records of generated examples, made without TensorFlow.

The builder's generic TFDS path encodes (ZLIB) and serialises every example in the main
process, which made that process the bottleneck of `python -m data.generate`. Here worker
processes do both, for a fraction of the Python time of TFDS's `FeaturesDict.encode_example` and
`ExampleSerializer`, so they can start before TensorFlow is imported and the main process only
shuffles and writes. The bytes are those of TFDS 4.9.10's `ExampleSerializer`: each feature is
one map entry of `Features.feature`; the order of the entries is the one TFDS's protobuf
runtime gives in this process (it is hash-table order, seeded per process), which
`entry_order` reads off a serialised dummy example. `tests/test_data_tfds.py` checks the
records against the generic path for every system.
"""
from __future__ import annotations

import zlib
from typing import Dict, List, Sequence, Tuple

import numpy as np

from data.generation import _generate_range

__all__ = ["encode_range", "entry_order", "join_entries"]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return bytes([number << 3 | 2]) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))  # Feature.bytes_list { value }


def _int64_feature(values: np.ndarray) -> bytes:
    # Int64List.value is packed; a negative value is its 64-bit two's complement, as protobuf writes it.
    packed = b"".join(_varint(int(v) & 0xFFFF_FFFF_FFFF_FFFF) for v in np.asarray(values).reshape(-1))
    return _field(3, _field(1, packed) if packed else b"")


def _entry(key: str, feature: bytes) -> bytes:
    return _field(1, _field(1, key.encode()) + _field(2, feature))


def encode_range(args: Tuple) -> List[Dict[str, bytes]]:
    """Generates examples `start..stop-1` (as `_generate_range`) and encodes each as map entries.

    Returns, per example, `{feature key: serialised map entry}` with the features of
    `HamiltonianPhysics._info`: `frames` ZLIB-compressed uint8, `x`, `dx` and `params/*` raw
    float64 bytes, `color_index` and `index` int64 lists.
    """
    start = args[1]
    chunk = _generate_range(args)
    frames, x, dx = chunk["frames"], chunk["x"], chunk["dx"]
    params = chunk["params"]
    examples = []
    for j in range(len(x)):
        entries = {
            "frames": _entry("frames", _bytes_feature(zlib.compress(frames[j].tobytes()))),
            "x": _entry("x", _bytes_feature(x[j].tobytes())),
            "dx": _entry("dx", _bytes_feature(dx[j].tobytes())),
            "color_index": _entry("color_index", _int64_feature(chunk["color_index"][j])),
            "index": _entry("index", _int64_feature(np.int64(start + j))),
        }
        for key, value in params.items():
            entries[f"params/{key}"] = _entry(f"params/{key}", _bytes_feature(np.asarray(value[j]).tobytes()))
        examples.append(entries)
    return examples


def _map_keys(serialized: bytes) -> List[str]:
    """The keys of `Example.features.feature`, in the order of the serialised entries."""
    def varint(i: int) -> Tuple[int, int]:
        value = shift = 0
        while True:
            byte = serialized[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, i

    _, i = varint(1)  # Example.features
    keys = []
    while i < len(serialized):
        length, i = varint(i + 1)  # Features.feature entry
        key_length, k = varint(i + 1)
        keys.append(serialized[k:k + key_length].decode())
        i += length
    return keys


def entry_order(features) -> List[str]:
    """The order in which TFDS's serializer writes the map entries of `features` (a FeaturesDict)."""
    from tensorflow_datasets.core import example_serializer

    def zeros(feature):
        if hasattr(feature, "keys"):
            return {key: zeros(feature[key]) for key in feature.keys()}
        return np.zeros(feature.shape, feature.np_dtype)

    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    return _map_keys(serializer.serialize_example(features.encode_example(zeros(features))))


def join_entries(entries: Dict[str, bytes], order: Sequence[str]) -> bytes:
    """One serialised `tf.train.Example` from its map entries."""
    return _field(1, b"".join([entries[key] for key in order]))
