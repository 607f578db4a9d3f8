"""The zoo's SP, CC, RKD, NST, KD-SVD and VID terms against straight transcriptions of RepDistiller's
distiller_zoo (SP.py, CC.py + models/util.py LinearEmbed, RKD.py, NST.py, KDSVD.py, VID.py), fed the
features its helper/loops.py train_distill hands each one: the same inputs, the same learned weights,
the same loss and the same gradient with respect to the student's features.

Features follow RepDistiller's ``model(x, is_feat=True)`` list: [stem, group_1..group_3, pooled]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from toolbox_kd import zoo
from toolbox_kd.zoo import settings as zoo_settings

from toolbox.errors import UsageError

B = 6


def feature_list(channels, sizes, seed, relu=True):
    """[stem, groups..., pooled] in float64; groups after a ReLU, as the taps give them."""
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(B, channels[0], sizes[0], sizes[0], generator=g, dtype=torch.float64)]
    for c, s in zip(channels[1:], sizes[1:]):
        f = torch.randn(B, c, s, s, generator=g, dtype=torch.float64)
        feats.append(f.relu() if relu else f)
    feats.append(feats[-1].mean((2, 3)))
    return feats


def student_leaves(feats):
    """The student's features as leaves, so the gradient of a loss with respect to them can be read."""
    return [f.clone().requires_grad_(True) for f in feats]


def build(name, s_feats, t_feats, **settings):
    section = getattr(zoo_settings, {"kd-svd": "KDSVD"}.get(name, name.upper()))(**settings)
    cls = zoo.distiller_class(name)
    return cls(section, [f.shape for f in s_feats], [f.shape for f in t_feats], 100).double()


def assert_same_loss_and_gradient(ours_fn, ref_fn, s_feats, t_feats):
    s_ours, s_ref = student_leaves(s_feats), student_leaves(s_feats)
    ours, ref = ours_fn(s_ours, t_feats), ref_fn(s_ref, t_feats)
    assert ours.dim() == 0
    torch.testing.assert_close(ours, ref.reshape(()), rtol=1e-10, atol=1e-12)
    ours.backward()
    ref.sum().backward()
    used = [k for k, f in enumerate(s_ref) if f.grad is not None]
    assert used, "the reference's loss must depend on the student's features"
    for k in used:
        assert s_ours[k].grad.abs().sum() > 0
        torch.testing.assert_close(s_ours[k].grad, s_ref[k].grad, rtol=1e-8, atol=1e-12)
    return ours


# ---- transcriptions of RepDistiller ----

def ref_similarity(g_s, g_t):
    """distiller_zoo/SP.py Similarity.forward, on [feat_s[-2]], [feat_t[-2]] (loops.py 'similarity')."""
    def similarity_loss(f_s, f_t):
        bsz = f_s.shape[0]
        f_s = f_s.view(bsz, -1)
        f_t = f_t.view(bsz, -1)
        G_s = torch.mm(f_s, torch.t(f_s))
        G_s = torch.nn.functional.normalize(G_s)
        G_t = torch.mm(f_t, torch.t(f_t))
        G_t = torch.nn.functional.normalize(G_t)
        G_diff = G_t - G_s
        return (G_diff * G_diff).view(-1, 1).sum(0) / (bsz * bsz)
    return [similarity_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)]


def ref_correlation(f_s, f_t):
    """distiller_zoo/CC.py Correlation.forward."""
    delta = torch.abs(f_s - f_t)
    return torch.mean((delta[:-1] * delta[1:]).sum(1))


