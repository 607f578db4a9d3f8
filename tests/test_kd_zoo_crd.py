"""CRD (toolbox_kd.zoo.crd) against a literal transcription of RepDistiller's crd/criterion.py
(CRDLoss, Embed, Normalize, ContrastLoss) and crd/memory.py (ContrastMemory.forward), and its sampler
against dataset/cifar100.py's CIFAR100InstanceSample (mode 'exact' and 'relax')."""

from __future__ import annotations

import math

import pytest
import torch
from toolbox_kd.zoo.crd import CRD
from toolbox_kd.zoo.settings import CRD as CRDSettings

# --- RepDistiller, transcribed (same operations, same order) -------------------------------------------
ref_eps = 1e-7


def ref_normalize(x, power=2):
    norm = x.pow(power).sum(1, keepdim=True).pow(1. / power)
    return x.div(norm)


def ref_embed(linear, x):
    x = x.view(x.shape[0], -1)
    x = linear(x)
    return ref_normalize(x)


def ref_contrast_memory_forward(params, memory_v1, memory_v2, v1, v2, y, idx):
    K = int(params[0].item())
    T = params[1].item()
    Z_v1 = params[2].item()
    Z_v2 = params[3].item()
    momentum = params[4].item()
    batchSize = v1.size(0)
    outputSize = memory_v1.size(0)
    inputSize = memory_v1.size(1)

    weight_v1 = torch.index_select(memory_v1, 0, idx.view(-1)).detach()
    weight_v1 = weight_v1.view(batchSize, K + 1, inputSize)
    out_v2 = torch.bmm(weight_v1, v2.view(batchSize, inputSize, 1))
    out_v2 = torch.exp(torch.div(out_v2, T))
    weight_v2 = torch.index_select(memory_v2, 0, idx.view(-1)).detach()
    weight_v2 = weight_v2.view(batchSize, K + 1, inputSize)
    out_v1 = torch.bmm(weight_v2, v1.view(batchSize, inputSize, 1))
    out_v1 = torch.exp(torch.div(out_v1, T))

    if Z_v1 < 0:
        params[2] = out_v1.mean() * outputSize
        Z_v1 = params[2].clone().detach().item()
    if Z_v2 < 0:
        params[3] = out_v2.mean() * outputSize
        Z_v2 = params[3].clone().detach().item()

    out_v1 = torch.div(out_v1, Z_v1).contiguous()
    out_v2 = torch.div(out_v2, Z_v2).contiguous()

    with torch.no_grad():
        l_pos = torch.index_select(memory_v1, 0, y.view(-1))
        l_pos.mul_(momentum)
        l_pos.add_(torch.mul(v1, 1 - momentum))
        l_norm = l_pos.pow(2).sum(1, keepdim=True).pow(0.5)
        updated_v1 = l_pos.div(l_norm)
        memory_v1.index_copy_(0, y, updated_v1)

        ab_pos = torch.index_select(memory_v2, 0, y.view(-1))
        ab_pos.mul_(momentum)
        ab_pos.add_(torch.mul(v2, 1 - momentum))
        ab_norm = ab_pos.pow(2).sum(1, keepdim=True).pow(0.5)
        updated_v2 = ab_pos.div(ab_norm)
        memory_v2.index_copy_(0, y, updated_v2)

    return out_v1, out_v2


def ref_contrast_loss(x, n_data):
    bsz = x.shape[0]
    m = x.size(1) - 1
    Pn = 1 / float(n_data)
    P_pos = x.select(1, 0)
    log_D1 = torch.div(P_pos, P_pos.add(m * Pn + ref_eps)).log_()
    P_neg = x.narrow(1, 1, m)
    log_D0 = torch.div(P_neg.clone().fill_(m * Pn), P_neg.add(m * Pn + ref_eps)).log_()
    loss = - (log_D1.sum(0) + log_D0.view(-1, 1).sum(0)) / bsz
    return loss


def ref_crd_loss(embed_s, embed_t, params, memory_v1, memory_v2, n_data, f_s, f_t, idx, contrast_idx):
    f_s = ref_embed(embed_s, f_s)
    f_t = ref_embed(embed_t, f_t)
    out_s, out_t = ref_contrast_memory_forward(params, memory_v1, memory_v2, f_s, f_t, idx, contrast_idx)
    s_loss = ref_contrast_loss(out_s, n_data)
    t_loss = ref_contrast_loss(out_t, n_data)
    return s_loss + t_loss


# --- helpers --------------------------------------------------------------------------------------------
S_DIM, T_DIM = 6, 10


def make_crd(n_data=40, seed=0, dtype=torch.float64, **settings):
    torch.manual_seed(seed)
    kw = {"feat_dim": 8, "nce_k": 7, **settings}
    crd = CRD(CRDSettings(**kw), [torch.Size([2, S_DIM])], [torch.Size([2, T_DIM])], n_data).to(dtype)
    return crd


