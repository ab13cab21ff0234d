"""``python -m vitbook.bench vit`` (or ``swin``, ``twins``): vitbook against the
reference implementations (``mp3``: MP3's gathered context against its masked form).

Prints throughput (images per second, forward only and a full training step) and, on
CUDA, peak memory, each as a ratio to vitbook's own number. Implementations are timed
interleaved (one call of each per round, the order rotating) and each number is the
median over rounds, so background load hits them all alike. These are measurements,
never test assertions.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .train import get_device


def vit_contenders(
    image_size=224, patch_size=16, dim=192, depth=12, heads=3, num_classes=1000
) -> dict[str, nn.Module]:
    """ViT-Ti/16 (DeiT-Tiny's shape) by default: vitbook, timm, and vit-pytorch (the
    seed)."""
    import timm
    from vit_pytorch import ViT as SeedViT

    from .models.vit import ViT

    return {
        "vitbook": ViT(
            image_size=image_size,
            patch_size=patch_size,
            num_classes=num_classes,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp_dim=4 * dim,
        ),
        "timm": timm.models.vision_transformer.VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            num_classes=num_classes,
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            mlp_ratio=4.0,
        ),
        "vit-pytorch": SeedViT(
            image_size=image_size,
            patch_size=patch_size,
            num_classes=num_classes,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp_dim=4 * dim,
            dim_head=dim // heads,
        ),
    }


def swin_contenders(
    image_size=224, depth=None, num_classes=1000, drop_path=0.1
) -> dict[str, nn.Module]:
    """Swin-T (``dim=96, depths=(2, 2, 6, 2)``, window 7): vitbook and timm (the
    official code's port), with the same stochastic depth (Swin-T's 0.1) on both sides.

    ``depth`` sets the third stage's depth (Swin-T: 6), for a quicker run."""
    import timm

    from .models.swin import Swin

    depths = (2, 2, 6 if depth is None else depth, 2)
    return {
        "vitbook": Swin(
            image_size=image_size,
            num_classes=num_classes,
            depths=depths,
            drop_path=drop_path,
        ),
        "timm": timm.models.swin_transformer.SwinTransformer(
            img_size=image_size,
            num_classes=num_classes,
            depths=depths,
            embed_dim=96,
            num_heads=(3, 6, 12, 24),
            window_size=7,
            drop_path_rate=drop_path,
        ),
    }


def twins_contenders(
    image_size=224, depth=None, num_classes=1000
) -> dict[str, nn.Module]:
    """Twins-SVT-S (``dims=(64, 128, 256, 512)``, ``depths=(2, 2, 10, 4)``, windows 7,
    ``sr_ratios=(8, 4, 2, 1)``): vitbook and timm (the official code's port).

    ``depth`` sets the third stage's depth (Twins-SVT-S: 10), for a quicker run."""
    import timm

    from .models.twins import Twins

    depths = (2, 2, 10 if depth is None else depth, 4)
    return {
        "vitbook": Twins(image_size=image_size, num_classes=num_classes, depths=depths),
        "timm": timm.models.twins.Twins(
            img_size=image_size,
            num_classes=num_classes,
            embed_dims=(64, 128, 256, 512),
            num_heads=(2, 4, 8, 16),
            mlp_ratios=(4, 4, 4, 4),
            depths=depths,
            wss=(7, 7, 7, 7),
            sr_ratios=(8, 4, 2, 1),
        ),
    }


class PaddedViT(nn.Module):
    """A plain ViT on a list of images: every image zero-padded to the largest one's
    size (bottom and right), then one batch. What NaViT's packing replaces."""

    def __init__(self, vit: nn.Module, image_size: int):
        super().__init__()
        self.vit, self.image_size = vit, image_size

    def forward(self, images):
        s = self.image_size
        batch = torch.stack(
            [F.pad(x, (0, s - x.shape[-1], 0, s - x.shape[-2])) for x in images]
        )  # (b, c, s, s)
        return self.vit(batch)


