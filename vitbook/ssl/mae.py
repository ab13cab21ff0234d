"""Masked autoencoders (He et al. 2022, "Masked Autoencoders Are Scalable Vision
Learners"), as the official code (facebookresearch/mae) defines them.

The whole method, top to bottom:

    image (b, c, H, W)
      -> patches, projected, + fixed 2D sin-cos position       (b, n, dim)
      -> shuffle each sample's patches by argsort of noise; keep the first
         n_keep = int(n * (1 - mask_ratio))                     (b, n_keep, dim)
      -> [class] token (+ its zero position) prepended          (b, 1 + n_keep, dim)
      -> the ViT's blocks and final LayerNorm (the encoder)    the only big network
      -> linear to the decoder width                           (b, 1 + n_keep, d_dec)
      -> one learned mask token per hidden patch, unshuffled   (b, 1 + n, d_dec)
      -> + the decoder's own fixed sin-cos position
      -> a few narrow blocks, LayerNorm, linear to pixels      (b, n, p*p*c)
      -> squared error per pixel, averaged per patch, then over the hidden patches

The encoder is a vitbook ``ViT`` (``mae.backbone``): after pretraining it is the model
that is evaluated and fine-tuned; the decoder is thrown away.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..layers import Block, check_image, posemb_sincos_2d
from ..models.base import check_mlp_ratio, check_positive
from ..models.vit import ViT


def patchify(images: torch.Tensor, patch_size) -> torch.Tensor:
    """Images ``(b, c, H, W)`` -> flattened patches ``(b, n, ph*pw*c)``, row by
    row, in the ``(p1 p2 c)`` order of ``PatchEmbed`` and of MAE's ``patchify``."""
    ph, pw = patch_size
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=ph, p2=pw)


def unpatchify(patches: torch.Tensor, grid, patch_size, channels: int) -> torch.Tensor:
    """The inverse of :func:`patchify`: ``(b, n, ph*pw*c)`` -> ``(b, c, H, W)``."""
    (h, w), (ph, pw) = grid, patch_size
    return rearrange(
        patches,
        "b (h w) (p1 p2 c) -> b c (h p1) (w p2)",
        h=h,
        w=w,
        p1=ph,
        p2=pw,
        c=channels,
    )


def normalized_pixels(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's normalized-pixel target: each patch minus its own mean, divided by its own
    standard deviation (unbiased variance, as ``torch.var`` and the official code)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps) ** 0.5