def labels_for(n_data, classes=4):
    return torch.arange(n_data) % classes


def features(batch, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, S_DIM, generator=g, dtype=dtype),
            torch.randn(batch, T_DIM, generator=g, dtype=dtype))


# --- tests ----------------------------------------------------------------------------------------------
def test_crd_defaults_are_repdistillers():
    s = CRDSettings()
    assert (s.weight, s.feat_dim, s.nce_k, s.nce_t, s.nce_m, s.mode) == (0.8, 128, 16384, 0.07, 0.5, "exact")


def test_crd_memory_init_is_contrastmemorys():
    crd = make_crd(n_data=3000, dtype=torch.float32, feat_dim=12)
    stdv = 1.0 / math.sqrt(12 / 3)
    for bank in (crd.memory_s, crd.memory_t):
        assert bank.shape == (3000, 12)
        assert bank.min() >= -stdv and bank.max() <= stdv
        assert bank.min() < -0.95 * stdv and bank.max() > 0.95 * stdv  # uniform over the whole range
    assert crd.z_s.item() == -1 and crd.z_t.item() == -1
    assert not torch.equal(crd.memory_s, crd.memory_t)


def test_crd_equals_repdistiller_crdloss_and_contrastmemory():
    """Two batches in float64: the first sets Z, the second uses it and the memory the first updated;
    the loss, its gradient w.r.t. the student's features, Z and both banks match RepDistiller's."""
    n_data, batch = 40, 6
    crd = make_crd(n_data)
    crd.bind_training_set(labels_for(n_data), torch.Generator().manual_seed(1))
    embed_s = torch.nn.Linear(S_DIM, 8).double()
    embed_t = torch.nn.Linear(T_DIM, 8).double()
    embed_s.load_state_dict(crd.embed_s.linear.state_dict())
    embed_t.load_state_dict(crd.embed_t.linear.state_dict())
    params = torch.tensor([7, 0.07, -1, -1, 0.5], dtype=torch.float64)
    memory_v1, memory_v2 = crd.memory_s.clone(), crd.memory_t.clone()
    for step, index in enumerate([torch.tensor([3, 17, 0, 25, 9, 38]), torch.tensor([17, 4, 30, 11, 3, 22])]):
        f_s, f_t = features(batch, seed=10 + step)
        contrast_idx = crd.contrast_indices(index, crd.labels[index])
        f_s_ours, f_s_ref = f_s.clone().requires_grad_(), f_s.clone().requires_grad_()
        ours = crd([f_s_ours], [f_t], index, contrast_idx=contrast_idx)
        ref = ref_crd_loss(embed_s, embed_t, params, memory_v1, memory_v2, n_data, f_s_ref, f_t, index,
                           contrast_idx)
        assert ref.shape == (1,)
        torch.testing.assert_close(ours, ref[0], rtol=1e-12, atol=0)
        ours.backward()
        ref.backward()
        torch.testing.assert_close(f_s_ours.grad, f_s_ref.grad, rtol=1e-10, atol=1e-14)
        assert f_s_ours.grad.abs().sum() > 0
        torch.testing.assert_close(crd.z_s, params[2], rtol=1e-12, atol=0)
        torch.testing.assert_close(crd.z_t, params[3], rtol=1e-12, atol=0)
        torch.testing.assert_close(crd.memory_s, memory_v1, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(crd.memory_t, memory_v2, rtol=1e-12, atol=1e-15)
        # the batch's rows moved and are unit vectors now, the others did not move
        rows = crd.memory_s[index].norm(dim=1)
        torch.testing.assert_close(rows, torch.ones_like(rows))
    torch.testing.assert_close(crd.embed_s.linear.weight.grad, embed_s.weight.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(crd.embed_t.linear.weight.grad, embed_t.weight.grad, rtol=1e-10, atol=1e-14)


def test_crd_z_is_set_once_from_the_first_batch():
    crd = make_crd()
    crd.bind_training_set(labels_for(40), torch.Generator().manual_seed(0))
    f_s, f_t = features(5, seed=0)
    crd([f_s], [f_t], torch.arange(5))
    z = crd.z_s.clone(), crd.z_t.clone()
    assert z[0] > 0 and z[1] > 0
    f_s, f_t = features(5, seed=1)
    crd([f_s * 3], [f_t], torch.arange(5, 10))
    assert torch.equal(crd.z_s, z[0]) and torch.equal(crd.z_t, z[1])


@pytest.mark.parametrize("k", [5, 29, 30, 31, 500])
def test_crd_exact_negatives_are_other_class_samples_positive_first(k):
    """CIFAR100InstanceSample, mode 'exact': sample_idx = [index, nce_k of cls_negative[target]], drawn
    without replacement where cls_negative holds at least nce_k samples, with replacement otherwise."""
    n_data = 40
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 15 + [3] * 10)[torch.randperm(40, generator=torch.Generator()
                                                                                   .manual_seed(0))]
    crd = make_crd(n_data, nce_k=k)
    crd.bind_training_set(labels, torch.Generator().manual_seed(2))
    index = torch.tensor([0, 5, 11, 39, 20, 7, 33])
    idx = crd.contrast_indices(index, labels[index])
    assert idx.shape == (len(index), k + 1)
    assert torch.equal(idx[:, 0], index)
    for row, i in zip(idx, index):
        negatives = row[1:]
        assert (labels[negatives] != labels[i]).all()
        n_other = int((labels != labels[i]).sum())
        if k <= n_other:  # replace = k > len(cls_negative)
            assert len(negatives.unique()) == k
        if k >= 500:  # with replacement, every other-class sample comes up
            assert set(negatives.tolist()) == set((labels != labels[i]).nonzero().squeeze(1).tolist())
    # the same generator state draws the same indices
    again = make_crd(n_data, nce_k=k)
    again.bind_training_set(labels, torch.Generator().manual_seed(2))
    assert torch.equal(again.contrast_indices(index, labels[index]), idx)


def test_crd_negatives_are_uniform_over_other_classes():
    """With replacement: each of the 30 other-class samples of a 10/30 split comes up ~1/30 of the time
    (a draw biased towards the class blocks' edges, or onto the own class, fails this)."""
    labels = torch.tensor([1] * 20 + [0] * 10 + [2] * 10)
    crd = make_crd(40, nce_k=30000)
    crd.bind_training_set(labels, torch.Generator().manual_seed(3))
    idx = crd.contrast_indices(torch.tensor([25]), labels[[25]])
    counts = torch.bincount(idx[0, 1:], minlength=40).double()
    assert counts[20:30].sum() == 0
    others = torch.cat([counts[:20], counts[30:]])
    assert (others - 1000).abs().max() < 150  # 1000 expected, sd ~31


def test_crd_relax_positive_is_a_sample_of_the_same_class():
    labels = labels_for(40)
    crd = make_crd(40, nce_k=9, mode="relax")
    crd.bind_training_set(labels, torch.Generator().manual_seed(4))
    index = torch.arange(40)
    positives = torch.cat([crd.contrast_indices(index, labels)[:, 0] for _ in range(20)])
    assert torch.equal(labels[positives], labels.repeat(20))
    assert not torch.equal(positives, index.repeat(20))  # not always the sample itself
    assert len(positives.unique()) == 40


def test_crd_state_round_trip_gives_the_same_next_loss():
    """The memory banks and Z are buffers (checkpointed); the labels are not (data, bound again); the
    negatives' generator is the run's (checkpointed by the run): restored, the next loss is identical."""
    n_data = 40
    a = make_crd(n_data, seed=0)
    g = torch.Generator().manual_seed(5)
    a.bind_training_set(labels_for(n_data), g)
    f_s, f_t = features(6, seed=20)
    a([f_s], [f_t], torch.tensor([1, 2, 3, 4, 5, 6]))
    state = {k: v.clone() for k, v in a.state_dict().items()}
    assert {"memory_s", "memory_t", "z_s", "z_t"} <= set(state) and "labels" not in state
    g_state = g.get_state()

    b = make_crd(n_data, seed=1)
    g_b = torch.Generator().manual_seed(99)
    b.bind_training_set(labels_for(n_data), g_b)
    f_s, f_t = features(6, seed=21)
    index = torch.tensor([7, 1, 30, 12, 2, 39])
    fresh = b([f_s], [f_t], index)
    b = make_crd(n_data, seed=1)
    b.load_state_dict(state)
    g_b.set_state(g_state)
    b.bind_training_set(labels_for(n_data), g_b)
    loss_b = b([f_s], [f_t], index)
    loss_a = a([f_s], [f_t], index)
    assert torch.equal(loss_a, loss_b)
    assert not torch.equal(fresh, loss_a)
    assert torch.equal(a.memory_s, b.memory_s) and torch.equal(a.memory_t, b.memory_t)


def test_crd_scores_stay_float32_under_autocast():
    """exp(<m, v> / 0.07) reaches e^14, past float16's range: the contrast runs in the memory's precision."""
    crd = make_crd(dtype=torch.float32)
    crd.bind_training_set(labels_for(40), torch.Generator().manual_seed(0))
    f_s, f_t = features(4, seed=0, dtype=torch.float32)
    plain = crd([f_s], [f_t], torch.arange(4))
    crd = make_crd(dtype=torch.float32)
    crd.bind_training_set(labels_for(40), torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = crd([f_s.bfloat16()], [f_t.bfloat16()], torch.arange(4))
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed)
    torch.testing.assert_close(mixed, plain, rtol=2e-2, atol=0)