class SeedNaViT(nn.Module):
    """vit-pytorch's NaViT with its own greedy grouping under the same token budget."""

    def __init__(self, navit: nn.Module, token_budget: int):
        super().__init__()
        self.navit, self.token_budget = navit, token_budget

    def forward(self, images):
        return self.navit(
            list(images), group_images=True, group_max_seq_len=self.token_budget
        )


class TimmNaFlex(nn.Module):
    """timm's NaFlexViT on a list of images: each image patchified on its own grid and
    padded to the longest one (its collator's layout: one image per row, a validity
    mask), with the patch coordinates its position embedding reads."""

    def __init__(self, model: nn.Module, patch_size: int):
        super().__init__()
        self.model, self.patch_size = model, patch_size

    def forward(self, images):
        from timm.models.naflexvit import batch_patchify

        p = self.patch_size
        rows = [batch_patchify(x[None], (p, p))[0][0] for x in images]  # (n_i, ppc)
        n = max(len(r) for r in rows)
        patches = torch.stack([F.pad(r, (0, 0, 0, n - len(r))) for r in rows])
        valid = torch.zeros(len(rows), n, dtype=torch.bool, device=patches.device)
        coord = torch.zeros(len(rows), n, 2, dtype=torch.long, device=patches.device)
        for i, x in enumerate(images):
            h, w = x.shape[-2] // p, x.shape[-1] // p
            valid[i, : h * w] = True
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            coord[i, : h * w] = torch.stack([ys.flatten(), xs.flatten()], -1)
        return self.model(patches, patch_coord=coord, patch_valid=valid)


