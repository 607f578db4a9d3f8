"""The branches condensation takes on a GPU, chosen by recipe keys and run here on the CPU: the stacked
vs sequential evaluator (batch norm falls back instead of failing), vmapped vs looped gradient
matching, and augmentation without host reads; and a count of host reads in one DC and one DSA
iteration on the GPU's path."""

from dataclasses import replace

import pytest
import torch
from toolbox_condense import augment
from toolbox_condense.condensation import protocol_for
from toolbox_condense.dc import Matcher, classes_batched, match_step
from toolbox_condense.evaluator import Protocol, accuracies_on, model_seed, train_models, use_stacked
from toolbox_condense.recipe import CondenseRecipe
from toolbox_condense.sampling import ClassIndex

from toolbox.data import load
from toolbox.models.convnet import ConvNet


@pytest.fixture(scope="module")
def digits():
    data = load("digits")
    return data, data.normalize(data.train_x), data.train_y


def test_eval_stacked_key_reaches_the_protocol_and_picks_the_path():
    assert protocol_for(CondenseRecipe(), "digits").stacked == "auto"
    assert protocol_for(CondenseRecipe(eval={"stacked": True}), "digits").stacked is True
    with pytest.raises(ValueError):
        CondenseRecipe(eval={"stacked": "sometimes"})
    net, bn = ConvNet(10, 1, 8, width=8), ConvNet(10, 1, 8, width=8, norm="batchnorm")
    small, large = torch.zeros(10, 1, 8, 8), torch.zeros(100, 1, 8, 8)
    p = Protocol()
    # auto: today's choice (stacked on any GPU, on the CPU only for small steps)
    assert use_stacked(net, small, p, "cpu") and not use_stacked(net, large, p, "cpu")
    assert use_stacked(net, large, p, "cuda")
    assert use_stacked(net, large, p, "cpu", True) and not use_stacked(net, small, p, "cuda", False)
    # batch norm, or a reduced precision, trains one model at a time whatever was asked
    assert not any(use_stacked(bn, small, p, d, s) for d in ("cpu", "cuda") for s in ("auto", True))
    assert not any(use_stacked(net, small, p, d, s, amp) for d in ("cpu", "cuda") for s in ("auto", True)
                   for amp in ("bf16", "fp16"))


def test_batchnorm_evaluator_asked_to_stack_trains_like_the_sequential_path(digits):
    data, x, y = digits
    images, labels = x[:30], y[:30]
    build = lambda: ConvNet(10, 1, 8, width=8, norm="batchnorm")  # noqa: E731
    seeds = [model_seed(0, i) for i in range(2)]
    protocol = Protocol(models=2, epochs=2, batch_size=16, augment="color_crop", stacked=True)
    forward, params = train_models(build, images, labels, protocol, seeds, "cpu")
    f_seq, p_seq = train_models(build, images, labels, replace(protocol, stacked=False), seeds, "cpu")
    for k in params:
        assert torch.equal(params[k], p_seq[k]), k
    test_x = data.normalize(data.test_x[:200])
    assert torch.equal(forward(test_x), f_seq(test_x))
    assert accuracies_on(forward, test_x, data.test_y[:200]).shape == (2,)


def test_class_batching_key_picks_vmap_on_cuda_and_loop_on_the_cpu():
    assert not classes_batched("auto", "cpu") and classes_batched("auto", "cuda")
    assert classes_batched("vmap", "cpu") and not classes_batched("loop", torch.device("cuda", 0))


def _matcher(x, y, *, batched, families, outer=2, inner=2, dtype=torch.float64):
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    return Matcher(lambda: ConvNet(10, 1, 8, width=8).to(dtype), x.to(dtype), ClassIndex(y, 10), 8, outer, inner,
                   0.01, 8, "ours", families, batched, *gens)


