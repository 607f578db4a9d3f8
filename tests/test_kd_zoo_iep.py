"""IEP against a transcription of the authors' TensorFlow code (sseung0703/IEPKT, nets/Distillation.py
and nets/SVP.py), written here in TF's shapes (NHWC maps, [in, out] weights, batch norm over all axes
but the last) and in float64, with our module's weights and statistics copied in.

Transcribed: ``SVD_eid`` (the eigen-decomposition of X^T X or X X^T, or a direct SVD near square, then
the sign of max + min of V), ``Plane_mapping``, ``Incremental_PCA`` (its assignments), ``PCA_Graph``,
``MPNN``, ``Attention_head``, ``Estimator`` with ``drop_head``, ``kld_loss``, and ``EKI``'s two sums:
the 'dist' collection (the term) and 'MHA_loss' (the stage)."""

import math

import pytest
import torch
from toolbox_kd.zoo.iep import HEADS, IEP
from toolbox_kd.zoo.settings import IEP as IEPSettings

from toolbox.errors import UsageError

TOL = dict(rtol=1e-9, atol=1e-10)
B = 24  # above half the widest map plus one: the first batch alone spans every kept component


# ---- the reference, literally -------------------------------------------------------------------

def tf_l2_normalize(x, axis):
    return x * torch.rsqrt(torch.clamp(torch.sum(x * x, axis, keepdim=True), min=1e-12))


def tf_sign(x):
    return torch.sign(x)


def ref_svd_eid(X, n):
    """nets/SVP.py SVD_eid (forward only: x_ is stop_gradient'ed)."""
    sz = list(X.shape)
    x = X.reshape(-1, sz[1] * sz[2], sz[3])
    _, HW, D = x.shape
    if HW / D < 3 / 2 and 2 / 3 < HW / D:
        u, s, vt = torch.linalg.svd(x, full_matrices=False)
        v = vt.transpose(1, 2)
    else:
        if HW < D:
            xxt = x @ x.transpose(1, 2)
            u_svd, _, _ = torch.linalg.svd(xxt, full_matrices=False)
            v_svd = x.transpose(1, 2) @ u_svd
            s_svd = torch.linalg.norm(v_svd, dim=1)
            v_svd = v_svd / s_svd.unsqueeze(1)
        else:
            xtx = x.transpose(1, 2) @ x
            _, _, vt = torch.linalg.svd(xtx, full_matrices=False)
            v_svd = vt.transpose(1, 2)
            u_svd = x @ v_svd
            s_svd = torch.linalg.norm(u_svd, dim=1)
            u_svd = u_svd / s_svd.unsqueeze(1)
        s, u, v = s_svd, u_svd, v_svd
    s = tf_l2_normalize(s[:, :n], 1)
    U = tf_l2_normalize(u[:, :, :n], 1)
    V = tf_l2_normalize(v[:, :, :n], 1)
    return s, U, V


def ref_plane_mapping(X):
    D = X.shape[-1]
    center = torch.ones(1, D, dtype=X.dtype) / math.sqrt(D)
    scale = 1 / torch.square(torch.cos(torch.acos(torch.sum(X, 1, keepdim=True) / math.sqrt(D)) / 2))
    return (X + center) * scale - 2 * center


def ref_inter_cosine_sim(X):
    X = tf_l2_normalize(X, -1)
    return X @ X.t()


def ref_kld_loss(X, Y):
    return torch.sum(torch.softmax(X, -1) * (torch.log_softmax(X, -1) - torch.log_softmax(Y, -1)))