def navit_contenders(
    image_size=224, patch_size=16, dim=192, depth=12, heads=3, num_classes=1000
) -> dict[str, nn.Module]:
    """Variable-resolution images up to ``image_size``: vitbook's NaViT (first-fit
    decreasing), the same NaViT with greedy packing, vit-pytorch's NaViT (greedy),
    timm's NaFlexViT (one image per row, padded; factorized positions, qk-norm and
    attention pooling as NaViT) and a ViT of the same width and depth on a batch
    padded to the largest image.
    The token budget is the largest image's token count."""
    import timm
    from vit_pytorch.na_vit import NaViT as SeedNaViTModel

    from .models.navit import NaViT
    from .models.vit import ViT

    side = image_size // patch_size
    budget = side**2
    shape = dict(patch_size=patch_size, num_classes=num_classes, dim=dim, depth=depth,
                 heads=heads, mlp_dim=4 * dim)  # fmt: skip
    navit = dict(max_image_size=image_size, token_budget=budget, **shape)
    return {
        "vitbook": NaViT(packing="ffd", **navit),
        "vitbook greedy": NaViT(packing="greedy", **navit),
        "vit-pytorch": SeedNaViT(
            SeedNaViTModel(image_size=image_size, dim_head=dim // heads, **shape),
            budget,
        ),
        "timm NaFlex": TimmNaFlex(
            timm.models.naflexvit.NaFlexVit(
                patch_size=patch_size,
                embed_dim=dim,
                depth=depth,
                num_heads=heads,
                num_classes=num_classes,
                pos_embed="factorized",
                qk_norm=True,
                global_pool="map",
                pos_embed_grid_size=(side, side),
            ),
            patch_size,
        ),  # fmt: skip
        "padded ViT": PaddedViT(
            ViT(image_size=image_size, pool="mean", **shape), image_size
        ),  # fmt: skip
    }


def variable_images(batch_size, image_size, device, patch_size=16, seed=0):
    """``batch_size`` random images, sides random multiples of ``patch_size`` from a
    quarter of ``image_size`` up to ``image_size``."""
    generator = torch.Generator().manual_seed(seed)
    smallest = -(-max(patch_size, image_size // 4) // patch_size) * patch_size
    sides = list(range(smallest, image_size + 1, patch_size))  # multiples of the patch
    draw = torch.randint(len(sides), (batch_size, 2), generator=generator).tolist()
    return [
        torch.randn(3, sides[i], sides[j], generator=generator).to(device)
        for i, j in draw
    ]


class LossOf(nn.Module):
    """A self-supervised method as a benchmark contender: ``forward(images)`` returns
    the scalar loss, and ``step_teacher()`` runs whatever the method does after an
    optimizer step (the EMA teacher's update), so a training step costs the same
    work on every side."""

    def __init__(self, method: nn.Module, loss: Callable, after_step=None):
        super().__init__()
        self.method, self._loss, self._after_step = method, loss, after_step

    def forward(self, images):
        return self._loss(self.method, images)

    def step_teacher(self):
        if self._after_step is not None:
            self._after_step(self.method)


def mae_contenders(
    image_size=224, patch_size=16, dim=192, depth=12, heads=3, decoder_dim=128,
    decoder_depth=4, decoder_heads=4, num_classes=None,
) -> dict[str, nn.Module]:  # fmt: skip
    """MAE on a ViT-Ti/16 encoder (75% masking, normalized-pixel loss) with a
    ``decoder_depth`` x ``decoder_dim`` decoder: vitbook, Hugging Face transformers'
    ``ViTMAEForPreTraining`` (the official code's port; vitbook's copy is converted
    from it, so the weights are equal) and vit-pytorch's ``MAE`` (the seed: learned
    decoder positions, no normalized pixels, and an encoder without a class token,
    since its MAE crashes on one)."""
    import transformers
    from vit_pytorch import MAE as SeedMAE
    from vit_pytorch import ViT as SeedViT

    from .reference import mae_from_transformers

    config = transformers.ViTMAEConfig(
        image_size=image_size, patch_size=patch_size, num_channels=3,
        hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads,
        intermediate_size=4 * dim, decoder_hidden_size=decoder_dim,
        decoder_num_hidden_layers=decoder_depth,
        decoder_num_attention_heads=decoder_heads,
        decoder_intermediate_size=4 * decoder_dim, mask_ratio=0.75,
        norm_pix_loss=True, layer_norm_eps=1e-6, attn_implementation="sdpa",
    )  # fmt: skip
    hf = transformers.ViTMAEForPreTraining(config)
    seed_encoder = SeedViT(
        image_size=image_size, patch_size=patch_size, num_classes=1000, dim=dim,
        depth=depth, heads=heads, mlp_dim=4 * dim, dim_head=dim // heads,
        pool="mean",  # its MAE crashes on a class-token encoder (chapter 6)
    )  # fmt: skip
    seed = SeedMAE(
        encoder=seed_encoder, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
        decoder_heads=decoder_heads, decoder_dim_head=decoder_dim // decoder_heads,
    )  # fmt: skip
    return {
        "vitbook": LossOf(mae_from_transformers(hf), lambda m, x: m(x)),
        "transformers": LossOf(hf, lambda m, x: m(pixel_values=x).loss),
        "vit-pytorch": LossOf(seed, lambda m, x: m(x)),
    }


def dino_contenders(
    image_size=224, patch_size=16, dim=192, depth=12, heads=3, out_dim=4096,
    hidden_dim=256, num_classes=None,
) -> dict[str, nn.Module]:  # fmt: skip
    """DINO's training step on a ViT-Ti/16 in the seed's setting, which vit-pytorch's
    ``Dino`` fixes: the teacher sees two global crops, the student two local crops,
    every crop resized to ``image_size``, a head of width ``hidden_dim`` onto
    ``out_dim`` prototypes. vitbook runs ``DINO(variant="seed")``; both update the
    teacher after each step. The augmentations differ (vit-pytorch adds colour jitter
    and blur)."""
    from vit_pytorch import Dino as SeedDino
    from vit_pytorch import ViT as SeedViT

    from .models.vit import ViT
    from .ssl.dino import DINO

    shape = dict(patch_size=patch_size, dim=dim, depth=depth, heads=heads,
                 mlp_dim=4 * dim)  # fmt: skip
    vitbook = DINO(
        ViT(image_size=image_size, num_classes=0, **shape), total_steps=1000,
        global_size=image_size, local_size=image_size, variant="seed",
        out_dim=out_dim, hidden_dim=hidden_dim, bottleneck_dim=hidden_dim,
    )  # fmt: skip
    seed = SeedDino(
        SeedViT(image_size=image_size, num_classes=1000, dim_head=dim // heads,
                **shape),
        image_size=image_size, hidden_layer="to_latent",
        projection_hidden_size=hidden_dim, num_classes_K=out_dim,
    )  # fmt: skip
    return {
        "vitbook": LossOf(vitbook, lambda m, x: m(x), lambda m: m.step_teacher()),
        "vit-pytorch": LossOf(
            seed, lambda m, x: m(x), lambda m: m.update_moving_average()
        ),
    }


def byol_contenders(
    image_size=224, patch_size=16, dim=192, depth=12, heads=3, projection_dim=256,
    hidden_dim=4096, num_classes=None,
) -> dict[str, nn.Module]:  # fmt: skip
    """BYOL's training step on a ViT-Ti/16 (vitbook's ViT inside both, so only the
    method differs): vitbook's ``BYOL`` and byol-pytorch's (simplicial embeddings off),
    the paper's heads (4096 -> ``projection_dim``), two views of ``image_size``, the
    target's EMA update after each step. Each applies its own augmentations."""
    from byol_pytorch import BYOL as ReferenceBYOL

    from .models.vit import ViT
    from .ssl.byol import BYOL

    def backbone():
        return ViT(image_size=image_size, patch_size=patch_size, num_classes=0,
                   dim=dim, depth=depth, heads=heads, mlp_dim=4 * dim)  # fmt: skip

    head_sizes = dict(projection_dim=projection_dim, hidden_dim=hidden_dim,
                      predictor_hidden_dim=hidden_dim)  # fmt: skip
    vitbook = BYOL(backbone(), total_steps=1000, image_size=image_size, **head_sizes)
    reference = ReferenceBYOL(
        backbone(), image_size=image_size, hidden_layer=-1,
        projection_size=projection_dim, projection_hidden_size=hidden_dim,
        use_simplicial_embeddings=False,
    )  # fmt: skip
    return {
        "vitbook": LossOf(vitbook, lambda m, x: m(x), lambda m: m.step_teacher()),
        "byol-pytorch": LossOf(
            reference, lambda m, x: m(x), lambda m: m.update_moving_average()
        ),
    }


def mp3_contenders(
    image_size=224, patch_size=16, dim=192, depth=12, heads=3, mask_ratio=0.75,
    num_classes=None,
) -> dict[str, nn.Module]:  # fmt: skip
    """MP3's training step on a ViT-Ti/16 (class token, 75% masked), three ways with
    the same weights: vitbook's ``MP3``, which projects keys and values for the context
    tokens only (scores ``(1 + n) x (1 + n_keep)``, the paper's cost); the same model
    with ``attention="mask"`` (keys and values for every token, the ``(1 + n) x (1 +
    n)`` scores masked: what vitbook's MP3 did before); and a plain ViT of the same
    size, every token a key and value, with the same position head and loss. There is
    no official code to compare with."""
    from .models.vit import ViT
    from .ssl.mp3 import MP3

    backbone = ViT(image_size=image_size, patch_size=patch_size, num_classes=0,
                   dim=dim, depth=depth, heads=heads, mlp_dim=4 * dim)  # fmt: skip
    gathered = MP3(backbone, mask_ratio=mask_ratio)
    masked = copy.deepcopy(gathered)
    masked.attention = "mask"

    def plain(mp3, images):
        # (b, n, dim): the plain ViT's patch tokens (its position table is zero)
        tokens = mp3.backbone.forward_features(images)[:, mp3.prefix :]
        # (b, n, n)
        logits = mp3.position_head(tokens)
        target = torch.arange(mp3.num_patches, device=logits.device)
        target = target.expand(len(images), -1)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    return {
        "vitbook": LossOf(gathered, lambda m, x: m(x)),
        "masked": LossOf(masked, lambda m, x: m(x)),
        "plain ViT": LossOf(copy.deepcopy(gathered), plain),
    }


BENCHMARKS: dict[str, Callable[..., dict[str, nn.Module]]] = {
    "vit": vit_contenders,
    "swin": swin_contenders,
    "twins": twins_contenders,
    "navit": navit_contenders,
    "mae": mae_contenders,
    "dino": dino_contenders,
    "byol": byol_contenders,
    "mp3": mp3_contenders,
}
# how each benchmark's input batch is made (default: a (b, 3, size, size) tensor)
INPUTS: dict[str, Callable] = {"navit": variable_images}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _forward_step(model, x):
    with torch.no_grad():
        model(x)


def _train_step(model, x, y, optimizer):
    optimizer.zero_grad(set_to_none=True)
    if isinstance(model, LossOf):  # a self-supervised method: its own loss, no labels
        model(x).backward()
        optimizer.step()
        model.step_teacher()
    else:
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def matmul_peak(device, n: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matmul throughput in FLOP/s (median of ``repeats``): the
    roofline every model's achieved FLOP/s is compared with, measured in the same
    run."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b  # warm-up: threads, caches, kernels
    seconds = statistics.median(_time(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n**3 / seconds


def _sdpa_cpu_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flop(
    grad_out, query, key, value, *args, out_shape=None, **kwargs
) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def _cpu_attention_formulas() -> dict:
    """SDPA's CPU kernel and its backward, with the formulas ``FlopCounterMode`` applies
    to the CUDA kernels: its table leaves the CPU kernel out, so that on the CPU
    attention would count no FLOPs at all."""
    aten = torch.ops.aten
    return {
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: (
            _sdpa_cpu_backward_flop
        ),
    }


def count_flops(fn) -> int:
    """Floating-point operations of one call of ``fn``, counted by PyTorch's dispatcher
    with ``FlopCounterMode``'s formulas (matmuls, convolutions and attention, on the
    CPU too; elementwise work is not counted, as in every FLOP count of these
    models)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(
            display=False, custom_mapping=_cpu_attention_formulas()
        )
        with counter:
            fn()
        return counter.get_total_flops()
    except (RuntimeError, AssertionError):
        # its per-module bookkeeping trips over some inputs (NaViT's packed batches):
        # the same formulas, applied without the module hooks
        with _DispatchFlops() as counter:
            fn()
        return counter.total


class _DispatchFlops(TorchDispatchMode):
    """Sum ``FlopCounterMode``'s formulas over every op the dispatcher runs."""

    def __enter__(self):
        from torch.utils.flop_counter import flop_registry, shape_wrapper

        self.total = 0
        extra = _cpu_attention_formulas()
        self.formulas = {
            **flop_registry,
            **{k: shape_wrapper(f) for k, f in extra.items()},
        }
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def _peak_memory(make_step, device) -> float | None:
    """Peak CUDA memory (MiB) of one step, with nothing else of the benchmark resident:
    ``make_step()`` builds a fresh contender (model and optimizer) on the device."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    step = make_step()
    step()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    del step
    torch.cuda.empty_cache()
    return peak


def run(
    name: str,
    batch_size: int = 16,
    rounds: int = 7,
    warmup: int = 2,
    device=None,
    **config,
) -> dict:
    """Measure every contender of ``BENCHMARKS[name]``; returns ``{impl: {metric:
    value}}`` (:class:`Results`, whose ``machine`` holds this run's matmul peak)."""
    if name not in BENCHMARKS:
        raise ValueError(
            f"no benchmark called {name!r}; there are {sorted(BENCHMARKS)}"
        )
    device = get_device() if device is None else torch.device(device)
    size = config.get("image_size", 224)
    if name in INPUTS:
        x = INPUTS[name](batch_size, size, device)
    else:
        x = torch.randn(batch_size, 3, size, size, device=device)
    contenders = BENCHMARKS[name](**config)
    return measure(contenders, x, rounds=rounds, warmup=warmup, device=device)


def measure(
    contenders: dict[str, nn.Module], x, rounds: int = 7, warmup: int = 2, device=None
) -> Results:
    """Time a forward and a training step of every model of ``contenders`` on the
    batch ``x`` (a tensor or a list of images), interleaved, the median of
    ``rounds``; also their FLOP/s as a share of the matmul peak and, on CUDA, their
    peak memory. The models are copied, never trained themselves."""
    device = get_device() if device is None else torch.device(device)
    batch_size = len(x)
    y = torch.randint(0, 10, (batch_size,), device=device)
    templates = {k: copy.deepcopy(m) for k, m in contenders.items()}

    def steps(model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        return {
            "forward": lambda: _forward_step(model.eval(), x),
            "train step": lambda: _train_step(model.train(), x, y, optimizer),
        }

    # peak memory first, each contender alone on the device, built fresh
    memory = {
        k: {
            task: _peak_memory(
                lambda k=k, task=task: steps(copy.deepcopy(templates[k]).to(device))[
                    task
                ],
                device,
            )
            for task in ("forward", "train step")
        }
        for k in templates
    }
    models = {k: m.to(device) for k, m in templates.items()}
    tasks = {k: steps(m) for k, m in models.items()}
    results = {
        # trainable ones: fixed sin-cos tables and EMA teachers are not counted
        k: {
            "params (M)": sum(p.numel() for p in m.parameters() if p.requires_grad)
            / 1e6
        }
        for k, m in models.items()
    }
    peak = matmul_peak(device)
    names = list(models)
    flops = {k: {t: count_flops(fn) for t, fn in tasks[k].items()} for k in names}
    for task in ("forward", "train step"):
        times = {k: [] for k in names}
        for r in range(warmup + rounds):
            # rotate who goes first
            order = names[r % len(names) :] + names[: r % len(names)]
            for k in order:
                t = _time(tasks[k][task], device)
                if r >= warmup:
                    times[k].append(t)
        for k in names:
            seconds = statistics.median(times[k])
            results[k][f"{task} img/s"] = batch_size / seconds
            results[k][f"{task} % peak"] = 100 * flops[k][task] / seconds / peak
            if memory[k][task] is not None:
                results[k][f"{task} peak MiB"] = memory[k][task]
    return Results(results, machine={"matmul GFLOP/s": peak / 1e9}, flops=flops)


class Results(dict):
    """``{implementation: {metric: value}}``, ``machine``: what was measured of the
    machine in the same run (the matmul peak), and ``flops``: ``{implementation:
    {"forward" or "train step": FLOPs counted for one call}}``."""

    def __init__(
        self, rows: dict, machine: dict | None = None, flops: dict | None = None
    ):
        super().__init__(rows)
        self.machine = machine or {}
        self.flops = flops or {}


def report(results: dict, baseline: str = "vitbook") -> str:
    """One row per implementation: each number, and its ratio to ``baseline``'s, in
    blocks of three metrics so that no line is wider than 88 characters."""
    machine = getattr(results, "machine", {})
    metrics = list(next(iter(results.values())))
    lines = []
    for group in range(0, len(metrics), 3):
        lines += _report_block(results, metrics[group : group + 3], baseline) + [""]
    if machine:
        lines.append(
            f"float32 matmul peak, measured in this run: "
            f"{machine['matmul GFLOP/s']:.0f} GFLOP/s.\n'% peak': each step's "
            "achieved FLOP/s (counted by FlopCounterMode) against that peak."
        )

    lines.append(
        f"ratios are against {baseline}; img/s and % peak: higher is better;\n"
        "peak MiB (CUDA only, each contender alone on the device): lower is leaner"
    )
    return "\n".join(lines)


def _report_block(results: dict, metrics: list[str], baseline: str) -> list[str]:
    lines = [f"{'implementation':<14}" + "".join(f"{m:>24}" for m in metrics)]
    for impl, values in results.items():
        cells = []
        for m in metrics:
            v, base = values[m], results[baseline][m]
            cells.append(
                f"{v:>12.1f}"
                + (f" ({v / base:>5.2f}x)" if impl != baseline else " " * 9)
            )
        lines.append(f"{impl:<14}" + "".join(f"{c:>24}" for c in cells))
    return lines


# ``--quick``: every benchmark shrunk (smaller images, shallower) so that ``all``
# finishes in about a minute on a 2-core CPU; the full run uses each function's
# defaults, the papers' small sizes at 224 pixels
QUICK: dict[str, dict] = {
    "vit": dict(image_size=96, depth=4),
    "swin": dict(image_size=112, depth=2),
    "twins": dict(image_size=128, depth=2),
    "navit": dict(image_size=96, depth=4),
    "mae": dict(image_size=96, depth=4, decoder_depth=2),
    "dino": dict(image_size=64, depth=4, out_dim=1024),
    "byol": dict(image_size=64, depth=4, hidden_dim=1024),
    "mp3": dict(image_size=96, depth=4),
}


def summary(results: dict[str, dict], settings: dict[str, str] | None = None) -> str:
    """One table for many benchmarks: for every reference of every benchmark, the
    parameters on both sides and vitbook's throughput divided by the reference's
    (above 1.00x: vitbook is faster), with each side's share of the matmul peak."""
    head = (
        f"{'model':<7}{'reference':<16}{'params (M)':>12}{'train step':>16}"
        f"{'forward':>16}{'% peak, train':>16}\n"
        f"{'':<7}{'':<16}{'vitbook':>8}{'ref':>6}{'img/s':>9}{'vb/ref':>7}"
        f"{'img/s':>9}{'vb/ref':>7}{'vitbook':>9}{'ref':>7}"
    )
    lines = [head]
    for name, rows in results.items():
        vb = rows["vitbook"]
        for ref, r in rows.items():
            if ref == "vitbook":
                continue
            lines.append(
                f"{name:<7}{ref:<16}{vb['params (M)']:>8.2f}{r['params (M)']:>6.2f}"
                f"{r['train step img/s']:>9.1f}"
                f"{vb['train step img/s'] / r['train step img/s']:>6.2f}x"
                f"{r['forward img/s']:>9.1f}"
                f"{vb['forward img/s'] / r['forward img/s']:>6.2f}x"
                f"{vb['train step % peak']:>9.1f}{r['train step % peak']:>7.1f}"
            )
    if settings:
        lines += [""] + [f"{name}: {text}" for name, text in settings.items()]
    lines.append(
        "img/s: the reference's throughput; vb/ref: vitbook's divided by it (medians)"
    )
    return "\n".join(lines)


# what each benchmark pits against what (the functions' docstrings say more)
SETTINGS: dict[str, str] = {
    "vit": "ViT-Ti/16 (DeiT-Tiny), classification",
    "swin": "Swin-T, window 7, stochastic depth 0.1 on both sides",
    "twins": "Twins-SVT-S, windows 7, sub-sampling 8, 4, 2, 1",
    "navit": "ViT-Ti/16 widths on variable-size images, one token budget",
    "mae": "MAE step, ViT-Ti/16 encoder, 75% masked, normalized pixels",
    "dino": "DINO step (seed setting: 2+2 crops), ViT-Ti/16, EMA update",
    "byol": "BYOL step, ViT-Ti/16 in both, paper's heads, EMA update",
    "mp3": "MP3 step, ViT-Ti/16, 75% masked, gathered context against masked",
}


def describe(name: str, batch_size: int, config: dict) -> str:
    """The settings of one benchmark run, for the summary's footnotes."""
    knobs = "".join(f", {k.replace('_', ' ')} {v}" for k, v in config.items())
    return f"{SETTINGS[name]}; batch {batch_size}{knobs}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m vitbook.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("name", choices=sorted(BENCHMARKS) + ["all"])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, batch 8, 5 rounds: about a minute for all",
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument(
        "--depth",
        type=int,
        default=None,
        help="vit, navit, mae, dino, byol, mp3: number of blocks (default 12); "
        "swin, twins: depth of the third stage (default 6, 10)",
    )
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)  # fmt: skip
    device = get_device(args.device)
    names = sorted(BENCHMARKS) if args.name == "all" else [args.name]
    batch_size = args.batch_size or (8 if args.quick else 16)
    rounds = args.rounds or (5 if args.quick else 7)
    print(
        f"{args.name}: batch {batch_size}, {rounds} rounds (median), device "
        f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    start = time.perf_counter()
    results, settings = {}, {}
    for name in names:
        config = dict(QUICK[name]) if args.quick else {}
        if args.image_size is not None:
            config["image_size"] = args.image_size
        if args.depth is not None:
            config["depth"] = args.depth
        results[name] = run(
            name,
            batch_size=batch_size,
            rounds=rounds,
            warmup=1 if args.quick else 2,
            device=device,
            **config,
        )
        settings[name] = describe(name, batch_size, config)
        if len(names) == 1:
            print(report(results[name]))
            if name == "navit":
                size = config.get("image_size", 224)
                print(navit_utilization(batch_size, size))
            if name == "mp3":
                print(mp3_costs(results[name]))
            print()
    print(summary(results, settings))
    peaks = [r.machine["matmul GFLOP/s"] for r in results.values()]
    print(
        f"float32 matmul peak measured in this run: {statistics.median(peaks):.0f} "
        f"GFLOP/s; {time.perf_counter() - start:.0f} s in all"
    )


def mp3_costs(results: Results) -> str:
    """The FLOPs of each MP3 contender's forward and training step (counted by
    ``FlopCounterMode``) against the gathered context's, and what the gathered context
    gains in time over the masked one and over the plain ViT (medians, interleaved)."""
    flops = {
        k: {f"{task} GFLOP": v / 1e9 for task, v in tasks.items()}
        for k, tasks in results.flops.items()
    }
    lines = ["FLOPs counted by FlopCounterMode (fewer is cheaper):"]
    lines += _report_block(flops, list(next(iter(flops.values()))), "vitbook")
    for task in ("forward", "train step"):
        # the gathered context's time over each one's: their img/s over its img/s
        time = {k: r[f"{task} img/s"] / results["vitbook"][f"{task} img/s"]
                for k, r in results.items()}  # fmt: skip
        lines.append(
            f"{task}: the gathered context, {time['masked']:.2f}x the masked one's "
            f"time, {time['plain ViT']:.2f}x the plain ViT's"
        )
    return "\n".join(lines)


def navit_utilization(batch_size: int, image_size: int, patch_size: int = 16) -> str:
    """Real tokens / all tokens of the benchmark's batch, per way of batching it."""
    from .packing import pack, padding_utilization

    images = variable_images(batch_size, image_size, "cpu", patch_size)
    lengths = [(x.shape[1] // patch_size) * (x.shape[2] // patch_size) for x in images]
    budget = (image_size // patch_size) ** 2
    ffd, greedy = pack(lengths, budget, "ffd"), pack(lengths, budget, "greedy")
    return (
        f"token utilization (budget {budget}): first-fit decreasing "
        f"{ffd.utilization:.1%} ({ffd.num_sequences} sequences), greedy "
        f"{greedy.utilization:.1%} ({greedy.num_sequences}), padded to the largest "
        f"{padding_utilization(lengths):.1%} ({len(lengths)} images)"
    )


if __name__ == "__main__":
    main()