@pytest.mark.parametrize("families", [None, augment.parse_strategy("color_crop_cutout_scale_rotate")], ids=["dc", "dsa"])
def test_vmap_and_loop_gradient_matching_agree_over_a_whole_iteration(digits, families):
    _, x, y = digits
    syn0 = torch.randn(10, 2, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    results = []
    for batched in (True, False):
        syn = syn0.clone().requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
        loss = match_step(syn, opt, _matcher(x, y, batched=batched, families=families))
        results.append((syn.detach(), loss))
    (a, la), (b, lb) = results
    assert float((a - syn0).abs().max()) > 1e-3  # the images moved: the comparison says something
    assert torch.allclose(a, b, rtol=0, atol=1e-9) and la == pytest.approx(lb, rel=1e-9)


@pytest.mark.parametrize("one_family", [False, True])
def test_augmentation_without_host_reads_equals_the_per_family_path(one_family):
    families = augment.parse_strategy("color_crop_cutout_flip_scale_rotate")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(24, 3, 8, 8, generator=g, dtype=torch.float64).requires_grad_(True)
    p = augment.draw(24, families, 8, g, one_family=one_family)
    assert one_family or len(p.families_present()) > 1
    weights = torch.randn(24, 3, 8, 8, generator=g, dtype=torch.float64)
    read = augment.apply(x, p, families)
    (grad_read,) = torch.autograd.grad((read * weights).sum(), x)
    unread = augment.apply_every_family(x, p, families)
    (grad_unread,) = torch.autograd.grad((unread * weights).sum(), x)
    assert torch.allclose(read, unread, rtol=0, atol=1e-12) and unread.is_contiguous()
    assert torch.allclose(grad_read, grad_unread, rtol=0, atol=1e-12)


READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


def _count_reads(monkeypatch) -> list:
    calls = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


@pytest.mark.parametrize("families", [None, augment.parse_strategy("color_crop_cutout_scale_rotate")], ids=["dc", "dsa"])
@pytest.mark.parametrize("batched", [True, False], ids=["vmap", "loop"])
def test_one_iteration_reads_the_host_twice_however_many_steps_it_takes(digits, monkeypatch, families, batched):
    """On a GPU a read of a device tensor waits for the device. An iteration of 3 outer steps and
    2 x 3 inner steps (on the GPU's augmentation path) makes exactly two reads: the new network's
    seed (from a CPU generator) and the iteration's mean loss; none per outer or inner step."""
    _, x, y = digits
    monkeypatch.setattr(augment, "host_read_is_free", lambda p: False)  # the path a GPU takes
    m = _matcher(x, y, batched=batched, families=families, outer=3, inner=2, dtype=torch.float32)
    syn = torch.randn(10, 2, 1, 8, 8, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    calls = _count_reads(monkeypatch)
    match_step(syn, opt, m)
    assert sorted(calls) == ["__float__", "__int__"], calls


@pytest.mark.parametrize("stacked", [True, False], ids=["asked-to-stack", "one-by-one"])
def test_condensing_in_bf16_records_it_and_trains_the_evaluator_and_dm_in_bf16(tmp_path, monkeypatch, stacked):
    """bf16 reaches DM's embeddings and the evaluator's training passes; asked to stack, the evaluator
    trains the models one after another instead (autocast does not reach into vmap)."""
    import json

    from click.testing import CliRunner
    from toolbox_condense import dm, evaluator

    from toolbox import plugins
    from toolbox.cli import cli

    seen = {"evaluator": set(), "dm": set()}
    losses = {"stacked": evaluator.stacked_cross_entropy, "one": evaluator.cross_entropy}

    def watched(original):
        def loss(forward, x, y):
            def forward_seen(v):
                logits = forward(v)
                seen["evaluator"].add(logits.dtype)
                return logits
            return original(forward_seen, x, y)
        return loss

    monkeypatch.setattr(evaluator, "stacked_cross_entropy", watched(losses["stacked"]))
    monkeypatch.setattr(evaluator, "cross_entropy", watched(losses["one"]))
    fresh = dm.fresh_network

    def hooked(build, generator):
        net = fresh(build, generator)
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(lambda mod, inputs, out: seen["dm"].add(out.dtype))
        return net

    monkeypatch.setattr(dm, "fresh_network", hooked)
    plugins.reset()
    out = tmp_path / "dm"
    cpu = ["--threads", "1", "--device", "cpu"]
    result = CliRunner().invoke(cli, ["condense", "digits", "--method", "dm", "--out", str(out), "-o", "speed.amp=bf16",
                                      "-o", "iterations=10", "-o", "eval.epochs=10", "-o", "eval.models=2",
                                      "-o", f"eval.stacked={str(stacked).lower()}", *cpu])
    assert result.exit_code == 0, result.output
    records = json.loads((out / "run.json").read_text())["records"]
    assert records["speed"] == {"amp": "bf16", "channels_last": False, "compile": False}
    assert seen == {"evaluator": {torch.bfloat16}, "dm": {torch.bfloat16}}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"] > 0.5  # ten classes: chance is 0.1
    if stacked:
        return
    # `toolbox evaluate` takes the run's speed section, resolved the same way here: the same numbers
    result = CliRunner().invoke(cli, ["evaluate", str(out), "--json", *cpu])
    plugins.reset()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["protocol"]["speed"] == records["speed"]
    assert report["metrics"]["accuracy"] == summary["accuracy"]
