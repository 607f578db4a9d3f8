"""iDLG and DLG against a transcription of PatrickZH/Improved-Deep-Leakage-from-Gradients (iDLG.py).

The reference, read and transcribed here in our own words: a sigmoid LeNet with every weight and
bias from U(-0.5, 0.5); the victim gradient is grad CE(net(x), y) over net.parameters() for one
image; iDLG's label is argmin over classes of the row sums of the last layer's weight gradient
(``original_dy_dx[-2]``); the objective is sum over parameters of ((g_dummy - g_victim) ** 2).sum();
LBFGS(lr=1) over the dummy image (DLG: over the image and a soft label, with the loss
-mean(sum(softmax(label) * log(softmax(pred))))); after every step the closure is evaluated once more
for the reported loss.
"""

import functools

import pytest
import torch
import torch.nn as nn
from toolbox_leakage.idlg import extract_label, reconstruct, victim_gradient
from toolbox_leakage.lenet import LeNetSigmoid

from toolbox import data
from toolbox.gradmatch import match_distance


class ReferenceLeNet(nn.Module):
    """iDLG.py's LeNet: three 5x5 sigmoid convolutions (strides 2, 2, 1, padding 2), then one linear layer."""

    def __init__(self, channel, hidden, num_classes):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channel, 12, kernel_size=5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1), nn.Sigmoid(),
        )
        self.fc = nn.Sequential(nn.Linear(hidden, num_classes))

    def forward(self, x):
        out = self.body(x)
        return self.fc(out.view(out.size(0), -1))


def reference_weights_init(net):
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data.uniform_(-0.5, 0.5)
            m.bias.data.uniform_(-0.5, 0.5)


def _pair(seed):
    """Our victim LeNet and the reference's, with the same U(-0.5, 0.5) weights (digits: hidden 12 * 2 * 2)."""
    torch.manual_seed(seed)
    ref = ReferenceLeNet(channel=1, hidden=48, num_classes=10)
    reference_weights_init(ref)
    ours = LeNetSigmoid(num_classes=10, in_channels=1, image_size=8)
    assert [p.shape for p in ours.parameters()] == [p.shape for p in ref.parameters()]
    with torch.no_grad():
        for a, b in zip(ours.parameters(), ref.parameters()):
            a.copy_(b)
    return ours, ref


def reference_victim_gradient(net, gt_data, gt_label):
    out = net(gt_data)
    dy_dx = torch.autograd.grad(nn.CrossEntropyLoss()(out, gt_label), net.parameters())
    return [g.detach().clone() for g in dy_dx]


def reference_label(original_dy_dx):
    return torch.argmin(torch.sum(original_dy_dx[-2], dim=-1), dim=-1).detach().reshape((1,))


def reference_grad_diff(net, dummy_data, original_dy_dx, label_pred=None, dummy_label=None):
    """The closure's objective (iDLG: CE on the extracted label; DLG: cross-entropy on softmax(dummy_label))."""
    pred = net(dummy_data)
    if label_pred is not None:
        dummy_loss = nn.CrossEntropyLoss()(pred, label_pred)
    else:
        dummy_loss = -torch.mean(torch.sum(torch.softmax(dummy_label, -1) * torch.log(torch.softmax(pred, -1)), dim=-1))
    dummy_dy_dx = torch.autograd.grad(dummy_loss, net.parameters(), create_graph=True)
    grad_diff = 0
    for gx, gy in zip(dummy_dy_dx, original_dy_dx):
        grad_diff += ((gx - gy) ** 2).sum()
    return grad_diff


def reference_attack(net, original_dy_dx, dummy_data, iterations, label_pred=None, dummy_label=None):
    """The reference's loop for ``iterations`` LBFGS steps (it also stops once the loss is below 1e-6)."""
    dummy_data = dummy_data.clone().requires_grad_(True)
    if dummy_label is not None:
        dummy_label = dummy_label.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([dummy_data] if dummy_label is None else [dummy_data, dummy_label], lr=1.0)

    def closure():
        optimizer.zero_grad()
        grad_diff = reference_grad_diff(net, dummy_data, original_dy_dx, label_pred, dummy_label)
        grad_diff.backward()
        return grad_diff

    losses = []
    for _ in range(iterations):
        optimizer.step(closure)
        losses.append(closure().item())
    return dummy_data.detach(), dummy_label, losses


@functools.cache
def _digits():
    return data.load("digits")


def _digit(i):
    """A real digits test image in [0, 1] (the reference feeds ToTensor() images), batch 1."""
    real = _digits()
    return real.test_x[i:i + 1].double(), real.test_y[i:i + 1]


def test_our_victim_lenet_is_the_reference_lenet():
    ours, ref = _pair(0)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(ours(x), ref(x))
    # and the initialisation is the reference's U(-0.5, 0.5) on every weight and bias
    fresh = LeNetSigmoid(num_classes=10, in_channels=1, image_size=8)
    values = torch.cat([p.detach().flatten() for p in fresh.parameters()])
    assert values.min() >= -0.5 and values.max() <= 0.5 and values.abs().mean() > 0.2


