"""MHGD against a literal PyTorch transcription of the authors' TensorFlow code
(sseung0703/KD_methods_with_TF: nets/Relation.py MHGD/Attention_head/Estimator/drop_head/kld_loss,
nets/SVP.py SVD_eid/Align_rsv/gradient_svd), written NHWC with TF-shaped [in, out] weights copied from
our module, float64."""

import pytest
import torch
from toolbox_kd.zoo.mhgd import MHGD
from toolbox_kd.zoo.settings import MHGD as Settings

from toolbox.errors import UsageError

B = 5
# [stem, groups..., pooled]; HW/C = 16/6, 4/12, 4/16: both of SVD_eid's Gram branches, never near-square
SHAPES = [torch.Size([2, 3, 8, 8]), torch.Size([2, 6, 4, 4]), torch.Size([2, 12, 2, 2]), torch.Size([2, 16, 2, 2]),
          torch.Size([2, 16])]


# ---- transcription of nets/SVP.py ----------------------------------------------------------------------

def removenan(x):
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def l2_normalize(x, axis):
    return x / torch.sqrt(torch.clamp(torch.sum(x * x, axis, keepdim=True), min=1e-12))


def gradient_svd(s, U, V, dU, dV):
    u_sz, v_sz, s_sz = dU.shape[1], dV.shape[1], s.shape[1]
    S = torch.diag_embed(s)
    s_2 = s ** 2
    eye = torch.eye(s_sz, dtype=s.dtype).unsqueeze(0)
    k = (1 - eye) / (s_2.unsqueeze(2) - s_2.unsqueeze(1) + eye)
    KT = removenan(k.transpose(1, 2))

    def msym(X):
        return X + X.transpose(1, 2)

    def left_grad(U, S, V, dU, dV):
        U, V = V, U
        dU, dV = dV, dU
        D = dU @ torch.diag_embed(1 / (s + 1e-8))
        grad = (D - U @ (torch.diag_embed(torch.diagonal(U.transpose(1, 2) @ D, dim1=1, dim2=2))
                         + 2 * S @ msym(KT * (D.transpose(1, 2) @ (U @ S))))) @ V.transpose(1, 2)
        return grad.transpose(1, 2)

    def right_grad(U, S, V, dU, dV):
        return (2 * (U @ (S @ msym(KT * (V.transpose(1, 2) @ dV))))) @ V.transpose(1, 2)

    return left_grad(U, S, V, dU, dV) if v_sz > u_sz else right_grad(U, S, V, dU, dV)


class SVD_grad_map(torch.autograd.Function):  # identity on (s, u, v), gradient_eid to x
    @staticmethod
    def forward(ctx, x, s, u, v):
        ctx.save_for_backward(s, u, v)
        return s.clone(), u.clone(), v.clone()

    @staticmethod
    def backward(ctx, ds, du, dv):
        s, u, v = ctx.saved_tensors
        return gradient_svd(s, u, v, du, dv), None, None, None


def SVD_eid(X, n):
    B_, H, W, D = X.shape
    x = X.reshape(-1, H * W, D)
    HW = H * W
    x_ = x.detach()
    assert not (HW / D < 3 / 2 and 2 / 3 < HW / D)
    if HW < D:
        xxt = x_ @ x_.transpose(1, 2)
        u_svd, _, _ = torch.linalg.svd(xxt, full_matrices=False)  # tf.svd returns (s, u, v)
        v_svd = x_.transpose(1, 2) @ u_svd
        s_svd = torch.linalg.norm(v_svd, dim=1)
        v_svd = removenan(v_svd / s_svd.unsqueeze(1))
    else:
        xtx = x_.transpose(1, 2) @ x_
        _, v_svd = torch.linalg.eigh(xtx)
        v_svd = torch.flip(v_svd.reshape(-1, D, D, 1), [2]).reshape(-1, D, D)
        u_svd = x_ @ v_svd
        s_svd = torch.linalg.norm(u_svd, dim=1)
        u_svd = removenan(u_svd / s_svd.unsqueeze(1))
    s, u, v = SVD_grad_map.apply(x, s_svd, u_svd, v_svd)
    s = s.reshape(-1, min(HW, D))
    u = u.reshape(-1, HW, min(HW, D))
    v = v.reshape(-1, D, min(HW, D))
    s = l2_normalize(s[:, :n], 1)
    U = l2_normalize(u[:, :, :n], 1)
    V = l2_normalize(v[:, :, :n], 1)
    return s, U, V