def random_masking(
    tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
):
    """Per-sample random masking by sorting noise (MAE's ``random_masking``).

    ``tokens (b, n, d)`` -> ``(kept (b, n_keep, d), mask (b, n), ids_restore (b, n))``
    with ``n_keep = int(n * (1 - mask_ratio))``. Each sample's patches are shuffled by
    the argsort of its own ``noise`` (uniform unless given) and the first ``n_keep``
    kept; ``mask`` is 1 where a patch is hidden, in the image's order;
    ``ids_restore`` is the inverse permutation that puts a shuffled sequence back.
    """
    b, n, d = tokens.shape
    n_keep = int(n * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(b, n, device=tokens.device)
    elif noise.shape != (b, n):
        raise ValueError(
            f"noise has shape {tuple(noise.shape)}, expected (batch, patches) = "
            f"{(b, n)}"
        )
    ids_shuffle = noise.argsort(dim=1)  # (b, n): small noise is kept
    ids_restore = ids_shuffle.argsort(dim=1)  # (b, n)
    ids_keep = ids_shuffle[:, :n_keep]  # (b, n_keep)
    kept = tokens.gather(1, ids_keep[..., None].expand(-1, -1, d))  # (b, n_keep, d)
    mask = torch.ones(b, n, device=tokens.device)
    mask[:, :n_keep] = 0
    mask = mask.gather(1, ids_restore)  # (b, n): back in the image's order
    return kept, mask, ids_restore


class MAE(nn.Module):
    """A masked autoencoder around a vitbook ``ViT`` encoder.

    ``loss = mae(images)``; ``mae.backbone`` is the encoder for evaluation.

    ``backbone`` must be a ``ViT(pos_embed="sincos")`` (MAE's positions are fixed); its
    table is rewritten in MAE's column-first layout (``posemb_sincos_2d(order="xy")``)
    and its weights are re-initialized as MAE's code does (xavier-uniform linear maps,
    the patch projection too, class and mask token N(0, 0.02)), unless
    ``init_backbone=False``. Its head is not used. A backbone with ``pool="mean"`` (no
    class token) works too: the decoder then has no class slot either.
    """

    def __init__(
        self,
        backbone: ViT,
        *,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        decoder_mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        init_backbone: bool = True,
    ):
        super().__init__()
        if not isinstance(backbone, ViT):
            raise TypeError(
                f"backbone must be a vitbook ViT, got {type(backbone).__name__}"
            )
        if isinstance(backbone.pos_embed, nn.Parameter):
            raise ValueError(
                "backbone has a learned position embedding; MAE's positions are fixed: "
                "build the ViT with pos_embed='sincos'"
            )
        n = backbone.patch_embed.num_patches
        if not 0.0 <= mask_ratio < 1.0 or int(n * (1 - mask_ratio)) < 1:
            raise ValueError(
                f"mask_ratio={mask_ratio} must be in [0, 1) and keep at least one of "
                f"the {n} patches"
            )
        check_positive(
            decoder_dim=decoder_dim,
            decoder_depth=decoder_depth,
            decoder_heads=decoder_heads,
        )
        check_mlp_ratio(decoder_mlp_ratio)
        self.backbone, self.mask_ratio = backbone, mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.grid = backbone.patch_embed.grid
        self.patch_size = backbone.patch_embed.patch_size
        self.channels = backbone.patch_embed.channels
        self.prefix = backbone.num_prefix_tokens  # 1 with a class token, else 0

        # encoder positions in MAE's layout; the class token's is zero
        with torch.no_grad():
            backbone.pos_embed.copy_(self._sincos(backbone.dim))

        # the lightweight decoder: its own width, depth and fixed positions
        self.decoder_embed = nn.Linear(backbone.dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # (1, prefix + n, decoder_dim)
        self.register_buffer(
            "decoder_pos_embed", self._sincos(decoder_dim), persistent=False
        )
        mlp_dim = int(decoder_dim * decoder_mlp_ratio)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_dim, decoder_heads, mlp_dim) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        ph, pw = self.patch_size
        self.decoder_pred = nn.Linear(decoder_dim, ph * pw * self.channels)
        self.reset_parameters(init_backbone)

    def _sincos(self, dim: int) -> torch.Tensor:
        table = posemb_sincos_2d(*self.grid, dim, order="xy")  # (n, dim)
        return torch.cat((torch.zeros(self.prefix, dim), table))[None]

    def reset_parameters(self, backbone: bool = True) -> None:
        """MAE's initialization: xavier-uniform linear maps with zero biases, unit
        LayerNorms, the patch projection xavier-uniform as a linear map, class and mask
        tokens N(0, 0.02) (the official ``initialize_weights``)."""
        modules = [
            m for name, m in self.named_children() if backbone or name != "backbone"
        ]
        for module in modules:
            module.apply(_mae_init)
        nn.init.normal_(self.mask_token, std=0.02)
        if backbone:
            # the official patch projection is a Conv2d whose bias keeps PyTorch's
            # default init (its init loop touches nn.Linear only)
            proj = self.backbone.patch_embed.proj
            bound = proj.in_features**-0.5
            nn.init.uniform_(proj.bias, -bound, bound)
            if self.backbone.cls_token is not None:
                nn.init.normal_(self.backbone.cls_token, std=0.02)

    # ------------------------------------------------------------------ the pieces
    def forward_encoder(self, images: torch.Tensor, noise=None):
        """Images -> (latent ``(b, prefix + n_keep, dim)``, mask ``(b, n)``,
        ids_restore ``(b, n)``): the encoder sees the visible patches only."""
        vit = self.backbone
        check_image(images, self.channels, vit.patch_embed.image_size)
        x = vit.patch_embed(images)  # (b, n, dim)
        x = x + vit.pos_embed[:, self.prefix :]
        x, mask, ids_restore = random_masking(x, self.mask_ratio, noise)
        if vit.cls_token is not None:
            cls = vit.cls_token + vit.pos_embed[:, :1]  # (1, 1, dim)
            x = torch.cat((cls.expand(x.shape[0], -1, -1), x), dim=1)
        x = vit.pos_drop(x)  # (b, prefix + n_keep, dim)
        for block in vit.blocks:
            x = block(x)
        return vit.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor):
        """Latent ``(b, prefix + n_keep, dim)`` -> predicted patches ``(b, n, p*p*c)``
        for every patch, hidden or not."""
        x = self.decoder_embed(latent)  # (b, prefix + n_keep, d_dec)
        b, n = ids_restore.shape
        prefix, visible = x[:, : self.prefix], x[:, self.prefix :]
        masks = self.mask_token.expand(b, n - visible.shape[1], -1)
        x = torch.cat((visible, masks), dim=1)  # (b, n, d_dec), in shuffled order
        x = x.gather(1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))  # unshuffle
        x = torch.cat((prefix, x), dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, self.prefix :]

    def target(self, images: torch.Tensor) -> torch.Tensor:
        """What the decoder must predict: the patches' pixels ``(b, n, p*p*c)``,
        normalized per patch when ``norm_pix_loss``."""
        patches = patchify(images, self.patch_size)
        return normalized_pixels(patches) if self.norm_pix_loss else patches

    def loss(self, images, prediction, mask) -> torch.Tensor:
        """Mean squared error per patch, averaged over the hidden patches only."""
        per_patch = (prediction - self.target(images)).pow(2).mean(dim=-1)  # (b, n)
        return (per_patch * mask).sum() / mask.sum()

    def forward_all(self, images: torch.Tensor, noise=None):
        """``(loss, prediction (b, n, p*p*c), mask (b, n))``, one pass."""
        latent, mask, ids_restore = self.forward_encoder(images, noise)
        prediction = self.forward_decoder(latent, ids_restore)
        return self.loss(images, prediction, mask), prediction, mask

    def forward(self, images: torch.Tensor, noise=None) -> torch.Tensor:
        return self.forward_all(images, noise)[0]

    # ------------------------------------------------------------------ for figures
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, noise=None, mask_ratio=None) -> dict:
        """Images ``(b, c, H, W)`` -> a dict of images the same shape, for figures:

        ``masked`` (hidden patches set to zero), ``prediction`` (the decoder's output
        for every patch) and ``pasted`` (the prediction with the visible patches
        pasted back), plus ``mask`` ``(b, n)`` and the ``loss``. With
        ``norm_pix_loss`` the prediction is in per-patch normalized units, and a
        picture needs each hidden patch's mean and standard deviation, which only
        the true image has: it is mapped back with those, so the true image's
        brightness and contrast leak into the picture. For pictures of what a model
        predicts, train one with ``norm_pix_loss=False``, as the official
        visualization demo does. ``mask_ratio`` overrides the trained one for this
        call.
        """
        was_training, saved = self.training, self.mask_ratio
        self.eval()
        if mask_ratio is not None:
            self.mask_ratio = mask_ratio
        try:
            loss, prediction, mask = self.forward_all(images, noise)
        finally:
            self.mask_ratio = saved
            self.train(was_training)
        patches = patchify(images, self.patch_size)  # (b, n, p*p*c)
        if self.norm_pix_loss:
            mean = patches.mean(dim=-1, keepdim=True)
            std = (patches.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
            prediction = prediction * std + mean
        hidden = mask[..., None].bool()  # (b, n, 1)

        def as_image(p):
            return unpatchify(p, self.grid, self.patch_size, self.channels)

        return {
            "masked": as_image(patches.masked_fill(hidden, 0.0)),
            "prediction": as_image(prediction),
            "pasted": as_image(torch.where(hidden, prediction, patches)),
            "mask": mask,
            "loss": loss.item(),
        }

    def extra_repr(self) -> str:
        return f"mask_ratio={self.mask_ratio}, norm_pix_loss={self.norm_pix_loss}"


def _mae_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SnapshotLoss:
    """A ``fit`` loss for an MAE (``loss = mae(images)``) that also keeps
    reconstructions of fixed ``images`` with fixed hidden patches at the steps in
    ``at_steps`` (step 0 = before the first update), for a figure of pretraining.

    ``frames`` is a list of ``(step, pasted images)``; call :meth:`snapshot` once more
    after ``fit`` for the final state. The fixed ``noise`` means snapshots draw no
    random numbers, so a run with snapshots trains exactly as one without.
    """

    def __init__(self, images: torch.Tensor, at_steps, noise: torch.Tensor):
        self.images, self.noise = images, noise
        self.at_steps, self.step = set(at_steps), 0
        self.frames: list[tuple[int, torch.Tensor]] = []

    def snapshot(self, mae: MAE) -> None:
        device = mae.decoder_pred.weight.device
        out = mae.reconstruct(self.images.to(device), noise=self.noise.to(device))
        self.frames.append((self.step, out["pasted"].float().cpu()))

    def __call__(self, mae: MAE, batch):
        if self.step in self.at_steps:
            self.snapshot(mae)
        self.step += 1
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return mae(images), {}


__all__ = [
    "MAE",
    "SnapshotLoss",
    "patchify",
    "unpatchify",
    "normalized_pixels",
    "random_masking",
]