class RefLinearEmbed(nn.Module):
    """models/util.py LinearEmbed."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        x = x.view(x.shape[0], -1)
        return self.linear(x)


def ref_pdist(e, squared=False, eps=1e-12):
    e_square = e.pow(2).sum(dim=1)
    prod = e @ e.t()
    res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps)
    if not squared:
        res = res.sqrt()
    res = res.clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def ref_rkd(f_s, f_t, w_d=25, w_a=50):
    """distiller_zoo/RKD.py RKDLoss.forward."""
    student = f_s.view(f_s.shape[0], -1)
    teacher = f_t.view(f_t.shape[0], -1)
    with torch.no_grad():
        t_d = ref_pdist(teacher, squared=False)
        mean_td = t_d[t_d > 0].mean()
        t_d = t_d / mean_td
    d = ref_pdist(student, squared=False)
    mean_d = d[d > 0].mean()
    d = d / mean_d
    loss_d = F.smooth_l1_loss(d, t_d)
    with torch.no_grad():
        td = (teacher.unsqueeze(0) - teacher.unsqueeze(1))
        norm_td = F.normalize(td, p=2, dim=2)
        t_angle = torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)
    sd = (student.unsqueeze(0) - student.unsqueeze(1))
    norm_sd = F.normalize(sd, p=2, dim=2)
    s_angle = torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1)
    loss_a = F.smooth_l1_loss(s_angle, t_angle)
    return w_d * loss_d + w_a * loss_a


def ref_nst(g_s, g_t):
    """distiller_zoo/NST.py NSTLoss.forward (full_loss = True)."""
    def poly_kernel(a, b):
        a = a.unsqueeze(1)
        b = b.unsqueeze(2)
        return (a * b).sum(-1).pow(2)

    def nst_loss(f_s, f_t):
        s_H, t_H = f_s.shape[2], f_t.shape[2]
        if s_H > t_H:
            f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
        elif s_H < t_H:
            f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
        f_s = f_s.view(f_s.shape[0], f_s.shape[1], -1)
        f_s = F.normalize(f_s, dim=2)
        f_t = f_t.view(f_t.shape[0], f_t.shape[1], -1)
        f_t = F.normalize(f_t, dim=2)
        return (poly_kernel(f_t, f_t).mean().detach() + poly_kernel(f_s, f_s).mean()
                - 2 * poly_kernel(f_s, f_t).mean())
    return [nst_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)]


def ref_kdsvd(g_s, g_t, k=1):
    """distiller_zoo/KDSVD.py KDSVD.forward with its svd, removenan and align_rsv."""
    def removenan(x):
        return torch.where(torch.isfinite(x), x, torch.zeros_like(x))

    def svd(feat, n=1):
        size = feat.shape
        x = feat.view(-1, size[1], size[2] * size[2]).transpose(-2, -1)
        u, s, v = torch.svd(x)
        u, s, v = removenan(u), removenan(s), removenan(v)
        if n > 0:
            u = F.normalize(u[:, :, :n], dim=1)
            s = F.normalize(s[:, :n], dim=1)
            v = F.normalize(v[:, :, :n], dim=1)
        return u, s, v

    def align_rsv(a, b):
        cosine = torch.matmul(a.transpose(-2, -1), b)
        max_abs_cosine, _ = torch.max(torch.abs(cosine), 1, keepdim=True)
        mask = torch.where(torch.eq(max_abs_cosine, torch.abs(cosine)), torch.sign(cosine), torch.zeros_like(cosine))
        a = torch.matmul(a, mask)
        return a, b

    v_sb = v_tb = None
    losses = []
    for i, f_s, f_t in zip(range(len(g_s)), g_s, g_t):
        u_t, s_t, v_t = svd(f_t, k)
        u_s, s_s, v_s = svd(f_s, k + 3)
        v_s, v_t = align_rsv(v_s, v_t)
        s_t = s_t.unsqueeze(1)
        v_t = v_t * s_t
        v_s = v_s * s_t
        if i > 0:
            s_rbf = torch.exp(-(v_s.unsqueeze(2) - v_sb.unsqueeze(1)).pow(2) / 8)
            t_rbf = torch.exp(-(v_t.unsqueeze(2) - v_tb.unsqueeze(1)).pow(2) / 8)
            l2loss = (s_rbf - t_rbf.detach()).pow(2)
            l2loss = torch.where(torch.isfinite(l2loss), l2loss, torch.zeros_like(l2loss))
            losses.append(l2loss.sum())
        v_tb = v_t
        v_sb = v_s
    bsz = g_s[0].shape[0]
    return [loss / bsz for loss in losses]


class RefVIDLoss(nn.Module):
    """distiller_zoo/VID.py VIDLoss."""

    def __init__(self, num_input_channels, num_mid_channel, num_target_channels, init_pred_var=5.0, eps=1e-5):
        super().__init__()

        def conv1x1(in_channels, out_channels, stride=1):
            return nn.Conv2d(in_channels, out_channels, kernel_size=1, padding=0, bias=False, stride=stride)

        self.regressor = nn.Sequential(
            conv1x1(num_input_channels, num_mid_channel), nn.ReLU(),
            conv1x1(num_mid_channel, num_mid_channel), nn.ReLU(),
            conv1x1(num_mid_channel, num_target_channels))
        self.log_scale = torch.nn.Parameter(np.log(np.exp(init_pred_var - eps) - 1.0) * torch.ones(num_target_channels))
        self.eps = eps

    def forward(self, input, target):
        s_H, t_H = input.shape[2], target.shape[2]
        if s_H > t_H:
            input = F.adaptive_avg_pool2d(input, (t_H, t_H))
        elif s_H < t_H:
            target = F.adaptive_avg_pool2d(target, (s_H, s_H))
        pred_mean = self.regressor(input)
        pred_var = torch.log(1.0 + torch.exp(self.log_scale)) + self.eps
        pred_var = pred_var.view(1, -1, 1, 1)
        neg_log_prob = 0.5 * ((pred_mean - target) ** 2 / pred_var + torch.log(pred_var))
        return torch.mean(neg_log_prob)


# ---- the tests ----

# student narrower than the teacher and, in the first group, larger (the reference pools it down)
S_CH, S_SIZE = (4, 4, 8, 16), (8, 8, 4, 2)
T_CH, T_SIZE = (8, 8, 16, 32), (8, 4, 4, 2)


def test_sp_matches_repdistiller_similarity_on_the_last_group():
    s, t = feature_list(S_CH, S_SIZE, 0), feature_list(T_CH, T_SIZE, 1)
    sp = build("sp", s, t)
    assert_same_loss_and_gradient(lambda a, b: sp(a, b), lambda a, b: sum(ref_similarity([a[-2]], [b[-2]])), s, t)
    # the last group, not any other feature: changing an earlier group changes nothing
    s2 = [f.clone() for f in s]
    s2[1] = s2[1] * 3 + 1
    assert sp(s2, t) == sp(s, t)


def test_cc_matches_repdistiller_correlation_with_linear_embeds_on_the_pooled_vectors():
    s, t = feature_list(S_CH, S_SIZE, 2), feature_list(T_CH, T_SIZE, 3)
    cc = build("cc", s, t, feat_dim=12)
    torch.manual_seed(0)
    embed_s, embed_t = RefLinearEmbed(16, 12).double(), RefLinearEmbed(32, 12).double()
    embed_s.linear.load_state_dict(cc.embed_s.linear.state_dict())
    embed_t.linear.load_state_dict(cc.embed_t.linear.state_dict())
    assert_same_loss_and_gradient(lambda a, b: cc(a, b), lambda a, b: ref_correlation(embed_s(a[-1]), embed_t(b[-1])),
                                  s, t)
    # both embeddings train (RepDistiller's trainable_list holds embed_s and embed_t): gradients reach both
    cc.zero_grad()
    cc(student_leaves(s), t).backward()
    trained = {id(p) for p in cc.main_parameters()}
    assert {id(p) for p in cc.parameters()} == trained and len(trained) == 4
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cc.parameters())
    assert zoo_settings.CC().feat_dim == 128


def test_rkd_matches_repdistiller_rkdloss_with_its_weights():
    s, t = feature_list(S_CH, S_SIZE, 4), feature_list(T_CH, T_SIZE, 5)
    rkd = build("rkd", s, t)
    assert (rkd.settings.distance_weight, rkd.settings.angle_weight) == (25, 50)  # RKDLoss(w_d=25, w_a=50)
    assert_same_loss_and_gradient(lambda a, b: rkd(a, b), lambda a, b: ref_rkd(a[-1], b[-1]), s, t)
    other = build("rkd", s, t, distance_weight=1.0, angle_weight=2.0)
    torch.testing.assert_close(other(s, t), ref_rkd(s[-1], t[-1], w_d=1.0, w_a=2.0), rtol=1e-10, atol=0)
    # the teacher's side carries no gradient, as the reference's no_grad blocks
    t_leaves = student_leaves(t)
    rkd(student_leaves(s), t_leaves).backward()
    assert t_leaves[-1].grad is None


def test_nst_matches_repdistiller_nstloss_summed_over_the_groups():
    s, t = feature_list(S_CH, S_SIZE, 6), feature_list(T_CH, T_SIZE, 7)
    assert s[1].shape[2] != t[1].shape[2] and s[2].shape[1] != t[2].shape[1]  # pooling and unequal channels
    nst = build("nst", s, t)
    assert_same_loss_and_gradient(lambda a, b: nst(a, b), lambda a, b: sum(ref_nst(a[1:-1], b[1:-1])), s, t)
    # teacher maps larger than the student's are pooled down instead
    torch.testing.assert_close(nst(t, s), sum(ref_nst(t[1:-1], s[1:-1])), rtol=1e-10, atol=0)


@pytest.mark.parametrize("k", [1, 2])
def test_kdsvd_matches_repdistiller_kdsvd_summed_over_consecutive_groups(k):
    channels = (4, 4, 8, 16)  # KD-SVD compares singular vectors channel by channel: equal widths
    s, t = feature_list(channels, (8, 8, 4, 2), 8), feature_list(channels, (8, 4, 4, 2), 9)
    kdsvd = build("kd-svd", s, t, singular_vectors=k)
    loss = assert_same_loss_and_gradient(lambda a, b: kdsvd(a, b), lambda a, b: sum(ref_kdsvd(a[1:-1], b[1:-1], k)),
                                         s, t)
    assert loss > 0
    assert zoo_settings.KDSVD().singular_vectors == 1  # KDSVD(k=1)


def test_kdsvd_refuses_groups_of_different_widths():
    s, t = feature_list(S_CH, S_SIZE, 0), feature_list(T_CH, T_SIZE, 1)
    with pytest.raises(UsageError, match="group 1 has 4 channels in the student and 8 in the teacher"):
        build("kd-svd", s, t)


def test_kdsvd_runs_in_float32_under_autocast():
    channels = (4, 4, 8, 16)
    s = [f.float() for f in feature_list(channels, (8, 8, 4, 2), 10)]
    t = [f.float() for f in feature_list(channels, (8, 8, 4, 2), 11)]
    kdsvd = build("kd-svd", s, t).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = kdsvd([f.bfloat16() for f in s], [f.bfloat16() for f in t])
    assert low.dtype == torch.float32 and torch.isfinite(low)


def test_vid_matches_repdistiller_vidloss_per_group_with_the_same_weights():
    s, t = feature_list(S_CH, S_SIZE, 12, relu=False), feature_list(T_CH, T_SIZE, 13)
    vid = build("vid", s, t)
    refs = []
    for pair, f_s, f_t in zip(vid.pairs, s[1:-1], t[1:-1]):
        ref = RefVIDLoss(f_s.shape[1], f_t.shape[1], f_t.shape[1]).double()  # VIDLoss(s, t, t)
        # the same starting variance as the reference (init_pred_var 5, eps 1e-5)
        torch.testing.assert_close(pair.log_scale, ref.log_scale, rtol=0, atol=0)
        ref.load_state_dict(pair.state_dict())
        refs.append(ref)
    # move the learned parts off their initial values so the weights' copy is what makes them agree
    with torch.no_grad():
        for pair in vid.pairs:
            pair.log_scale.add_(torch.linspace(-1, 1, len(pair.log_scale), dtype=torch.float64))
    for pair, ref in zip(vid.pairs, refs):
        ref.load_state_dict(pair.state_dict())
    assert_same_loss_and_gradient(lambda a, b: vid(a, b),
                                  lambda a, b: sum(c(f_s, f_t) for f_s, f_t, c in zip(a[1:-1], b[1:-1], refs)), s, t)
    # every parameter trains (RepDistiller appends the whole criterion to its trainable_list), and learns
    vid.zero_grad()
    vid(student_leaves(s), t).backward()
    assert len(vid.main_parameters()) == len(list(vid.parameters())) == 3 * 4
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vid.parameters())


def test_vid_refuses_a_starting_variance_below_its_floor():
    s, t = feature_list(S_CH, S_SIZE, 0), feature_list(T_CH, T_SIZE, 1)
    with pytest.raises(UsageError, match="init_pred_var"):
        build("vid", s, t, init_pred_var=1e-6, eps=1e-5)
