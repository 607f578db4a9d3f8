"""toolbox.sam: the perturbations computed two ways (closed form vs what they must satisfy), the
two-pass step against a hand-made one, batch-norm statistics, label noise and the Hessian metric."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from toolbox.sam import SAM, frozen_bn_stats


def _model_with_grads(seed=0, scale=1.0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    (F.cross_entropy(model(x), y) * scale).backward()
    return model, x, y


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def test_fisher_sam_with_eta_zero_is_sam_to_1e_6():
    model, _, _ = _model_with_grads()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    sam = _flat(SAM(model.parameters(), base, rho=0.07).perturbation())
    fisher = _flat(SAM(model.parameters(), base, fisher=True, eta=0.0, gamma=0.07).perturbation())
    assert torch.allclose(fisher, sam, atol=1e-6, rtol=0)
    assert sam.norm().item() == pytest.approx(0.07, rel=1e-5)
    # gamma defaults to rho
    default = _flat(SAM(model.parameters(), base, rho=0.07, fisher=True, eta=0.0).perturbation())
    assert torch.allclose(default, sam, atol=1e-6, rtol=0)


def test_fisher_sam_maximises_the_first_order_gain_on_its_ellipsoid():
    """e = gamma F^-1 g / sqrt(g^T F^-1 g) lies on e^T F e = gamma^2 and beats every other point there."""
    model, _, _ = _model_with_grads(scale=30.0)  # large gradients, so F = diag(1 + eta g^2) is far from I
    g = _flat(p.grad for p in model.parameters())
    eta, gamma = 10.0, 0.3
    e = _flat(SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), fisher=True, eta=eta,
                  gamma=gamma).perturbation())
    f = 1 + eta * g * g
    assert (e * f * e).sum().item() == pytest.approx(gamma ** 2, rel=1e-4)
    others = torch.randn(2000, len(g), generator=torch.Generator().manual_seed(1))
    others = gamma * others / torch.sqrt((others * others * f).sum(1, keepdim=True))  # onto the ellipsoid
    assert (others @ g).max() < (e @ g)
    # not SAM's direction here: the Fisher metric shrinks the steps along large gradients
    sam = _flat(SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), rho=gamma).perturbation())
    assert torch.nn.functional.cosine_similarity(e, sam, dim=0) < 0.99


def test_asam_radius_is_rho_in_weight_scaled_coordinates():
    model, _, _ = _model_with_grads()
    e = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5, adaptive=True).perturbation()
    scaled = _flat(ei / p.detach().abs() for ei, p in zip(e, model.parameters()))
    assert scaled.norm().item() == pytest.approx(0.5, rel=1e-4)


def test_sam_step_is_sgd_with_the_gradient_at_the_perturbed_weights():
    model, x, y = _model_with_grads()
    params = list(model.parameters())
    w = [p.detach().clone() for p in params]
    g = [p.grad.clone() for p in params]
    e = [0.05 * gi / _flat(g).norm() for gi in g]
    # by hand: gradient at w + e on a copy, then one SGD step from w
    shadow = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    with torch.no_grad():
        for s, wi, ei in zip(shadow.parameters(), w, e):
            s.copy_(wi + ei)
    g_at = torch.autograd.grad(F.cross_entropy(shadow(x), y), list(shadow.parameters()))
    expected = [wi - 0.1 * gi for wi, gi in zip(w, g_at)]

    sam = SAM(params, torch.optim.SGD(params, lr=0.1), rho=0.05)

    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    sam.step(closure)
    for p, want in zip(params, expected):
        assert torch.allclose(p.detach(), want, atol=1e-6)


def test_second_pass_leaves_batch_norm_statistics_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    bn = model[1]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sam = SAM(model.parameters(), opt, rho=0.5)

    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    before_mean = bn.running_mean.clone()
    sam.step(closure, model)
    once = bn.running_mean.clone()
    assert not torch.equal(once, before_mean) and int(bn.num_batches_tracked) == 1  # the first pass counted
    # and the statistics equal what the first forward alone produces
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    ref(x)
    assert torch.allclose(once, ref[1].running_mean) and torch.allclose(bn.running_var, ref[1].running_var)
    with frozen_bn_stats(model):
        model(x * 3)
    assert torch.equal(bn.running_mean, once) and int(bn.num_batches_tracked) == 1


def test_sam_rejects_conflicting_or_foreign_settings():
    model, _, _ = _model_with_grads()
    with pytest.raises(ValueError, match="not both"):
        SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), adaptive=True, fisher=True)
    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="base_optimizer"):
        SAM(model.parameters(), torch.optim.SGD(other.parameters(), lr=0.1))


def test_symmetric_label_noise_flips_exactly_the_fraction_to_other_classes():
    from toolbox_sam.noise import symmetric_label_noise

    labels = torch.arange(1000) % 10
    noisy = symmetric_label_noise(labels, 10, 0.2, seed=3)
    assert (noisy != labels).sum().item() == 200
    assert torch.equal(noisy, symmetric_label_noise(labels, 10, 0.2, seed=3))
    assert not torch.equal(noisy, symmetric_label_noise(labels, 10, 0.2, seed=4))
    changed = noisy[noisy != labels]
    assert torch.bincount(changed, minlength=10).min() > 5  # every class receives flipped labels


def test_power_iteration_finds_the_exact_top_hessian_eigenvalue():
    """Hessian-vector products + power iteration vs the full Hessian's eigenvalues."""
    from toolbox_sam.hessian import top_eigenvalue
    from torch.func import functional_call

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3))
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(w):
        chunks, i = {}, 0
        for n, s in zip(names, shapes):
            chunks[n] = w[i:i + s.numel()].view(s)
            i += s.numel()
        return F.cross_entropy(functional_call(model, chunks, (x,)), y)

    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat))
    exact = eig[eig.abs().argmax()].item()
    value, used = top_eigenvalue(model, x, y, iters=2000, tol=1e-9, batch_size=16)  # batched HVPs sum right
    assert value == pytest.approx(exact, rel=1e-4) and used < 2000
