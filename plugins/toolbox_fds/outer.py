"""Sign-based outer updates with adaptive steps, as FDS uses them.

Hypergradient magnitudes vary by orders of magnitude across windows and horizons, so only their
sign is used: each hyperparameter moves by its own step, which halves whenever the sign flips.
"""

from __future__ import annotations

from dataclasses import dataclass


def _sign(x: float) -> float:
    return (x > 0) - (x < 0)


@dataclass
class SignSteps:
    values: list[float]
    steps: list[float]
    signs: list[float]  # sign of each hyperparameter's previous hypergradient (0 before the first)
    decay: float = 0.5

    @classmethod
    def start(cls, values, steps, decay: float) -> SignSteps:
        return cls([float(v) for v in values], [float(s) for s in steps], [0.0] * len(values), decay)

    def update(self, hypergradient, converged_fraction: float) -> bool:
        """Descend one sign step; True when every step is below ``converged_fraction`` of its value."""
        new = [float(_sign(float(g))) for g in hypergradient]
        self.steps = [s * self.decay if old * sign < 0 else s for s, old, sign in zip(self.steps, self.signs, new)]
        converged = all(v != 0 and s / abs(v) < converged_fraction for s, v in zip(self.steps, self.values))
        self.values = [v - sign * s for v, sign, s in zip(self.values, new, self.steps)]
        self.signs = new
        return converged

    def state_dict(self) -> dict:
        return {"values": self.values, "steps": self.steps, "signs": self.signs, "decay": self.decay}

    @classmethod
    def from_state(cls, state: dict) -> SignSteps:
        return cls([float(v) for v in state["values"]], [float(s) for s in state["steps"]],
                   [float(s) for s in state["signs"]], float(state["decay"]))
