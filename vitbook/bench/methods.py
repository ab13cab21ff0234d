"""The self-supervised methods as benchmark contenders: each side's training step is
its loss, its backward pass and whatever the method does after the optimizer's step,
vitbook's method against the reference implementations of MAE, DINO and BYOL."""

from __future__ import annotations

from typing import Callable

from torch import nn


class LossOf(nn.Module):
    """A self-supervised method as a benchmark contender: ``forward(images)`` returns
    the scalar loss, and ``step_teacher()`` runs whatever the method does after an
    optimizer step (the EMA teacher's update), so a training step costs the same
    work on every side. ``loss(method, images)`` computes the loss where calling the
    method on the images does not (by default it does); ``after_step(method)`` is the
    work after a step (by default none)."""

    def __init__(
        self,
        method: nn.Module,
        loss: Callable | None = None,
        after_step: Callable | None = None,
    ):
        super().__init__()
        self.method, self._loss, self._after_step = method, loss, after_step

    def forward(self, images):
        if self._loss is None:
            return self.method(images)
        return self._loss(self.method, images)

    def step_teacher(self):
        if self._after_step is not None:
            self._after_step(self.method)


def mae_contenders(
    image_size=224,
    patch_size=16,
    dim=192,
    depth=12,
    heads=3,
    decoder_dim=128,
    decoder_depth=4,
    decoder_heads=4,
    num_classes=None,
) -> dict[str, nn.Module]:
    """MAE on a ViT-Ti/16 encoder (75% masking, normalized-pixel loss) with a
    ``decoder_depth`` x ``decoder_dim`` decoder: vitbook, Hugging Face transformers'
    ``ViTMAEForPreTraining`` (the official code's port; vitbook's copy is converted
    from it, so the weights are equal) and vit-pytorch's ``MAE`` (the seed: learned
    decoder positions, no normalized pixels, and an encoder without a class token,
    since its MAE crashes on one)."""
    import transformers
    from vit_pytorch import MAE as SeedMAE
    from vit_pytorch import ViT as SeedViT

    from ..reference import mae_from_transformers

    config = transformers.ViTMAEConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=4 * dim,
        decoder_hidden_size=decoder_dim,
        decoder_num_hidden_layers=decoder_depth,
        decoder_num_attention_heads=decoder_heads,
        decoder_intermediate_size=4 * decoder_dim,
        mask_ratio=0.75,
        norm_pix_loss=True,
        layer_norm_eps=1e-6,
        attn_implementation="sdpa",
    )
    hf = transformers.ViTMAEForPreTraining(config)
    seed_encoder = SeedViT(
        image_size=image_size,
        patch_size=patch_size,
        num_classes=1000,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_dim=4 * dim,
        dim_head=dim // heads,
        pool="mean",  # its MAE crashes on a class-token encoder (chapter 6)
    )
    seed = SeedMAE(
        encoder=seed_encoder,
        decoder_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_heads=decoder_heads,
        decoder_dim_head=decoder_dim // decoder_heads,
    )
    return {
        "vitbook": LossOf(mae_from_transformers(hf)),
        "transformers": LossOf(hf, lambda m, x: m(pixel_values=x).loss),
        "vit-pytorch": LossOf(seed),
    }


def dino_contenders(
    image_size=224,
    patch_size=16,
    dim=192,
    depth=12,
    heads=3,
    out_dim=4096,
    hidden_dim=256,
    num_classes=None,
) -> dict[str, nn.Module]:
    """DINO's training step on a ViT-Ti/16 in the seed's setting, which vit-pytorch's
    ``Dino`` fixes: the teacher sees two global crops, the student two local crops,
    every crop resized to ``image_size``, a head of width ``hidden_dim`` onto
    ``out_dim`` prototypes. vitbook runs ``DINO(variant="seed")``; both update the
    teacher after each step. The augmentations differ (vit-pytorch adds colour jitter
    and blur)."""
    from vit_pytorch import Dino as SeedDino
    from vit_pytorch import ViT as SeedViT

    from ..models.vit import ViT
    from ..ssl.dino import DINO

    shape = dict(
        patch_size=patch_size, dim=dim, depth=depth, heads=heads, mlp_dim=4 * dim
    )
    vitbook = DINO(
        ViT(image_size=image_size, num_classes=0, **shape),
        total_steps=1000,
        global_size=image_size,
        local_size=image_size,
        variant="seed",
        out_dim=out_dim,
        hidden_dim=hidden_dim,
        bottleneck_dim=hidden_dim,
    )
    seed = SeedDino(
        SeedViT(
            image_size=image_size, num_classes=1000, dim_head=dim // heads, **shape
        ),
        image_size=image_size,
        hidden_layer="to_latent",
        projection_hidden_size=hidden_dim,
        num_classes_K=out_dim,
    )
    return {
        "vitbook": LossOf(vitbook, after_step=DINO.step_teacher),
        "vit-pytorch": LossOf(seed, after_step=SeedDino.update_moving_average),
    }


def byol_contenders(
    image_size=224,
    patch_size=16,
    dim=192,
    depth=12,
    heads=3,
    projection_dim=256,
    hidden_dim=4096,
    num_classes=None,
) -> dict[str, nn.Module]:
    """BYOL's training step on a ViT-Ti/16 (vitbook's ViT inside both, so only the
    method differs): vitbook's ``BYOL`` and byol-pytorch's (simplicial embeddings off),
    the paper's heads (4096 -> ``projection_dim``), two views of ``image_size``, the
    target's EMA update after each step. Each applies its own augmentations."""
    from byol_pytorch import BYOL as ReferenceBYOL

    from ..models.vit import ViT
    from ..ssl.byol import BYOL

    def backbone():
        return ViT(
            image_size=image_size,
            patch_size=patch_size,
            num_classes=0,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp_dim=4 * dim,
        )

    head_sizes = dict(
        projection_dim=projection_dim,
        hidden_dim=hidden_dim,
        predictor_hidden_dim=hidden_dim,
    )
    vitbook = BYOL(backbone(), total_steps=1000, image_size=image_size, **head_sizes)
    reference = ReferenceBYOL(
        backbone(),
        image_size=image_size,
        hidden_layer=-1,
        projection_size=projection_dim,
        projection_hidden_size=hidden_dim,
        use_simplicial_embeddings=False,
    )
    return {
        "vitbook": LossOf(vitbook, after_step=BYOL.step_teacher),
        "byol-pytorch": LossOf(
            reference, after_step=ReferenceBYOL.update_moving_average
        ),
    }