def test_label_rule_equals_the_references_on_real_digits_at_batch_one():
    for i in range(30):
        ours, ref = _pair(100 + i)  # the reference draws a fresh net for every experiment
        ours, ref = ours.double(), ref.double()
        x, y = _digit(i)
        victim = victim_gradient(ours, x, y, 10)
        ref_grads = reference_victim_gradient(ref, x, y)
        assert max((a - b).abs().max().item() for a, b in zip(victim.grads, ref_grads)) == 0.0
        assert victim.label_weight_index == len(ref_grads) - 2  # the reference's original_dy_dx[-2]
        assert extract_label(victim) == reference_label(ref_grads).item() == y.item()


@pytest.fixture
def float64():
    """reconstruct draws its start in the default dtype: float64, so that only the formulas can differ
    (in float32, DLG's log(softmax) and cross_entropy's log_softmax part by 4e-4 after 3 steps)."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


def test_idlg_objective_and_lbfgs_steps_equal_the_references(float64):
    ours, ref = _pair(7)
    ours, ref = ours.double(), ref.double()
    x, y = _digit(3)
    victim = victim_gradient(ours, x, y, 10)
    ref_grads = reference_victim_gradient(ref, x, y)
    label = extract_label(victim)

    # the objective on a fixed dummy image
    dummy = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    d = dummy.clone().requires_grad_(True)
    our_grads = torch.autograd.grad(nn.functional.cross_entropy(ours(d), torch.tensor([label])), list(ours.parameters()),
                                    create_graph=True)
    ours_value = match_distance(victim.grads, our_grads, kind="mse")
    ref_value = reference_grad_diff(ref, dummy.clone().requires_grad_(True), ref_grads, label_pred=reference_label(ref_grads))
    assert torch.allclose(ours_value, ref_value, rtol=1e-12, atol=0)

    # LBFGS steps from the same N(0, 1) start: the same images and losses (ours stops as soon as the
    # loss is below 1e-6; the reference tests that only every Iteration / 30 steps)
    start = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(11))
    rec = reconstruct(ours, victim, (1, 8, 8), 10, label=label, iters=4, generator=torch.Generator().manual_seed(11))
    assert rec.steps == 4 or rec.loss < 1e-6
    image, _, losses = reference_attack(ref, ref_grads, start, rec.steps, label_pred=reference_label(ref_grads))
    assert rec.label == y.item() and losses[-1] < losses[0] * 1e-3
    assert torch.allclose(rec.image, image, rtol=0, atol=1e-12), (rec.image - image).abs().max().item()
    assert abs(rec.loss - losses[-1]) <= 1e-9 * losses[-1]


def test_dlg_objective_and_lbfgs_steps_equal_the_references(float64):
    ours, ref = _pair(8)
    ours, ref = ours.double(), ref.double()
    x, y = _digit(5)
    victim = victim_gradient(ours, x, y, 10)
    ref_grads = reference_victim_gradient(ref, x, y)
    g = torch.Generator().manual_seed(13)  # the reference draws the image, then the soft label
    start = torch.randn((1, 1, 8, 8), generator=g)
    soft = torch.randn((1, 10), generator=g)

    # the objective and its gradient in the image and the soft label, at the start
    d, s = start.clone().requires_grad_(True), soft.clone().requires_grad_(True)
    our_grads = torch.autograd.grad(nn.functional.cross_entropy(ours(d), torch.softmax(s, -1)), list(ours.parameters()),
                                    create_graph=True)
    ours_value = match_distance(victim.grads, our_grads, kind="mse")
    rd, rs = start.clone().requires_grad_(True), soft.clone().requires_grad_(True)
    ref_value = reference_grad_diff(ref, rd, ref_grads, dummy_label=rs)
    assert torch.allclose(ours_value, ref_value, rtol=1e-12, atol=0)
    for a, b in zip(torch.autograd.grad(ours_value, [d, s]), torch.autograd.grad(ref_value, [rd, rs])):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)

    # two LBFGS steps (40 closure calls): cross_entropy's log_softmax and the reference's log(softmax)
    # round differently, and LBFGS amplifies that to ~1e-8 (measured 9e-9), far below a formula change
    rec = reconstruct(ours, victim, (1, 8, 8), 10, label=None, iters=2, generator=torch.Generator().manual_seed(13))
    image, label, losses = reference_attack(ref, ref_grads, start, 2, dummy_label=soft)
    assert rec.steps == 2 and losses[-1] < losses[0]
    assert torch.allclose(rec.image, image, rtol=0, atol=1e-7), (rec.image - image).abs().max().item()
    assert abs(rec.loss - losses[-1]) <= 1e-7 * losses[-1]
    assert rec.label == int(label.detach().argmax())  # the reference reports argmax of the optimised label
