"""Speed settings every method shares: mixed precision, channels_last and torch.compile.

One recipe section (``speed``) with the same keys for every method; ``resolve`` turns it into what
this device can do, and the result is recorded in run.json. None of it changes the method: on the
CPU ``auto`` means fp32, channels_last off and no compile.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

from .recipes import Speed  # noqa: F401  (the section lives with the other recipe types; imported from here too)


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


def as_written(device_type: str = "cpu") -> Resolved:
    """fp32, the default memory layout, no compile: the code runs exactly as written (the CPU's auto)."""
    return Resolved(amp="fp32", channels_last=False, compile=False, device_type=device_type)


def native_bf16(device) -> bool:
    """CUDA devices of compute capability 8.0 (Ampere) and newer multiply bf16 in hardware; older ones
    only emulate it (slower than fp32)."""
    import torch

    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def refuse_inexact(speed: Speed, why: str) -> Speed:
    """``speed`` unless it asks for anything but fp32 without compile or layout change, which a method
    that must compute exactly refuses in one line saying ``why`` (also usable as a recipe validator,
    so the refusal comes before a run directory exists)."""
    from .errors import UsageError

    asked = {k: v for k, v in speed.model_dump().items() if v not in ("auto", False, "fp32")}
    if asked:
        keys = ", ".join(f"speed.{k}={v}" for k, v in asked.items())
        raise UsageError(f"{keys} does not apply here: this method runs in fp32 as written, since {why}; "
                         "leave the speed section at auto")
    return speed


def resolve(speed: Speed | None, device, *, exact: str | None = None) -> Resolved:
    """What ``speed`` means on ``device``. ``exact``: why the method must run in fp32 without compile
    or layout changes (e.g. "its hypergradients are forward-mode derivatives"); then auto means that
    and any other explicit value is refused, naming the reason."""
    from .errors import UsageError

    speed = speed or Speed()
    if exact is not None:
        refuse_inexact(speed, exact)
        return as_written(device.type)
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
