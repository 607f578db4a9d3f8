"""Sharpness-aware minimisation around any base optimiser: SAM (Foret et al. 2021), its adaptive
variant ASAM (Kwon et al. 2021) and Fisher-SAM (Kim et al. 2022), plus the recipe section that
turns it on. Core, so every training loop (supervised, KD, a ZSKT student) can wrap its optimiser.

Torch is imported inside the functions: recipe schemas import ``SAMSettings`` without it.
"""

from __future__ import annotations

import contextlib

from .recipes import Float, Section

_EPS = 1e-12


class SAMSettings(Section):
    """The ``sam:`` recipe section. rho: radius of the Euclidean (or ASAM-scaled) neighbourhood.
    fisher: use the Fisher ellipsoid e^T F e <= gamma^2, F = diag(1 + eta g^2); gamma defaults to rho."""

    rho: Float(ge=0, le=100) = 0.05
    adaptive: bool = False
    fisher: bool = False
    eta: Float(ge=0, le=1e6) = 1.0
    gamma: Float(ge=0, le=100) | None = None

    @property
    def radius(self) -> float:
        """The neighbourhood size in effect; 0 means the base optimiser's plain steps."""
        return self.gamma if self.fisher and self.gamma is not None else self.rho


class SAM:
    """Two-pass update: perturb the weights towards the locally sharpest point, take the gradient
    there, restore the weights and let ``base_optimizer`` step with that gradient.

    ``base_optimizer`` is an optimiser instance over ``params``; schedulers and checkpoints stay
    attached to it (this wrapper holds no state between steps). Use either::

        loss.backward(); sam.first_step(); <forward/backward again>; sam.second_step()

    or ``sam.step(closure, model)`` with a closure that does forward + backward and returns the loss.
    """

    def __init__(self, params, base_optimizer, rho: float = 0.05, adaptive: bool = False, fisher: bool = False,
                 eta: float = 1.0, gamma: float | None = None):
        if rho < 0 or (gamma is not None and gamma < 0) or eta < 0:
            raise ValueError(f"SAM needs rho, gamma, eta >= 0 (got rho={rho}, gamma={gamma}, eta={eta})")
        if adaptive and fisher:
            raise ValueError("choose one neighbourhood: adaptive (ASAM) or fisher (Fisher-SAM), not both")
        self.params = [p for p in params if p.requires_grad]
        held = {id(p) for group in base_optimizer.param_groups for p in group["params"]}
        if any(id(p) not in held for p in self.params):
            raise ValueError("SAM's params must be optimised by base_optimizer")
        self.base_optimizer = base_optimizer
        self.rho, self.adaptive, self.fisher, self.eta = rho, adaptive, fisher, eta
        self.gamma = rho if gamma is None else gamma
        self._perturbation: list = []

    @classmethod
    def from_settings(cls, params, base_optimizer, settings: SAMSettings) -> SAM:
        return cls(params, base_optimizer, **settings.model_dump())

    def perturbation(self) -> list:
        """e for every parameter (None where it has no gradient), from the gradients in ``p.grad``."""
        import torch

        grads = [p.grad for p in self.params]
        live = [(p, g) for p, g in zip(self.params, grads) if g is not None]
        if not live:
            return [None] * len(self.params)
        if self.fisher:
            # e = gamma F^-1 g / sqrt(g^T F^-1 g): the maximiser of g.e on the ellipsoid e^T F e <= gamma^2
            inv_f_g = [g / (1 + self.eta * g * g) for _, g in live]
            quad = torch.sqrt(sum((g * fg).sum() for (_, g), fg in zip(live, inv_f_g)))
            scaled = [self.gamma * fg / (quad + _EPS) for fg in inv_f_g]
        elif self.adaptive:
            # ASAM: the neighbourhood is scaled by |w|, e = rho T^2 g / ||T g|| with T = |w|
            norm = torch.sqrt(sum(((p.abs() * g) ** 2).sum() for p, g in live))
            scaled = [self.rho * p * p * g / (norm + _EPS) for p, g in live]
        else:
            norm = torch.sqrt(sum((g * g).sum() for _, g in live))
            scaled = [self.rho * g / (norm + _EPS) for _, g in live]
        it = iter(scaled)
        return [None if g is None else next(it) for g in grads]

    def first_step(self, zero_grad: bool = True) -> None:
        """Move to w + e (e from the current gradients); clear the gradients for the second pass."""
        import torch

        with torch.no_grad():
            self._perturbation = self.perturbation()
            for p, e in zip(self.params, self._perturbation):
                if e is not None:
                    p.add_(e)
        if zero_grad:
            self.base_optimizer.zero_grad(set_to_none=True)

    def second_step(self, zero_grad: bool = True) -> None:
        """Return to w and step the base optimiser with the gradients taken at w + e."""
        import torch

        if not self._perturbation:
            raise RuntimeError("SAM.second_step() without first_step()")
        with torch.no_grad():
            for p, e in zip(self.params, self._perturbation):
                if e is not None:
                    p.sub_(e)
        self._perturbation = []
        self.base_optimizer.step()
        if zero_grad:
            self.base_optimizer.zero_grad(set_to_none=True)

    def step(self, closure, model=None):
        """Both passes; ``closure()`` runs forward + backward and returns the loss. With ``model``,
        its batch-norm running statistics see only the first pass. Returns the loss at w."""
        import torch

        self.base_optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = closure()
        self.first_step()
        with torch.enable_grad(), (frozen_bn_stats(model) if model is not None else contextlib.nullcontext()):
            closure()
        self.second_step()
        return loss


@contextlib.contextmanager
def frozen_bn_stats(model):
    """Batch-norm running statistics (and batch counters) come out of the block as they went in.

    Saved and restored rather than momentum=0, which would still count batches and, with
    momentum=None (cumulative averages), still move the statistics.
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [{k: b.detach().clone() for k, b in m.named_buffers(recurse=False) if b is not None} for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for k, value in buffers.items():
                    getattr(m, k).copy_(value)
