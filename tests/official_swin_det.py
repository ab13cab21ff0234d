"""A test-side transcription of one Swin stage as the official detection code runs it
(microsoft/Swin-Transformer-Object-Detection, ``mmdet/models/backbones/
swin_transformer.py``, MIT): ``BasicLayer`` and ``SwinTransformerBlock``, rewritten
from reading them, not copied.

What matters here is the order on a map the window does not divide: the block pads the
map (bottom, right) to ``Hp x Wp``, rolls the padded map, attends in windows, rolls
back and crops; ``BasicLayer`` builds the shift mask once per stage from three slices
per axis of the padded ``Hp x Wp`` map. timm rolls the unpadded map first and pads
after, which differs wherever the padding and the wrapped rows land in different
windows.

Parameter names match vitbook's ``SwinBlock``, so ``layer.blocks[i]`` loads
``stage.blocks[i].state_dict()`` as it is. Only square windows, as the official code.
"""

import torch
import torch.nn.functional as F
from torch import nn


def partition(x, m):
    """(B, H, W, C) -> (B * windows, m*m, C), windows row-major per image."""
    b, h, w, c = x.shape
    x = x.view(b, h // m, m, w // m, m, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, m * m, c)


def unpartition(windows, m, h, w):
    """The inverse of :func:`partition`: (B * windows, m*m, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // m) * (w // m))
    x = windows.view(b, h // m, w // m, m, m, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def layer_mask(hp, wp, m, s, dtype=torch.float64):
    """The stage's SW-MSA mask (windows, m*m, m*m) on the padded Hp x Wp map: the map
    is labelled by three row slices times three column slices (up to the last window,
    the last window but its shifted part, the shifted part), and two tokens of a
    window may attend to each other only if they carry the same label."""
    labels = torch.zeros(1, hp, wp, 1, dtype=dtype)
    cuts = (slice(0, -m), slice(-m, -s), slice(-s, None))
    label = 0
    for rows in cuts:
        for cols in cuts:
            labels[:, rows, cols, :] = label
            label += 1
    per_window = partition(labels, m)[..., 0]  # (windows, m*m)
    differ = per_window[:, None, :] != per_window[:, :, None]
    return torch.zeros(differ.shape, dtype=dtype).masked_fill(differ, -100.0)


class WindowAttention(nn.Module):
    def __init__(self, dim, heads, m):
        super().__init__()
        self.heads, self.m = heads, m
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * m - 1) ** 2, heads)
        )
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # the table row of query i and key j: their offset, each axis moved to start
        # at 0, read as a number in base 2m-1 (row digit first)
        ys, xs = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        dy = ys[:, None] - ys[None, :] + m - 1
        dx = xs[:, None] - xs[None, :] + m - 1
        self.register_buffer("index", dy * (2 * m - 1) + dx, persistent=False)

    def forward(self, x, mask=None):
        bw, n, c = x.shape
        qkv = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (bw, heads, n, d)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.index]  # (n, n, heads)
        logits = logits + bias.permute(2, 0, 1)[None]
        if mask is not None:
            windows = mask.shape[0]
            logits = logits.view(bw // windows, windows, self.heads, n, n)
            logits = (logits + mask[None, :, None]).view(bw, self.heads, n, n)
        out = logits.softmax(-1) @ v  # (bw, heads, n, d)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Tokens (B, H*W, C) in and out; ``H, W`` set by the layer before each call."""

    def __init__(self, dim, heads, m, s, mlp_ratio=4.0):
        super().__init__()
        self.m, self.s = m, s
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, m)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.H = self.W = None

    def forward(self, x, mask):
        b, n, c = x.shape
        h, w, m, s = self.H, self.W, self.m, self.s
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        # 1. pad to whole windows, zeros at the bottom and the right
        pad_b, pad_r = (m - h % m) % m, (m - w % m) % m
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = x.shape[1:3]
        # 2. then roll the padded map
        if s:
            x = torch.roll(x, (-s, -s), (1, 2))
        windows = self.attn(partition(x, m), mask if s else None)
        x = unpartition(windows, m, hp, wp)
        if s:
            x = torch.roll(x, (s, s), (1, 2))
        x = x[:, :h, :w].reshape(b, n, c)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    """One stage's blocks (W-MSA, SW-MSA alternating, shift m // 2), no merging:
    ``forward(x, H, W)`` on tokens (B, H*W, C)."""

    def __init__(self, dim, depth, heads, m, mlp_ratio=4.0):
        super().__init__()
        self.m, self.s = m, m // 2
        self.blocks = nn.ModuleList(
            Block(dim, heads, m, 0 if i % 2 == 0 else self.s, mlp_ratio)
            for i in range(depth)
        )

    def forward(self, x, h, w):
        m = self.m
        hp, wp = -(-h // m) * m, -(-w // m) * m
        mask = layer_mask(hp, wp, m, self.s, x.dtype)
        for block in self.blocks:
            block.H, block.W = h, w
            x = block(x, mask)
        return x
