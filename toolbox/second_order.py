"""Second-order gradients (a gradient of a gradient) through any architecture.

Fused attention kernels (flash / memory-efficient scaled_dot_product_attention, which the ViT uses)
have no double backward; code that differentiates a gradient (gradient-leakage matching, Hessian-
vector products) runs its forward passes inside ``second_order()``, which selects the math kernel.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def second_order():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield
