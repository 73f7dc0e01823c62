"""Half-precision weight transfer (spec `transfer_dtype`): the codec both sides share.

A round moves the whole model to every clinic and back; in bfloat16 or float16 that is
half the bytes. Training, aggregation, differential privacy and checkpoints stay in
float32: only the bytes on the wire are narrower, and every side casts them back up the
moment they arrive.

- Server → clinic: the global model's floating-point parameters, rounded to the nearest
  value of the transfer dtype (`cast_array`).
- Clinic → server: each parameter's *change* from the model received (`delta_array`),
  not the trained weights. A weight of 0.5 moved by 1e-4 is lost when rounded to
  bfloat16 (its step there is 2^-8), while the change itself keeps 8 significant bits;
  the server adds the change to its float32 global model, so rounding never
  accumulates across rounds (tests/test_transfer.py measures both). Changes are rounded
  toward zero, so no cast can lengthen an update: a norm a clinic clipped to (client-side
  differential privacy) still holds after the cast; the bias is under one unit in the
  last place (under 0.4 % of the update in bfloat16, 0.05 % in float16).
- Buffers (BatchNorm running statistics and step counters) stay float32: they are
  0.09 % (resnet18), 0.23 % (resnet50), 1.2 % (densenet121) of the model's bytes, so a
  message is 0.500-0.506 of its float32 size anyway, and small variances are where
  float16 is worst (it has no normal numbers below 6e-5).

Encoded arrays say what they are in Flower's `Array.stype` ("radfed.cast/bfloat16",
"radfed.delta/float16"); the payload is the raw little-endian 16-bit values, no header,
so the bytes recorded per round (strategies.utils.model_bytes) are the bytes that travel.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from radfed.spec import TRANSFER_DTYPES

CAST, DELTA = "radfed.cast/", "radfed.delta/"
FLOAT16_MAX = 65504.0


class TransferError(ValueError):
    """A payload that cannot be decoded, or a weight outside float16's range; one line."""


def to_half(x: np.ndarray, dtype: str, toward_zero: bool = False) -> np.ndarray:
    """float32 values as 16-bit codes of `dtype` (uint16 for bfloat16, float16 itself).

    Nearest (ties to even) by default; `toward_zero` never increases a magnitude."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "bfloat16":
        bits = x.view(np.uint32)
        if toward_zero:
            codes = (bits >> 16).astype(np.uint16)
        else:
            codes = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
        nan = np.isnan(x)
        if nan.any():  # keep NaN a NaN (rounding could carry it into the exponent)
            codes[nan] = (bits[nan] >> 16).astype(np.uint16) | 0x0040
        return codes
    if dtype == "float16":
        with np.errstate(over="ignore"):
            half = x.astype(np.float16)
        if toward_zero:
            grew = np.abs(half.astype(np.float32)) > np.abs(x)
            half[grew] = np.nextafter(half[grew], np.float16(0))
        elif not np.isfinite(half[np.isfinite(x)]).all():
            raise TransferError(
                "transfer_dtype float16: a weight is beyond float16's range "
                f'(±{FLOAT16_MAX:g}); use transfer_dtype = "bfloat16"'
            )
        return half
    raise TransferError(f"transfer dtype {dtype!r} is not one of {', '.join(TRANSFER_DTYPES[1:])}")


def from_half(codes: np.ndarray, dtype: str) -> np.ndarray:
    """Inverse of `to_half`: exact float32 values of the 16-bit codes."""
    if dtype == "bfloat16":
        return (codes.astype(np.uint32) << 16).view(np.float32)
    return codes.astype(np.float32)


def _encoded(stype: str, dtype: str, x: np.ndarray, toward_zero: bool) -> Array:
    codes = to_half(x, dtype, toward_zero)
    return Array(
        dtype=dtype,
        shape=tuple(int(n) for n in x.shape),
        stype=stype + dtype,
        data=codes.astype(codes.dtype.newbyteorder("<"), copy=False).tobytes(),
    )


def cast_array(x: np.ndarray, dtype: str) -> Array:
    """A float32 tensor as `dtype`, rounded to nearest (server → clinic)."""
    return _encoded(CAST, dtype, x, toward_zero=False)


def delta_array(new: np.ndarray, reference: np.ndarray, dtype: str) -> Array:
    """`new - reference`, computed in float32, rounded toward zero (clinic → server)."""
    return _encoded(DELTA, dtype, np.subtract(new, reference, dtype=np.float32), toward_zero=True)


def encoding(array: Array) -> tuple[str, str] | None:
    """("cast" or "delta", dtype) for an encoded array; None for anything else."""
    for kind, prefix in (("cast", CAST), ("delta", DELTA)):
        if array.stype.startswith(prefix) and array.stype[len(prefix) :] in TRANSFER_DTYPES[1:]:
            return kind, array.stype[len(prefix) :]
    return None


def decode_array(array: Array, reference: np.ndarray | None = None) -> np.ndarray:
    """The float32 tensor an encoded array stands for (a delta needs its reference)."""
    kind, dtype = encoding(array) or ("", "")
    if not kind:
        raise TransferError(f"array of stype {array.stype!r} is not a radfed transfer encoding")
    count = int(np.prod(array.shape, dtype=np.int64))
    if len(array.data) != 2 * count:
        raise TransferError(f"{array.stype} payload of {len(array.data)} bytes for shape {tuple(array.shape)}")
    raw = np.frombuffer(array.data, dtype="<u2" if dtype == "bfloat16" else "<f2", count=count)
    values = from_half(raw, dtype).reshape(array.shape)
    if kind == "cast":
        return values
    if reference is None or tuple(reference.shape) != tuple(array.shape):
        raise TransferError("an update's change arrived without a matching reference tensor")
    return np.add(reference, values, dtype=np.float32)


def encode_record(record: ArrayRecord, dtype: str, keep: set[str] | frozenset[str] = frozenset()) -> ArrayRecord:
    """A copy of `record` with its float32 tensors cast to `dtype`, except those in `keep`
    (and anything not float32: integer buffers travel as they are)."""
    out = ArrayRecord()
    for key, array in record.items():
        if key not in keep and array.dtype == "float32" and array.stype == "numpy.ndarray":
            out[key] = cast_array(array.numpy(), dtype)
        else:
            out[key] = array
    return out


def decode_record(record: ArrayRecord, reference: ArrayRecord | None = None) -> dict[str, str]:
    """Replace every encoded array of `record`, in place, by its float32 tensor (a delta is
    added to `reference[key]`); returns {key: dtype} of what was encoded."""
    found: dict[str, str] = {}
    for key in list(record.keys()):
        how = encoding(record[key])
        if how is None:
            continue
        base = None
        if how[0] == "delta":
            if reference is None or key not in reference.keys():
                raise TransferError(f"an update's change to {key} arrived without a reference")
            base = reference[key].numpy()
        record[key] = Array(decode_array(record[key], base))
        found[key] = how[1]
    return found


def encode_update(record: ArrayRecord, received: ArrayRecord, dtypes: dict[str, str]) -> None:
    """Replace, in place, each tensor of `record` named in `dtypes` by its change from
    `received` (float32, as decoded) in that dtype; other tensors travel as they are."""
    for key, dtype in dtypes.items():
        if key in record.keys() and key in received.keys():
            record[key] = delta_array(record[key].numpy(), received[key].numpy(), dtype)
