"""The number format and memory layout a clinic's forward and backward passes run in.

Convolutions run fastest with channels_last (NHWC) activations on both the CPU (oneDNN)
and CUDA (cuDNN), so every pass converts the model and its input. The arithmetic:

- CUDA: automatic mixed precision (float16 autocast, with a GradScaler in training);
- CPU with native bfloat16 (AVX-512 BF16 or AMX; /proc/cpuinfo flags avx512_bf16 or
  amx_bf16): bfloat16 autocast. Measured ResNet50 224 px batch 16 on 2 such cores:
  float32 2.5 img/s, channels_last 3.3, bfloat16 3.9, both 5.9. bfloat16 keeps float32's
  exponent range, so no loss scaling is needed; BatchNorm statistics and the loss stay
  float32 (autocast keeps them there; callers cast the logits with .float()).
- any other CPU: float32 (without native bfloat16 oneDNN emulates it, which is slower).

RADFED_CPU_PRECISION=float32 forces float32 on the CPU (bit-for-bit comparisons with an
older run); =bfloat16 forces bfloat16 autocast; unset or "auto" chooses as above.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["CPU_PRECISIONS", "cpu_has_native_bf16", "cpu_precision", "autocast", "to_channels_last"]

CPU_PRECISIONS = ("auto", "float32", "bfloat16")
_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 dot products in hardware (Linux /proc/cpuinfo;
    False elsewhere: float32 is the safe answer when we cannot tell)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_NATIVE_BF16_FLAGS & set(line.split(":", 1)[1].split()))
    return False


def cpu_precision() -> str:
    """ "bfloat16" or "float32": what CPU passes run in (RADFED_CPU_PRECISION, default auto)."""
    choice = os.environ.get("RADFED_CPU_PRECISION", "auto").strip().lower() or "auto"
    if choice not in CPU_PRECISIONS:
        raise ValueError(f"RADFED_CPU_PRECISION={choice!r}; allowed: {', '.join(CPU_PRECISIONS)}")
    if choice == "auto":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return choice


def autocast(device: torch.device):
    """The autocast context for a pass on `device` (a no-op context for float32 CPU)."""
    if device.type == "cuda":
        return torch.autocast("cuda")
    if device.type == "cpu" and cpu_precision() == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_channels_last(obj: nn.Module | torch.Tensor) -> nn.Module | torch.Tensor:
    """A model converted in place, or a copy of a 4-D batch, in channels_last layout
    (other tensors are returned as they are)."""
    if isinstance(obj, nn.Module):
        return obj.to(memory_format=torch.channels_last)
    return obj.contiguous(memory_format=torch.channels_last) if obj.dim() == 4 else obj
