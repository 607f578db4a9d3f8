"""Building blocks of dataset condensation on digits: gradient distance, batched per-class
gradients, Siamese augmentation, per-class sampling, the batched evaluator, and the selection rules
of the coreset baselines."""

import pytest
import torch
from toolbox_condense import augment
from toolbox_condense.baselines import herding, kcenter
from toolbox_condense.evaluator import Protocol, accuracies_on, model_seed, train_models
from toolbox_condense.matching import class_match_loss, match_loss_vmap
from toolbox_condense.sampling import ClassIndex

from toolbox.data import load
from toolbox.gradmatch import match_distance
from toolbox.models.convnet import ConvNet


@pytest.fixture(scope="module")
def digits():
    data = load("digits")
    return data, data.normalize(data.train_x), data.train_y


def test_distance_ignores_one_dimensional_parameters():
    g_real = [torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(10, 8)]
    g_syn = [torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(10, 8)]
    base = match_distance(g_real, g_syn)
    g_syn[1] = torch.randn(4) * 100  # a bias / norm scale: must not count
    assert torch.equal(match_distance(g_real, g_syn), base)
    assert float(match_distance(g_real, g_real)) == pytest.approx(0.0, abs=1e-4)
    # rows of the conv weight are compared separately: 4 rows, each at most 2
    assert float(match_distance([g_real[0]], [-g_real[0]])) == pytest.approx(8.0, abs=1e-4)


def test_sampling_draws_each_class_without_replacement(digits):
    _, _, y = digits
    ci = ClassIndex(y, 10)
    idx, mask = ci.sample(256, torch.Generator().manual_seed(0))
    assert torch.equal(mask.sum(1), torch.bincount(y))  # 256 > every class: all of them, once
    for c in range(10):
        chosen = idx[c][mask[c]]
        assert (y[chosen] == c).all() and chosen.unique().numel() == chosen.numel()
    idx5, mask5 = ci.sample(5, torch.Generator().manual_seed(0))
    assert idx5.shape == (10, 5) and mask5.all()


def test_batched_class_gradients_equal_the_per_class_loop(digits):
    _, x, y = digits
    torch.manual_seed(0)
    net = ConvNet(10, 1, 8)
    idx, mask = ClassIndex(y, 10).sample(64, torch.Generator().manual_seed(1))
    real_x, real_y = x[idx], torch.arange(10)[:, None].expand_as(idx)
    syn = torch.randn(10, 2, 1, 8, 8, requires_grad=True)
    syn_y = torch.arange(10)[:, None].expand(10, 2)
    batched = match_loss_vmap(net, real_x, real_y, mask.float(), syn, syn_y)
    batched.backward()
    g_batched, syn.grad = syn.grad.clone(), None
    looped = sum(class_match_loss(net, real_x[c][mask[c]], real_y[c][mask[c]], syn[c], syn_y[c]) for c in range(10))
    looped.backward()
    assert float(batched.detach()) == pytest.approx(float(looped.detach()), rel=1e-5)
    assert torch.allclose(g_batched, syn.grad, rtol=1e-3, atol=1e-4 * float(syn.grad.abs().max()))


def test_siamese_augmentation_shares_one_transformation_per_group(digits):
    _, x, _ = digits
    fams = augment.parse_strategy("color_crop_cutout_flip_scale_rotate")
    draws = augment.draw(3, fams, 8, torch.Generator().manual_seed(3))
    real, syn = x[:3 * 4], x[:3 * 4].view(3, 4, 1, 8, 8)[:, :1].flatten(0, 1)
    real_out = augment.apply(real, draws.repeat(4)).view(3, 4, 1, 8, 8)
    syn_out = augment.apply(syn, draws.repeat(1))
    # the same image in the real and the synthetic batch of a class comes out identical
    assert torch.allclose(real_out[:, 0], syn_out, atol=1e-6)
    rep = draws.repeat(4)
    for field in ("family", "brightness", "shift_x", "angle", "flip"):
        assert (getattr(rep, field).view(3, 4) == getattr(draws, field)[:, None]).all()


def test_augmentation_families_do_what_they_say():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    base = dict(brightness=torch.tensor([0.5]), saturation=torch.tensor([0.5]), contrast=torch.tensor([0.5]),
                shift_x=torch.tensor([1]), shift_y=torch.tensor([0]), cut_x=torch.tensor([0]), cut_y=torch.tensor([0]),
                flip=torch.tensor([True]), sx=torch.tensor([1.0]), sy=torch.tensor([1.0]), angle=torch.tensor([0.0]))
    p = lambda fam: augment.Params(family=torch.tensor([augment.FAMILIES.index(fam)]), **base)  # noqa: E731
    assert torch.equal(augment.apply(x, p("color")), x)  # neutral colour parameters
    crop = augment.apply(x, p("crop"))
    assert torch.equal(crop[0, 0, :7], x[0, 0, 1:]) and (crop[0, 0, 7] == 0).all()
    assert torch.equal(augment.apply(x, p("flip")), x.flip(3))
    assert torch.allclose(augment.apply(x, p("scale")), x, atol=1e-4)
    cut = augment.apply(x, p("cutout"))
    assert int((cut == 0).sum()) == 4 and cut[0, 0, 2, 2] == x[0, 0, 2, 2]  # 4x4 square centred at 0 -> 2x2 inside
    assert augment.default_strategy("digits") == "color_crop_cutout_scale_rotate"
    assert "flip" in augment.default_strategy("cifar10")
    with pytest.raises(ValueError, match="unknown part"):
        augment.parse_strategy("color_zoom")