def Align_rsv(x, y):
    cosine = x.transpose(1, 2) @ y
    mask = torch.where(torch.amax(torch.abs(cosine), 1, keepdim=True) == torch.abs(cosine), torch.sign(cosine),
                       torch.zeros_like(cosine))
    return x @ mask, y


# ---- transcription of nets/Relation.py -----------------------------------------------------------------

def batch_norm(x, p, is_training):  # tcl.batch_norm, center and scale, epsilon 1e-5
    if is_training:
        mean, var = x.mean(0), x.var(0, unbiased=False)
    else:
        mean, var = p["mean"], p["var"]
    return (x - mean) / torch.sqrt(var + 1e-5) * p["gamma"] + p["beta"]


def Attention_head(K, Q, D, num_head, P, is_training=False):
    B_ = K.shape[0]
    X_sender = batch_norm(K @ P["Sfc"], P["Sbn"], is_training).reshape(B_, D, num_head)
    X_receiver = batch_norm(Q @ P["Rfc"], P["Rbn"], is_training).reshape(B_, D, num_head)
    X_sender = X_sender.permute(2, 0, 1)
    X_receiver = X_receiver.permute(2, 1, 0)
    return X_sender @ X_receiver


def drop_head(G, shape):
    noise = torch.randn(shape, dtype=G.dtype)
    return G * torch.where(noise - noise.mean(0, keepdim=True) > 0, torch.ones_like(noise), torch.zeros_like(noise))


def Estimator(X, G, Dy, num_head, P, is_training):
    B_ = G.shape[1]
    G = torch.softmax(G, -1)
    G = drop_head(G, [num_head, B_, 1])
    G = G.reshape(num_head * B_, B_)
    Dx = X.shape[-1]
    D = (Dx + Dy) // 2
    X = torch.relu(batch_norm(X @ P["fc0"], P["bn0"], is_training))
    X = (G @ X).reshape(num_head, B_, D)
    X = X.permute(1, 0, 2).reshape(B_, D * num_head)
    X = X @ P["fc1"] + P["fc1_b"]
    return l2_normalize(X, -1)


def kld_loss(X, Y):
    return torch.sum(torch.softmax(X, -1) * (torch.log_softmax(X, -1) - torch.log_softmax(Y, -1)))


def reference_mhgd(student_feature_maps, teacher_feature_maps, params, num_head=8):
    """Relation.MHGD's returned transfer loss (the reused, is_training False heads)."""
    GNN_losses = []
    V_Tb = V_Sb = None
    for i, sfm, tfm in zip(range(len(student_feature_maps)), student_feature_maps, teacher_feature_maps):
        _, U_T, V_T = SVD_eid(tfm, 1)
        _, U_S, V_S = SVD_eid(sfm, 4)
        V_S, V_T = Align_rsv(V_S, V_T)
        D = V_T.shape[1]
        V_T = V_T.reshape(-1, D)
        V_S = V_S.reshape(-1, D)
        if i > 0:
            D_ = V_Sb.shape[1]
            D2 = (D + D_) // 2
            G_T = torch.tanh(Attention_head(V_T, V_Tb, D2, num_head, params[i]["Attention"]))
            G_S = torch.tanh(Attention_head(V_S, V_Sb, D2, num_head, params[i]["Attention"]))
            GNN_losses.append(kld_loss(G_S, G_T))
        V_Tb, V_Sb = V_T, V_S
    return sum(GNN_losses)


def reference_mha_loss(teacher_feature_maps, params, num_head=8):
    """Relation.MHGD's MHA_loss collection, summed (op_util.Optimizer_w_MHGD's mha_loss before the penalty)."""
    losses = []
    V_Tb = None
    for i, tfm in enumerate(teacher_feature_maps):
        _, _, V_T = SVD_eid(tfm, 1)
        D = V_T.shape[1]
        V_T = V_T.reshape(-1, D)
        if i > 0:
            D2 = (D + V_Tb.shape[1]) // 2
            G_T = Attention_head(V_T, V_Tb, D2, num_head, params[i]["Attention"], is_training=True)
            V_T_ = Estimator(V_Tb, G_T, D, num_head, params[i]["Estimator"], is_training=True)
            losses.append(torch.mean(1 - torch.sum(V_T_ * V_T, -1)))
        V_Tb = V_T
    return sum(losses)


# ---- helpers -------------------------------------------------------------------------------------------

def _bn(bn):
    return {"gamma": bn.weight, "beta": bn.bias, "mean": bn.running_mean, "var": bn.running_var}


