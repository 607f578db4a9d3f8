"""ViT with Shifted Patch Tokenization and Locality Self-Attention (Lee, Lee & Song 2021)."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from toolbox.models.vit import Attention, ShiftedPatchTokenization, ViT, shift_diagonally


def test_lsa_gives_no_attention_to_the_token_itself_and_learns_a_per_head_temperature():
    torch.manual_seed(0)
    x = torch.randn(3, 17, 32)
    lsa = Attention(32, heads=4, dim_head=8, lsa=True)
    attn, _ = lsa.attention_weights(x)
    assert attn.shape == (3, 4, 17, 17)
    assert torch.diagonal(attn, dim1=-2, dim2=-1).abs().max() == 0
    assert torch.allclose(attn.sum(-1), torch.ones(3, 4, 17))
    plain_attn, _ = Attention(32, heads=4, dim_head=8).attention_weights(x)
    assert torch.diagonal(plain_attn, dim1=-2, dim2=-1).min() > 0  # without LSA a token attends to itself
    # the temperature starts at dim_head^-0.5, one per head, and is trained
    assert isinstance(lsa.scale, torch.nn.Parameter) and torch.allclose(lsa.scale, torch.full((4,), 8 ** -0.5))
    lsa(x).square().sum().backward()
    assert lsa.scale.grad is not None and lsa.scale.grad.abs().min() > 0


@pytest.mark.parametrize("lsa", [False, True])
def test_fused_attention_equals_the_explicit_softmax_formula(lsa):
    """forward goes through scaled_dot_product_attention; it must equal softmax(q k^T * scale, masked) v,
    output and gradients (the per-head temperature included)."""
    torch.manual_seed(0)
    attention = Attention(32, heads=4, dim_head=8, lsa=lsa)
    if lsa:
        with torch.no_grad():
            attention.scale.mul_(torch.tensor([0.5, 1.0, 2.0, 3.0]))  # distinct per-head temperatures
    x = torch.randn(3, 17, 32, requires_grad=True)
    fused = attention(x)
    # the hand-written attention the model used before (logits scaled per head, diagonal filled for LSA)
    q, k, v = attention.to_qkv(x).view(3, 17, 3, 4, 8).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-1, -2)) * attention.scale.view(1, -1, 1, 1)
    if lsa:
        logits = logits.masked_fill(torch.eye(17, dtype=torch.bool), torch.finfo(logits.dtype).min)
    explicit = attention.to_out((logits.softmax(-1) @ v).transpose(1, 2).reshape(3, 17, -1))
    attn, _ = attention.attention_weights(x)
    assert torch.allclose(attn, logits.softmax(-1), atol=1e-6)
    assert torch.allclose(fused, explicit, atol=1e-6, rtol=1e-5)
    params = [x, *attention.parameters()]
    g_fused = torch.autograd.grad(fused.square().sum(), params)
    g_explicit = torch.autograd.grad(explicit.square().sum(), params)
    for a, b in zip(g_fused, g_explicit):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_spt_concatenates_the_image_with_its_four_diagonal_shifts():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    s = shift_diagonally(x, 1)
    assert s.shape == (2, 15, 8, 8)
    assert torch.equal(s[:, :3], x)
    padded = F.pad(x, (1, 1, 1, 1))
    # each copy is the image moved one pixel along a diagonal, zero where it came from outside
    for copy, (dy, dx) in enumerate(((0, 0), (0, 2), (2, 0), (2, 2)), start=1):
        assert torch.equal(s[:, 3 * copy:3 * copy + 3], padded[:, :, dy:dy + 8, dx:dx + 8])
    assert torch.equal(s[:, 3, 1:, 1:], x[:, 0, :-1, :-1]) and (s[:, 3, 0] == 0).all()
    tokens = ShiftedPatchTokenization(3, dim=48, patch=2)(x)
    assert tokens.shape == (2, 16, 48)  # (8/2)^2 patches, each 5*3*2*2 = 60 values -> LayerNorm -> 48


@pytest.mark.parametrize("spt,lsa", [(False, False), (True, False), (False, True), (True, True)])
def test_vit_variants_return_logits_for_any_input_size(spt, lsa):
    digits = ViT(10, 1, 8, patch_size=2, dim=32, depth=2, heads=2, dim_head=8, mlp_dim=64, spt=spt, lsa=lsa)
    assert digits(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert digits.tokens(torch.randn(5, 1, 8, 8)).shape == (5, 17, 32)
    cifar = ViT(100, 3, 32, patch_size=4, dim=32, depth=1, heads=2, dim_head=8, mlp_dim=64, spt=spt, lsa=lsa)
    assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def _small_data_accuracy(arch_name: str, seed: int, digits) -> float:
    """Train on 300 digits for 8 epochs (AdamW, one-cycle): a budget where tokenization matters."""
    from toolbox.registry import current

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(digits.train_y), generator=g)[:300]
    x, y = digits.normalize(digits.train_x[idx]), digits.train_y[idx]
    torch.manual_seed(seed)
    model = current().architecture(arch_name)(num_classes=10, in_channels=1, image_size=8)
    epochs, batch = 8, 64
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=epochs * -(-300 // batch))
    for _ in range(epochs):
        order = torch.randperm(300, generator=g)
        for i in range(0, 300, batch):
            b = order[i:i + batch]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        return (model(digits.normalize(digits.test_x)).argmax(1) == digits.test_y).float().mean().item()


@pytest.mark.slow
def test_shifted_patch_tokens_make_a_vit_learn_from_300_digits():
    from toolbox import data

    digits = data.load("digits")
    plain = [_small_data_accuracy("vit-tiny", s, digits) for s in range(3)]
    spt = [_small_data_accuracy("vit-spt-tiny", s, digits) for s in range(3)]
    # measured: plain 0.389/0.490/0.537, SPT 0.645/0.676/0.771 (spec's prototype: 0.642 -> 0.920)
    assert sum(spt) / 3 - sum(plain) / 3 >= 0.10, (plain, spt)


def test_supervised_trains_and_reloads_an_spt_lsa_vit(tmp_path):
    from toolbox.cli import cli

    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "supervised", "--arch", "vit-spt-lsa-tiny", "--dataset", "digits",
                                      "--epochs", "4", "--out", str(out), "--threads", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "arch: vit-spt-lsa-tiny" in (out / "recipe.yaml").read_text()
    assert "lr: 0.05" in (out / "recipe.yaml").read_text()  # the ViT digits recipe was chosen, not the WRN one
    report = CliRunner().invoke(cli, ["evaluate", str(out), "--json", "--device", "cpu"])
    assert report.exit_code == 0, report.output
    metrics = json.loads(report.output)["metrics"]
    assert metrics["accuracy"] > 0.8  # 4 epochs on the full digits train split; chance is 0.1


def test_gradients_of_gradients_go_through_the_math_kernel():
    """The fused attention kernels have no double backward; second_order() (used by the leakage audit
    and Hessian-vector products) makes a ViT differentiable twice."""
    from toolbox.second_order import second_order

    torch.manual_seed(0)
    model = ViT(num_classes=3, in_channels=1, image_size=8, patch_size=2, dim=16, depth=1, heads=2, dim_head=8,
                mlp_dim=16, lsa=True)
    x = torch.randn(2, 1, 8, 8)
    with second_order():
        grads = torch.autograd.grad(F.cross_entropy(model(x), torch.tensor([0, 2])), list(model.parameters()),
                                    create_graph=True)
        hvp = torch.autograd.grad(sum(g.square().sum() for g in grads), list(model.parameters()), allow_unused=True)
    assert any(h is not None and h.abs().sum() > 0 for h in hvp)
