"""A registry architecture driven by one flat parameter vector, as forward-mode hypergradients need.

The tangent dw/dlambda is a matrix over *all* weights, so the weights live in a single vector and
the network is called functionally on views of it; the module supplies structure, initialisation
and buffers (batch-norm statistics), and takes the final vector back to be saved as a plain model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call

from toolbox.seeding import init_with_seed


class FlatNet:
    def __init__(self, build: Callable[[], torch.nn.Module]):
        self.build = build
        self.module = build()
        named = list(self.module.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.num_params = sum(self.sizes)

    def fresh_init(self, generator: torch.Generator, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """A new draw of the architecture's own initialisation (seeded from ``generator``), as one vector.

        The module is rebuilt so its buffers (batch-norm statistics) start fresh too.
        """
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.module = init_with_seed(self.build, seed).to(device=device, dtype=dtype)
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).clone()

    def params(self, w: torch.Tensor) -> dict:
        return {n: chunk.view(s) for n, chunk, s in zip(self.names, w.split(self.sizes), self.shapes)}

    def __call__(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.params(w), (x,))

    def as_module(self, w: torch.Tensor) -> torch.nn.Module:
        with torch.no_grad():
            for p, chunk in zip(self.module.parameters(), w.split(self.sizes)):
                p.copy_(chunk.view_as(p))
        return self.module
