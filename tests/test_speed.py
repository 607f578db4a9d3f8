"""The shared speed settings: what `auto` means on each kind of device, and what each switch does."""

import pytest
import torch

from toolbox.errors import UsageError
from toolbox.speed import Speed, resolve


def _cuda(monkeypatch, major):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
    return torch.device("cuda:0")


@pytest.mark.parametrize("major, amp", [(9, "bf16"), (8, "bf16"), (7, "fp16"), (6, "fp16")])
def test_auto_precision_is_bf16_only_where_the_gpu_has_it_natively(monkeypatch, major, amp):
    resolved = resolve(Speed(), _cuda(monkeypatch, major))
    assert resolved.amp == amp and resolved.scaler == (amp == "fp16")
    assert resolved.channels_last and resolved.compile


def test_auto_is_plain_fp32_on_the_cpu_and_fp16_is_refused_there():
    resolved = resolve(Speed(), torch.device("cpu"))
    assert (resolved.amp, resolved.channels_last, resolved.compile) == ("fp32", False, False)
    assert resolved.record() == {"amp": "fp32", "channels_last": False, "compile": False}
    with pytest.raises(UsageError, match="speed.amp=fp16 needs a CUDA device"):
        resolve(Speed(amp="fp16"), torch.device("cpu"))


def test_bf16_autocast_runs_on_the_cpu_and_changes_the_matmul_dtype():
    resolved = resolve(Speed(amp="bf16"), torch.device("cpu"))
    layer = torch.nn.Linear(4, 3)
    with resolved.autocast():
        out = layer(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    with resolve(Speed(amp="fp32"), torch.device("cpu")).autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.float32
    assert not resolved.grad_scaler().is_enabled()


def test_channels_last_switch_changes_the_memory_format():
    conv = torch.nn.Conv2d(3, 8, 3)
    resolve(Speed(channels_last=True), torch.device("cpu")).layout(conv)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_an_exact_method_resolves_auto_to_fp32_and_refuses_other_settings_naming_why(monkeypatch):
    cuda = _cuda(monkeypatch, 9)
    resolved = resolve(Speed(), cuda, exact="its derivatives are forward-mode")
    assert (resolved.amp, resolved.channels_last, resolved.compile) == ("fp32", False, False)
    assert resolve(Speed(amp="fp32", compile=False), cuda, exact="x").amp == "fp32"
    with pytest.raises(UsageError, match=r"speed.amp=bf16, speed.compile=True does not apply here.*forward-mode"):
        resolve(Speed(amp="bf16", compile=True), cuda, exact="its derivatives are forward-mode")


def test_every_method_recipe_has_the_same_speed_section():
    """One section, the same keys for every method (the base recipe holds it)."""
    from toolbox.registry import current
    from toolbox.registry import resolve as resolve_schema

    with_recipes = [m for m in current().methods.values() if m.schema]  # the leakage audit takes options only
    assert len(with_recipes) >= 6
    for method in with_recipes:
        schema = resolve_schema(method.schema)
        assert schema.model_fields["speed"].annotation is Speed, method.name
        recipe = schema.model_validate({"method": method.name, "speed": {"amp": "fp32", "compile": False}})
        assert recipe.speed == Speed(amp="fp32", compile=False)