def test_batched_evaluator_equals_models_trained_one_at_a_time(digits):
    data, x, y = digits
    images, labels = x[:40], y[:40]
    protocol = Protocol(models=3, epochs=4, batch_size=16, augment="color_crop_cutout_scale_rotate")
    build = lambda: ConvNet(10, 1, 8, width=16)  # noqa: E731
    seeds = [model_seed(0, i) for i in range(3)]
    test_x, test_y = data.normalize(data.test_x), data.test_y
    forward, params = train_models(build, images, labels, protocol, seeds, "cpu", stacked=True)
    together = accuracies_on(forward, test_x, test_y)
    # the sequential path (chosen where stacking does not pay) trains the very same models
    f_seq, p_seq = train_models(build, images, labels, protocol, seeds, "cpu", stacked=False)
    for k in params:
        assert torch.allclose(params[k], p_seq[k], atol=1e-5, rtol=1e-4), k
    assert torch.allclose(accuracies_on(f_seq, test_x, test_y), together, atol=2 / len(test_y))
    for i, s in enumerate(seeds):
        f1, p1 = train_models(build, images, labels, protocol, [s], "cpu", stacked=True)
        for k in params:
            assert torch.allclose(params[k][i], p1[k][0], atol=1e-5, rtol=1e-4), k
        assert float(accuracies_on(f1, test_x, test_y)[0]) == pytest.approx(float(together[i]), abs=2 / len(test_y))


# one class's features, hand-made: mean 0; nearest the mean is image 0, then -0.6, 1.0, 1.1, -1.5
HAND = torch.tensor([[0.0], [1.0], [1.1], [-1.5], [-0.6]])


def test_herding_keeps_the_running_mean_at_the_class_mean():
    # pick 1: nearest 0 -> image 0; pick 2: nearest 2*0 - 0 = 0 -> -0.6 (4); pick 3: nearest
    # 3*0 - (0 - 0.6) = 0.6 -> 1.0 (1); pick 4: nearest 4*0 - 0.4 = -0.4 -> -1.5 (3), not 1.1 (2),
    # which sorting by distance to the mean would take
    assert herding(HAND, 4) == [0, 4, 1, 3]
    assert herding(HAND, 5) == [0, 4, 1, 3, 2]


def test_kcenter_starts_at_the_class_mean_then_takes_the_farthest_from_its_nearest_centre():
    # centre 1: nearest the mean -> image 0 (herding's first pick too, so at ipc 1 the two agree);
    # then -1.5 (3, 1.5 from 0); then 1.1 (2, 1.1 from 0); then -0.6 (4: 0.6 from 0) over 1.0 (1: 0.1 from 1.1)
    assert kcenter(HAND, 4) == [0, 3, 2, 4]
    assert kcenter(HAND, 1) == herding(HAND, 1) == [0]
    # duplicates: never the same image twice
    twins = torch.tensor([[0.0], [0.0], [0.0]])
    assert sorted(kcenter(twins, 3)) == [0, 1, 2] and sorted(herding(twins, 3)) == [0, 1, 2]


def _authors_herding(features, num):
    """The DC authors' herding pseudocode (VICO-UoE/DatasetCondensation issue #15), transcribed."""
    mean = features.mean(0, keepdim=True)
    selected, left = [], list(range(features.shape[0]))
    for i in range(num):
        target = mean * (i + 1) - features[selected].sum(0)
        j = int(torch.cdist(target, features[left])[0].argmin())
        selected.append(left.pop(j))
    return selected


def _authors_kcenter(features, ipc):
    """The DC authors' k-center pseudocode (VICO-UoE/DatasetCondensation issue #21), transcribed."""
    centers = [int(torch.cdist(features, features.mean(0, keepdim=True))[:, 0].argsort()[0])]
    for _ in range(ipc - 1):
        centers.append(int(torch.cdist(features, features[centers]).min(1).values.argmax()))
    return centers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_baseline_rules_equal_the_dc_authors_pseudocode(seed):
    feats = torch.randn(60, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for k in (1, 2, 5, 10):
        assert herding(feats, k) == _authors_herding(feats, k)
        assert kcenter(feats, k) == _authors_kcenter(feats, k)
