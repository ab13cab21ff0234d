"""A test-side transcription of the official ScalableViT classifier
(``Yangr116/ScalableViT``, ``image_classification/models/scalablevit.py``), written
from reading it: the repository has no license, so nothing here is copied. Parameter
names are the official ones, so a converter (in ``tests/test_scalable_vit.py``) maps
its state dict to vitbook's ``ScalableViT`` as it would map a released checkpoint.

What the official model does, in the order it does it:

- every stage starts with a convolutional patch embedding: kernel ``p + overlap``,
  stride ``p``, padding ``overlap`` (the image: p = 4, overlap 3; later stages: p = 2,
  overlap 1), then LayerNorm(eps 1e-6); the map it reports is ``H // p x W // p``;
- blocks alternate IWSA (even index) and SSA (odd index), pre-norm, LayerNorm eps 1e-6;
  the PEG (``x + dwconv3x3(x)``) runs right after block 0 of every stage;
- IWSA: one ``qkv`` projection; attention inside ``ws x ws`` windows (no padding: the
  map must be a whole number of windows); the LIM, a depthwise 3x3 convolution
  (``lim_func``), runs on the values' whole map and is added to the windows' output
  before ``proj``;
- SSA with ``sr_ratio > 1``: ``reduction`` = depthwise conv (kernel = stride = sr) then
  1x1 conv to ``int(dim * c_ratio)``, then ``norm_act`` = LayerNorm (eps 1e-5) and
  GELU; q: dim -> c', k: c' -> c', v: c' -> dim. With ``sr_ratio = 1``: q: dim -> dim
  and one ``kv``: dim -> 2 dim (keys first) on the map itself. In both cases the
  scale is ``(head_dim * c_ratio) ** -0.5``;
- the final LayerNorm (eps 1e-6), the mean over tokens, and with ``plain_head`` one
  linear layer.
"""

import torch
import torch.nn.functional as F
from torch import nn


def layer_norm(dim):
    return nn.LayerNorm(dim, eps=1e-6)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class IWSA(nn.Module):
    def __init__(self, dim, heads, qkv_bias, ws):
        super().__init__()
        self.heads, self.ws = heads, ws
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.lim_func = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def windows(self, t, h, w):
        """(B, H*W, C) -> (B, windows, heads, ws*ws, head_dim)."""
        b, _, c = t.shape
        s = self.ws
        t = t.view(b, h // s, s, w // s, s, c).transpose(2, 3)
        t = t.reshape(b, (h // s) * (w // s), s * s, self.heads, c // self.heads)
        return t.permute(0, 1, 3, 2, 4)

    def forward(self, x, h, w):
        b, n, c = x.shape
        s = self.ws
        q, k, v = self.qkv(x).view(b, n, 3, c).unbind(2)  # 3 x (B, N, C)
        # the LIM reads the values' map as it is, every token in its place
        v_map = v.transpose(1, 2).reshape(b, c, h, w)
        lim = self.lim_func(v_map).flatten(2).transpose(1, 2)  # (B, N, C)
        q, k, v = (self.windows(t, h, w) for t in (q, k, v))
        weights = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        out = (weights @ v).transpose(2, 3)  # (B, windows, ws*ws, heads, head_dim)
        out = out.reshape(b, h // s, w // s, s, s, c).transpose(2, 3)
        return self.proj(out.reshape(b, n, c) + lim)


class SSA(nn.Module):
    def __init__(self, dim, heads, qkv_bias, sr_ratio, c_ratio):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr_ratio
        self.c_new = int(dim * c_ratio)
        self.scale = (dim // heads * c_ratio) ** -0.5
        if sr_ratio > 1:
            self.q = nn.Linear(dim, self.c_new, bias=qkv_bias)
            self.reduction = nn.Sequential(
                nn.Conv2d(dim, dim, sr_ratio, sr_ratio, groups=dim),
                nn.Conv2d(dim, self.c_new, 1),
            )
            self.norm_act = nn.Sequential(nn.LayerNorm(self.c_new), nn.GELU())
            self.k = nn.Linear(self.c_new, self.c_new, bias=qkv_bias)
            self.v = nn.Linear(self.c_new, dim, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def split(self, t):
        """(B, N, heads * d) -> (B, heads, N, d)."""
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x, h, w):
        b, n, c = x.shape
        if self.sr_ratio > 1:
            reduced = self.reduction(x.transpose(1, 2).reshape(b, c, h, w))
            reduced = self.norm_act(reduced.flatten(2).transpose(1, 2))  # (B, N', C')
            q, k, v = self.q(x), self.k(reduced), self.v(reduced)
        else:
            q = self.q(x)
            k, v = self.kv(x).view(b, n, 2, c).unbind(2)
        q, k, v = (self.split(t) for t in (q, k, v))
        weights = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, qkv_bias, sr_ratio, ws, c_ratio):
        super().__init__()
        self.norm1, self.norm2 = layer_norm(dim), layer_norm(dim)
        if ws == 1:
            self.attn = SSA(dim, heads, qkv_bias, sr_ratio, c_ratio)
        else:
            self.attn = IWSA(dim, heads, qkv_bias, ws)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, h, w):
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x))


class ConvPatchEmbed(nn.Module):
    def __init__(self, patch, in_chans, dim, overlap):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, patch + overlap, patch, overlap)
        self.norm = layer_norm(dim)

    def forward(self, x):
        _, _, h, w = x.shape
        x = self.norm(self.proj(x).flatten(2).transpose(1, 2))
        return x, (h // self.patch, w // self.patch)


class PosCNN(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim))

    def forward(self, x, h, w):
        b, n, c = x.shape
        feat = x.transpose(1, 2).reshape(b, c, h, w)
        return (self.proj(feat) + feat).flatten(2).transpose(1, 2)


class ScalableViT(nn.Module):
    """The official classifier with ``plain_head=True`` (one linear head)."""

    def __init__(self, *, patch_size, in_chans, num_classes, embed_dims, num_heads,
                 mlp_ratios, qkv_bias, depths, sr_ratios, wss, c_ratios):  # fmt: skip
        super().__init__()
        self.depths = depths
        self.patch_embeds = nn.ModuleList()
        self.pos_block = nn.ModuleList()
        self.stages = nn.ModuleList()
        for k, depth in enumerate(depths):
            if k == 0:
                embed = ConvPatchEmbed(patch_size, in_chans, embed_dims[0], 3)
            else:
                embed = ConvPatchEmbed(2, embed_dims[k - 1], embed_dims[k], 1)
            self.patch_embeds.append(embed)
            self.pos_block.append(PosCNN(embed_dims[k]))
            self.stages.append(
                nn.ModuleList(
                    Block(embed_dims[k], num_heads[k], mlp_ratios[k], qkv_bias,
                          sr_ratios[k], 1 if i % 2 else wss[k], c_ratios[k])
                    for i in range(depth)
                )  # fmt: skip
            )
        self.norm = layer_norm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)

    def forward(self, x):
        b = x.shape[0]
        for k in range(len(self.depths)):
            x, (h, w) = self.patch_embeds[k](x)
            for i, block in enumerate(self.stages[k]):
                x = block(x, h, w)
                if i == 0:
                    x = self.pos_block[k](x, h, w)
            if k < len(self.depths) - 1:
                x = x.transpose(1, 2).reshape(b, -1, h, w)
        return self.head(self.norm(x).mean(1))