def ref_incremental_pca(X, D, state):
    """-> (moving_M, moving_V) as read, and the assigned (M, S, V)."""
    rate = .9
    moving_M, moving_S, moving_V = state
    SV = (moving_S * moving_V).t()
    current_mean = X.mean(0, keepdim=True)
    X_ = X - current_mean
    init = torch.sum(SV) == 0.
    moving_M_ = current_mean if init else moving_M
    X_ = torch.cat([X_, SV, moving_M_ - current_mean], 0)
    _, s, Vt = torch.linalg.svd(X_, full_matrices=False)
    V = Vt.t()
    V = V * torch.sign(V.max(0, keepdim=True).values + V.min(0, keepdim=True).values)
    V = V[:, :D // 2]
    s = s[:D // 2]
    new = (moving_M * (1 - rate) + current_mean * rate, s.unsqueeze(0), V)
    return moving_M, moving_V, new


def ref_batch_norm(x, p, is_training, activation=None):
    """tcl.batch_norm(scale, center, epsilon 1e-5): moments over every axis but the last."""
    if is_training:
        axes = tuple(range(x.dim() - 1))
        mean = x.mean(axes)
        var = ((x - mean) ** 2).mean(axes)
    else:
        mean, var = p["mean"], p["var"]
    y = (x - mean) / torch.sqrt(var + 1e-5) * p["gamma"] + p["beta"]
    return activation(y) if activation else y


def ref_fc(x, w, b=None):
    y = torch.tensordot(x, w, dims=([x.dim() - 1], [0]))
    return y + b if b is not None else y


def ref_mpnn(X_B, X_F, D, num_iter, P, is_training):
    def Edge(X):
        X = ref_batch_norm(ref_fc(X, P["Efc"]), P["Ebn"], is_training)
        X = tf_l2_normalize(X, -1)
        return X.unsqueeze(1) * X.unsqueeze(0) * D

    def Message(H, E):
        H = torch.cat([H, E.mean(-1, keepdim=True)], -1)
        M = ref_batch_norm(ref_fc(H, P["Mfc"]), P["Mbn"], is_training)
        G = ref_batch_norm(ref_fc(H, P["Gfc"]), P["Gbn"], is_training, torch.sigmoid)
        return M * G

    H = X_B
    E = Edge(X_F)
    M_ = []
    H = H.unsqueeze(1) - H.unsqueeze(0)
    for _ in range(num_iter):
        M = Message(H, E)
        E = E + M
        M_.append(M)
    R = E.mean(-1)
    return R, torch.cat(M_, -1)


def ref_attention_head(K, Q, D, num_head, P, is_training):
    Bn = K.shape[0]
    X_sender = ref_batch_norm(ref_fc(K, P["Sfc"]), P["Sbn"], is_training).reshape(Bn, D, num_head)
    X_receiver = ref_batch_norm(ref_fc(Q, P["Rfc"]), P["Rbn"], is_training).reshape(Bn, D, num_head)
    X_sender = X_sender.permute(2, 0, 1)
    X_receiver = X_receiver.permute(2, 1, 0)
    return X_sender @ X_receiver


def ref_estimator(X, G, Dy, num_head, P, noise, extrinsic=None):
    Bn = G.shape[1]
    G = torch.softmax(G, -1)
    if extrinsic is not None:
        G = torch.cat([G, extrinsic.detach().unsqueeze(0)], 0)
        num_head += 1
    G = G * torch.where(noise - noise.mean(0, keepdim=True) > 0, torch.ones_like(noise), torch.zeros_like(noise))
    G = G.reshape(num_head * Bn, Bn)
    Dx = X.shape[-1]
    D = (Dx + Dy) // 2
    X = ref_batch_norm(ref_fc(X, P["fc0"]), P["bn0"], True, torch.relu)
    X = (G @ X).reshape(num_head, Bn, D)
    X = X.permute(1, 0, 2).reshape(Bn, D * num_head)
    X = ref_fc(X, P["fc1"], P["fc1b"])
    return tf_l2_normalize(X, -1)


def ref_eki(student_feature_maps, teacher_feature_maps, P, pca_states, noises):
    """EKI: -> (dist losses summed, MHA losses summed, the assigned PCA states)."""
    dist, mha, assigned = [], [], []
    T_F = S_F = None
    for i, (sfm, tfm) in enumerate(zip(student_feature_maps, teacher_feature_maps)):
        tz = list(tfm.shape)
        sz = list(sfm.shape)
        D_B = tz[-1]
        _, U_T, V_T = ref_svd_eid(tfm, 1)
        sign = tf_sign(V_T.max(1, keepdim=True).values + V_T.min(1, keepdim=True).values)
        V_T = V_T * sign
        U_T = U_T * sign
        T_B = ref_plane_mapping(V_T.reshape(-1, D_B))
        mean_V, P_B, new = ref_incremental_pca(T_B, D_B, pca_states[i])
        assigned.append(new)
        T_B = (T_B - mean_V) @ P_B
        G_B = ref_inter_cosine_sim(T_B)

        sfm = sfm.reshape(-1, sz[1] * sz[2], sz[3])
        V_S = tf_l2_normalize(sfm.transpose(1, 2) @ U_T, 1)
        S_B = ref_plane_mapping(V_S.reshape(-1, D_B))
        S_B = (S_B - mean_V) @ P_B
        if i > 0:
            p = P[i - 1]
            D = D_B // 2
            num_iter = 2
            G_T, _ = ref_mpnn(T_B, T_F, D, num_iter, p, True)
            mha.append(ref_kld_loss(G_B, G_T))
            G_T, M_T = ref_mpnn(T_B, T_F, D, num_iter, p, False)
            G_S, M_S = ref_mpnn(S_B, S_F, D, num_iter, p, False)
            dist.append(torch.mean(torch.sum(torch.abs(M_S - M_T), -1)))
            dist.append(ref_kld_loss(G_T, G_S))
            M_T = M_T.mean(2) * num_iter
            # Attention_knowledge(T_F, T_B, S_F, S_B, num_head=8, extrinsic=M_T)
            num_head = 8 - 1
            Df, Db = T_F.shape[-1], T_B.shape[-1]
            Dh = (Df + Db) // 2
            A_T = ref_attention_head(T_B, T_F, Dh, num_head, p, True)
            T_B_ = ref_estimator(T_F, A_T, Db, num_head, p, noises[i - 1], M_T)
            mha.append(torch.mean(1 - torch.sum(T_B * T_B_, -1)))
            A_T = ref_attention_head(T_B, T_F, Dh, num_head, p, False)
            A_S = ref_attention_head(S_B, S_F, Dh, num_head, p, False)
            dist.append(ref_kld_loss(torch.tanh(A_S), torch.tanh(A_T)))
        T_F, S_F = T_B, S_B
    return sum(dist), sum(mha), assigned


# ---- our module's weights and statistics in the reference's shapes ------------------------------

def _bn(fcbn):
    bn = fcbn.bn
    return {"gamma": bn.weight, "beta": bn.bias, "mean": bn.running_mean, "var": bn.running_var}


def _params(iep):
    out = []
    for link in iep.links:
        m, a = link.mpnn, link.attention
        out.append({"Efc": m.edge.fc.weight.t(), "Ebn": _bn(m.edge), "Mfc": m.message.fc.weight.t(),
                    "Mbn": _bn(m.message), "Gfc": m.gate.fc.weight.t(), "Gbn": _bn(m.gate),
                    "Sfc": a.sender.fc.weight.t(), "Sbn": _bn(a.sender), "Rfc": a.receiver.fc.weight.t(),
                    "Rbn": _bn(a.receiver), "fc0": a.est_in.fc.weight.t(), "bn0": _bn(a.est_in),
                    "fc1": a.est_out.weight.t(), "fc1b": a.est_out.bias})
    return out


def _pca_states(iep):
    return [(p.mean.clone(), p.singular.clone(), p.components.clone()) for p in iep.pcas]


S_SHAPES = [(2, 8, 8, 8), (2, 8, 8, 8), (2, 16, 4, 4), (2, 32, 2, 2), (2, 32)]


def _distiller(t_shapes=S_SHAPES, s_shapes=S_SHAPES):
    torch.manual_seed(0)
    iep = IEP(IEPSettings(), [torch.Size(s) for s in s_shapes], [torch.Size(s) for s in t_shapes], 100).double()
    with torch.no_grad():  # batch-norm statistics and affine parameters away from their defaults
        for m in iep.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return iep


def _feats(shapes, seed, grad=False):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(B, *s[1:], generator=g, dtype=torch.float64) for s in shapes]
    return [f.requires_grad_(grad) for f in feats]


def _nhwc(feats):
    # the reference taps relu(bn(.)); our lists hold bn(.) (preact), the ReLU applied in the distiller
    return [torch.relu(f).permute(0, 2, 3, 1) for f in feats[1:-1]]


def _noises(iep, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(HEADS, B, 1, generator=g, dtype=torch.float64) for _ in iep.links]


def _warm_pca(iep, steps=3):
    for k in range(steps):
        iep.mha_loss(_feats(S_SHAPES, 100 + k), _noises(iep, k))


# ---- the tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw, c", [(2, 16), (8, 8), (6, 5), (4, 64), (1, 8)])
def test_iep_first_singular_vectors_match_svd_eid_with_the_sign_rule(hw, c):
    from toolbox_kd.zoo.iep import first_singular_vectors
    fm = torch.relu(torch.randn(B, c, hw, hw, dtype=torch.float64, generator=torch.Generator().manual_seed(hw * c)))
    u, v = first_singular_vectors(fm)
    _, U_T, V_T = ref_svd_eid(fm.permute(0, 2, 3, 1), 1)
    sign = torch.sign(V_T.max(1, keepdim=True).values + V_T.min(1, keepdim=True).values)
    assert torch.allclose(u, U_T * sign, **TOL) and torch.allclose(v, V_T * sign, **TOL)


def test_iep_incremental_pca_matches_the_reference_assignments():
    iep = _distiller()
    for step in range(3):  # the first batch takes its own mean; later ones stack the kept components
        t = _feats(S_SHAPES, step)
        states = _pca_states(iep)
        _, _, assigned = ref_eki(_nhwc(t), _nhwc(t), _params(iep), states, _noises(iep, step))
        iep.mha_loss(t, _noises(iep, step))
        for pca, (m, s, v) in zip(iep.pcas, assigned):
            assert torch.allclose(pca.mean, m, **TOL)
            assert torch.allclose(pca.singular, s, **TOL)
            assert torch.allclose(pca.components, v, **TOL)
        assert step == 0 or all(p.components.abs().sum() > 0 for p in iep.pcas)


def test_iep_stage_loss_matches_the_reference_mha_loss_and_its_batch_norm_updates():
    iep = _distiller()
    _warm_pca(iep)
    t = _feats(S_SHAPES, 7)
    noises = _noises(iep, 9)
    _, expected, _ = ref_eki(_nhwc(t), _nhwc(t), _params(iep), _pca_states(iep), noises)
    running = iep.links[0].mpnn.message.bn.running_mean.clone()
    got = iep.mha_loss(t, noises)
    assert torch.allclose(got, expected, **TOL) and got.requires_grad
    assert not torch.allclose(iep.links[0].mpnn.message.bn.running_mean, running)  # statistics move in the stage


def test_iep_term_matches_the_reference_dist_losses_and_gradient():
    iep = _distiller()
    _warm_pca(iep)
    t = _feats(S_SHAPES, 11)
    s = _feats(S_SHAPES, 12, grad=True)
    s_ref = [f.detach().clone().requires_grad_(True) for f in s]
    before = _pca_states(iep)
    got = iep(s, t)
    expected, _, _ = ref_eki(_nhwc(s_ref), _nhwc(t), _params(iep), before, _noises(iep, 0))
    assert torch.allclose(got, expected, **TOL)
    assert all(torch.equal(a, b) for st, p in zip(before, _pca_states(iep)) for a, b in zip(st, p))  # frozen
    got.backward()
    expected.backward()
    for a, b in zip(s[1:-1], s_ref[1:-1]):
        assert a.grad.abs().sum() > 0 and torch.allclose(a.grad, b.grad, **TOL)


def test_iep_term_is_zero_for_a_student_equal_to_the_teacher():
    iep = _distiller()
    _warm_pca(iep)
    t = _feats(S_SHAPES, 3)
    assert iep(t, t).abs().item() < 1e-9


def test_iep_adapts_a_narrower_student_and_trains_only_the_adapters_in_distillation():
    wide = [(2, 8, 8, 8), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2), (2, 64)]
    iep = _distiller(t_shapes=wide)
    assert [p.shape for p in iep.main_parameters()][:2] == [torch.Size([16, 8, 1, 1]), torch.Size([16])]
    stage = iep.stage(None)
    assert stage.epochs == 20 and not stage.needs_student
    assert {id(p) for p in stage.parameters} == {id(p) for p in iep.links.parameters()}
    assert torch.isfinite(iep(_feats(S_SHAPES, 1), _feats(wide, 2)))


def test_iep_refuses_maps_of_different_sizes():
    with pytest.raises(UsageError, match="sizes must match"):
        _distiller(s_shapes=[(2, 8, 8, 8), (2, 8, 8, 8), (2, 16, 8, 8), (2, 32, 4, 4), (2, 32)])
