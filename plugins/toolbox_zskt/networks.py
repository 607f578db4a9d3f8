"""The teacher and the student of a ZSKT run: where the teacher comes from, and whether the pair fits.

Attention transfer needs both networks to expose the same number of group outputs with matching
spatial sizes, and belief matching needs the same classes; each mismatch is one line naming the fix.
"""

from __future__ import annotations

import torch

from toolbox.errors import UsageError


def check_pair(teacher, student, input_shape, teacher_arch: str = "teacher", student_arch: str = "student") -> None:
    """Raise UsageError (one line) unless ``student`` can learn from ``teacher`` by ZSKT."""
    if student is teacher or any(p is q for p in student.parameters() for q in teacher.parameters()):
        raise UsageError("the student is the teacher (shared weights): ZSKT needs a separate student, otherwise the "
                         "generator gets no signal and nothing is transferred")
    for role, model, arch in (("teacher", teacher, teacher_arch), ("student", student, student_arch)):
        if not callable(getattr(model, "forward_features", None)):
            raise UsageError(f"{role} architecture '{arch}' exposes no group outputs (forward_features) for attention "
                             "transfer; use a WideResNet (wrn-*)")
    t_logits, t_feats = _probe(teacher, input_shape)
    s_logits, s_feats = _probe(student, input_shape)
    if t_logits.shape[1] != s_logits.shape[1]:
        raise UsageError(f"teacher '{teacher_arch}' predicts {t_logits.shape[1]} classes but student '{student_arch}' "
                         f"{s_logits.shape[1]}; build the student for the teacher's dataset")
    t_sizes = [tuple(f.shape[2:]) for f in t_feats]
    s_sizes = [tuple(f.shape[2:]) for f in s_feats]
    if t_sizes != s_sizes:
        raise UsageError(f"attention maps do not match: teacher '{teacher_arch}' groups give {t_sizes}, student "
                         f"'{student_arch}' {s_sizes}; pair networks with the same number of groups and strides")


def _probe(model, input_shape):
    """Logits and features of a two-image batch, without touching BN statistics or the train/eval mode."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            return model.forward_features(torch.zeros(2, *input_shape, device=device))
    finally:
        model.train(was_training)
