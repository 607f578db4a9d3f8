"""Vision Transformer with the two small-data changes of Lee, Lee & Song 2021 (arXiv 2112.13492).

Shifted Patch Tokenization (SPT) widens each token's receptive field by tokenising the image
together with four diagonally shifted copies; Locality Self-Attention (LSA) sharpens attention with
a learnable per-head temperature and by masking each token's attention to itself. Both are switches
so the plain ViT and every combination share one implementation.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def _init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_normal_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def patchify(x, patch: int):
    """[B, C, H, W] -> [B, (H/p)(W/p), p*p*C] in row-major patch order."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def shift_diagonally(x, shift: int):
    """The image and its four diagonal shifts by ``shift`` pixels (zero filled), stacked on channels: 5C."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (shift, shift, shift, shift))
    s2 = 2 * shift
    shifted = [padded[..., dy:dy + h, dx:dx + w] for dy, dx in ((0, 0), (0, s2), (s2, 0), (s2, s2))]
    return torch.cat([x, *shifted], dim=1)


class ShiftedPatchTokenization(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        patch_dim = 5 * in_channels * patch * patch
        self.norm = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)

    def forward(self, x):
        return self.proj(self.norm(patchify(shift_diagonally(x, self.patch // 2), self.patch)))


class PatchEmbedding(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(in_channels * patch * patch, dim)

    def forward(self, x):
        return self.proj(patchify(x, self.patch))


class Attention(nn.Module):
    """Multi-head self-attention; with ``lsa`` the temperature is learnt per head and the diagonal masked."""

    def __init__(self, dim: int, heads: int, dim_head: int, lsa: bool = False):
        super().__init__()
        self.heads, self.lsa = heads, lsa
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        scale = torch.full((heads,), dim_head ** -0.5)
        if lsa:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale, persistent=False)

    def _qkv(self, x):
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        # the per-head temperature multiplies q: scaled_dot_product_attention takes one scalar scale only
        return q * self.scale.view(1, -1, 1, 1), k, v

    def attention_weights(self, x):
        """Softmax attention [B, heads, N, N] and the values [B, heads, N, dim_head] (for inspection;
        forward computes the same through the fused kernel)."""
        q, k, v = self._qkv(x)
        logits = q @ k.transpose(-1, -2)
        if self.lsa:
            n = x.shape[1]
            eye = torch.eye(n, dtype=torch.bool, device=x.device)
            # the dtype's lowest finite value rather than -inf: exp underflows to exactly 0 either way
            logits = logits.masked_fill(eye, torch.finfo(logits.dtype).min)
        return logits.softmax(dim=-1), v

    def forward(self, x):
        q, k, v = self._qkv(x)
        b, _, n, _ = v.shape
        # LSA's diagonal mask as a boolean attn_mask (True = may attend): every row keeps n - 1 > 0 keys
        mask = ~torch.eye(n, dtype=torch.bool, device=x.device) if self.lsa else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, lsa: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dim_head, lsa)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Pre-norm ViT with a class token; ``spt`` / ``lsa`` switch on the paper's two changes."""

    def __init__(self, num_classes=10, in_channels=3, image_size=32, patch_size=4, dim=192, depth=9, heads=12,
                 dim_head=16, mlp_dim=384, spt=False, lsa=False):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
        if spt and patch_size < 2:
            raise ValueError("shifted patch tokenization shifts by patch_size // 2: use patch_size >= 2")
        tokenizer = ShiftedPatchTokenization if spt else PatchEmbedding
        self.to_tokens = tokenizer(in_channels, dim, patch_size)
        num_patches = (image_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, dim_head, mlp_dim, lsa) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.apply(_init_weights)

    def tokens(self, x):
        t = self.to_tokens(x)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1)
        return t + self.pos_embedding

    def forward(self, x):
        t = self.tokens(x)
        for block in self.blocks:
            t = block(t)
        return self.head(self.norm(t[:, 0]))
