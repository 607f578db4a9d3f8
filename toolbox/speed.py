"""Speed settings every method shares: mixed precision, channels_last and torch.compile.

One recipe section (``speed``) with the same keys for every method; ``resolve`` turns it into what
this device can do, and the result is recorded in run.json. None of it changes the method: on the
CPU ``auto`` means fp32, channels_last off and no compile.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Literal

from .recipes import Section

AMP = ("auto", "bf16", "fp16", "fp32")


class Speed(Section):
    """``amp``: auto = bf16 where the GPU computes it natively (compute capability >= 8), fp16 with a
    gradient scaler on older GPUs, fp32 on the CPU. ``channels_last``/``compile``: auto = on for CUDA."""

    amp: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool | Literal["auto"] = "auto"


@dataclass(frozen=True)
class Resolved:
    amp: str  # bf16 | fp16 | fp32
    channels_last: bool
    compile: bool
    device_type: str

    @property
    def scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        return self.amp == "fp16"

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "device_type"}

    def autocast(self):
        """A context for the forward passes (a no-op at fp32)."""
        if self.amp == "fp32":
            return contextlib.nullcontext()
        import torch

        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device_type, dtype=dtype)

    def grad_scaler(self):
        import torch

        return torch.amp.GradScaler(self.device_type, enabled=self.scaler)

    def layout(self, *modules) -> None:
        """channels_last memory format for 4-D activations (tensor cores prefer it)."""
        if self.channels_last:
            import torch

            for m in modules:
                m.to(memory_format=torch.channels_last)

    def maybe_compile(self, fn):
        if not self.compile:
            return fn
        import torch

        return torch.compile(fn)


def native_bf16(device) -> bool:
    """CUDA devices of compute capability 8.0 (Ampere) and newer multiply bf16 in hardware; older ones
    only emulate it (slower than fp32)."""
    import torch

    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def resolve(speed: Speed | None, device) -> Resolved:
    from .errors import UsageError

    speed = speed or Speed()
    cuda = device.type == "cuda"
    amp = speed.amp
    if amp == "auto":
        amp = ("bf16" if native_bf16(device) else "fp16") if cuda else "fp32"
    elif amp == "fp16" and not cuda:
        raise UsageError("speed.amp=fp16 needs a CUDA device (fp16 autocast on the CPU is slow and unscaled); "
                         "use bf16 or fp32 on the CPU")

    def on(value) -> bool:
        return cuda if value == "auto" else bool(value)

    return Resolved(amp=amp, channels_last=on(speed.channels_last), compile=on(speed.compile), device_type=device.type)