def _params(module):
    """Our weights in the reference's layout ([in, out] matrices), per group index i > 0."""
    out = {}
    for i, (head, est) in enumerate(zip(module.attention, module.estimators), 1):
        out[i] = {"Attention": {"Sfc": head.sender.weight.t(), "Sbn": _bn(head.sender_bn),
                                "Rfc": head.receiver.weight.t(), "Rbn": _bn(head.receiver_bn)},
                  "Estimator": {"fc0": est.embed.weight.t(), "bn0": _bn(est.bn), "fc1": est.out.weight.t(),
                                "fc1_b": est.out.bias}}
    return out


def _module(shapes=SHAPES, t_shapes=SHAPES, **kw):
    torch.manual_seed(0)
    m = MHGD(Settings(**kw), shapes, t_shapes, 100).double()
    with torch.no_grad():  # running statistics and affine parts away from their initial values
        for bn in [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm1d)]:
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.3)
        for est in m.estimators:
            est.out.bias.normal_(0, 0.1)
    return m


def _feats(seed, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.relu(torch.randn((B, *s[1:]), generator=g, dtype=torch.float64)) for s in shapes]


def _nhwc(feats):
    return [f.permute(0, 2, 3, 1) for f in feats[1:-1]]


# ---- tests ---------------------------------------------------------------------------------------------

def test_mhgd_loss_and_student_gradient_match_reference():
    m = _module()
    m.train()  # the attention network stays frozen (running statistics) in distillation
    s_feats = [f.requires_grad_() for f in _feats(1)]
    t_feats = _feats(2)
    ours = m(s_feats, t_feats)
    grads = torch.autograd.grad(ours, s_feats[1:-1])

    s_ref = [f.detach().clone().requires_grad_() for f in s_feats]
    ref = reference_mhgd(_nhwc(s_ref), _nhwc(t_feats), _params(m))
    ref_grads = torch.autograd.grad(ref, s_ref[1:-1])
    assert ours.item() > 1e-3
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        assert g.abs().max() > 0
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-10)


def test_mhgd_stage_loss_matches_reference_mha_loss():
    m = _module()
    m.train()
    t_feats = _feats(3)
    torch.manual_seed(7)  # drop_head's noise: one draw per group pair, in order, in both
    ours = m.stage(None).loss(None, t_feats)
    params = _params(m)
    torch.manual_seed(7)
    ref = reference_mha_loss(_nhwc(t_feats), params)
    assert m.attention.training and m.estimators.training  # batch statistics while it learns
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    stage_params = m.stage(None).parameters
    torch.manual_seed(7)
    g_ours = torch.autograd.grad(m.stage_loss(None, t_feats), stage_params)
    torch.manual_seed(7)
    ref_leaves = [params[1]["Estimator"]["fc1"], params[2]["Attention"]["Sfc"]]
    g_ref = torch.autograd.grad(reference_mha_loss(_nhwc(t_feats), params), ref_leaves)
    est1_out = dict(m.named_parameters())["estimators.0.out.weight"]
    att2_sender = dict(m.named_parameters())["attention.1.sender.weight"]
    for p, r in zip([est1_out, att2_sender], g_ref):
        torch.testing.assert_close(g_ours[[q is p for q in stage_params].index(True)], r.t(), rtol=1e-8, atol=1e-12)


def test_mhgd_stage_trains_the_attention_network_then_freezes_it():
    m = _module()
    stage = m.stage(None)
    assert (stage.name, stage.epochs, stage.lr, stage.needs_student) == ("mha", 40, 0.1, False)
    assert {id(p) for p in stage.parameters} == {id(p) for p in [*m.attention.parameters(), *m.estimators.parameters()]}
    m.train()
    assert not m.attention.training and not m.estimators.training
    assert m.main_parameters() == []  # equal widths: nothing trains beside the student


def test_mhgd_connects_narrower_student_groups_to_the_teacher_width():
    s_shapes = [torch.Size([2, c, h, h]) for c, h in [(3, 8), (3, 4), (6, 2), (8, 2)]] + [torch.Size([2, 8])]
    m = _module(s_shapes, SHAPES)
    assert len(m.main_parameters()) == 3 * 3  # conv, bn weight and bias per group
    s_feats = _feats(4, s_shapes)
    loss = m(s_feats, _feats(5))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in m.main_parameters())


def test_mhgd_refuses_different_group_counts():
    with pytest.raises(UsageError, match="groups"):
        MHGD(Settings(), SHAPES[:2] + SHAPES[-1:], SHAPES, 100)
