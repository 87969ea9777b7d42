"""The numeric precision of block inference (``search.precision``), in Lightning's names.

``32-true`` (the default): every block in float32, as always (bit for bit the results of a search without the
option). ``bf16-mixed``: each block's forward pass under ``torch.autocast`` with bfloat16 (CPU and CUDA), the
block's output cast back to float32. ``16-mixed``: the same with float16, on an accelerator only (CPU autocast has no
float16 path worth running). ``bf16-true`` (weights and activations in bfloat16) is refused: measured, it ran
within about 10% of ``bf16-mixed``'s time (``docs/guide/precision.md``).

Every block's output is float32 whatever the precision, so what crosses a block boundary (cached intermediates,
the features handed to the scorer, the feature cache, checkpoints) is float32 and the memory model counts it
unchanged; and because the cast happens at every block, not only where a plan step ends, alsatian, shift and base
compute the same bits for the same model in every precision. Proxy scoring always runs in float32 (the linear
probe) or float64 (the transferability scores' spectra).
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

from .errors import AlsatianWarning, ConfigError

__all__ = ["PRECISIONS", "DEFAULT_PRECISION", "Precision", "check_precision"]

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
DEFAULT_PRECISION = "32-true"
_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
_REFUSED = {"bf16-true": "not offered: measured, it ran within about 10% of bf16-mixed's time, and its bfloat16 "
                         "weights and intermediates would fall outside the memory model; use "
                         "search.precision=bf16-mixed"}


def check_precision(value: Any) -> str:
    """``value`` if it is a precision the search runs; one ConfigError line naming the valid values otherwise."""
    if isinstance(value, str) and value in _REFUSED:
        raise ConfigError(f"search.precision={value}: {_REFUSED[value]}")
    if not isinstance(value, str) or value not in PRECISIONS:
        raise ConfigError(f"search.precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Precision:
    """One precision on one device: the autocast context block inference runs in, and the float32 cast of each
    block's output. Build it with :meth:`on` (which checks that the device runs it)."""

    name: str = DEFAULT_PRECISION
    device_type: str = "cpu"

    @classmethod
    def on(cls, name: str, device: torch.device) -> Precision:
        """``name`` on ``device``; ConfigError where the device cannot run it (16-mixed on a CPU, bf16 on a GPU
        without bfloat16), an AlsatianWarning where it runs but slowly (bf16 on a CPU without bf16 instructions)."""
        name = check_precision(name)
        if name == "16-mixed" and device.type == "cpu":
            raise ConfigError("search.precision=16-mixed runs on an accelerator only (the search runs on the CPU): "
                              "use search.precision=bf16-mixed or 32-true, or search.device=cuda")
        if name == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"search.precision=bf16-mixed: {torch.cuda.get_device_name(device)} does not support "
                              "bfloat16; use search.precision=16-mixed or 32-true")
        if name == "bf16-mixed" and device.type == "cpu" and not _cpu_has_bf16():
            warnings.warn("search.precision=bf16-mixed on a CPU without bfloat16 instructions (AVX512-BF16 or AMX): "
                          "inference runs several times slower than 32-true here (docs/guide/precision.md)",
                          AlsatianWarning, stacklevel=3)
        return cls(name, device.type)

    @property
    def mixed(self) -> bool:
        return self.name in _AUTOCAST

    def autocast(self) -> ContextManager[Any]:
        """The context a block's forward pass runs in (no context in 32-true)."""
        if not self.mixed:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=_AUTOCAST[self.name])

    def output(self, y: torch.Tensor) -> torch.Tensor:
        """A block's output as float32 (unchanged in 32-true, and where it is not a floating-point tensor)."""
        if self.mixed and y.is_floating_point() and y.dtype != torch.float32:
            return y.float()
        return y


def _cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (False where torch cannot tell)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
