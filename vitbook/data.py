"""Datasets held in memory as uint8 tensors, and a loader that normalizes on the fly.

Small images do not need a DataLoader with workers: a whole Fashion-MNIST split is 47 MB
of uint8, so a batch is one index into a tensor, converted to float on the device it
trains on.

Where Fashion-MNIST comes from, first match wins:
  1. ``root=`` passed to :func:`fashion_mnist`, 2. the directory in ``$VITBOOK_DATA``,
  3. ``/usr/share/datasets/fashion-mnist`` (Debian's package ``dataset-fashion-mnist``),
  4. torchvision's download into ``~/.cache/vitbook`` (online only: what Colab uses).
"""

from __future__ import annotations

import copy
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vitbook"

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFound(FileNotFoundError):
    """No copy of a dataset was found and none could be downloaded."""


@dataclass
class ImageTensors:
    """A labelled image set in memory: ``images`` uint8 ``(n, c, h, w)``, ``labels``
    int64 ``(n,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (n, c, h, w), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, n: int | None, seed: int = 0) -> "ImageTensors":
        """A random but class-balanced-in-expectation subset of ``n`` samples (all of
        them when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[
            :n
        ]
        return ImageTensors(
            self.images[idx], self.labels[idx], self.classes, self.mean, self.std
        )

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> "ImageTensors":
        """The same set on ``device``: moved once, every batch is then indexed there (on
        a GPU, no copy from the host per step)."""
        return ImageTensors(
            self.images.to(device),
            self.labels.to(device),
            self.classes,
            self.mean,
            self.std,
        )

    def pin_memory(self) -> "ImageTensors":
        """The same set in page-locked host memory, so ``non_blocking`` copies to a GPU
        really overlap with compute (a no-op without CUDA)."""
        if not torch.cuda.is_available() or self.images.is_pinned():
            return self
        return ImageTensors(
            self.images.pin_memory(),
            self.labels.pin_memory(),
            self.classes,
            self.mean,
            self.std,
        )

    def _constants(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean, std`` as ``(1, c, 1, 1)`` tensors on ``device``, built once per
        device."""
        cache = self.__dict__.setdefault("_stats", {})
        key = torch.device(device)
        if key not in cache:
            cache[key] = tuple(
                torch.tensor(v, device=key).view(1, -1, 1, 1)
                for v in (self.mean, self.std)
            )
        return cache[key]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(b, c, h, w)`` -> float, zero mean and unit variance per channel."""
        mean, std = self._constants(images.device)
        return (images.float() / 255.0 - mean) / std

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize`, into [0, 1] for plotting."""
        mean, std = self._constants(images.device)
        return (images * std + mean).clamp(0, 1)

    def loader(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> "TensorLoader":
        return TensorLoader(
            self,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            device=device,
        )


class TensorLoader:
    """Batches ``(float images, labels)`` from an :class:`ImageTensors`, normalized on
    ``device``.

    Shuffling uses its own generator seeded by ``seed`` and the epoch number, so two
    runs with the same seed see the same batches in the same order.
    """

    def __init__(
        self,
        data: ImageTensors,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device=None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.data, self.batch_size = data, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = 0, 1  # see shard()
        self.device = torch.device(device) if device is not None else None
        if (
            self.device is not None
            and self.device.type == "cuda"
            and data.device.type == "cpu"
        ):
            self.data = data = data.pin_memory()  # makes non_blocking real
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def shard(self, rank: int, world_size: int) -> "TensorLoader":
        """This loader as rank ``rank`` of ``world_size`` data-parallel processes sees
        it: the same global batches in the same order, of which it takes every
        ``world_size``-th sample from its ``rank``-th on (DistributedSampler's split,
        applied per batch). ``batch_size`` stays the global batch."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        if self.batch_size % world_size:
            raise ValueError(
                f"batch_size={self.batch_size} (the global batch) must be divisible "
                f"by world_size={world_size}, so that every rank weighs the same"
            )
        shard = copy.copy(self)
        shard.rank, shard.world_size = rank, world_size
        return shard

    def __iter__(self):
        n = len(self.data)
        if self.shuffle:  # drawn on the CPU, so the order is the same on every device
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        order = order.to(self.data.device)  # index where the images are
        self.epoch += 1
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size][self.rank :: self.world_size]
            images, labels = self.data.images[idx], self.data.labels[idx]
            if self.device is not None:
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
            yield self.data.normalize(images), labels


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format: magic, dims, then raw bytes), gzipped or
    not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(
            f"{path} is truncated: header says {tuple(dims)}, found {data.size} bytes"
        )
    return data.reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for sub in ("", "FashionMNIST/raw", "raw"):
        for name in (stem + ".gz", stem):
            if (directory / sub / name).is_file():
                return directory / sub / name
    return None


def _fashion_dirs(root) -> list[tuple[str, Path]]:
    dirs = []
    if root is not None:
        dirs.append(("root argument", Path(root)))
    if os.environ.get("VITBOOK_DATA"):
        dirs.append(("$VITBOOK_DATA", Path(os.environ["VITBOOK_DATA"])))
    dirs += [
        ("Debian package dataset-fashion-mnist", DEBIAN_DIR),
        ("download cache", CACHE_DIR),
    ]
    return dirs


def fashion_mnist(
    split: str = "train", root=None, download: bool = True
) -> ImageTensors:
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of 10 clothing classes.

    ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000).
    """
    if split not in _IDX_FILES:
        raise ValueError(f"split={split!r} is not one of {tuple(_IDX_FILES)}")
    image_stem, label_stem = _IDX_FILES[split]
    searched = []
    for what, directory in _fashion_dirs(root):
        images, labels = (
            _find_idx(directory, image_stem),
            _find_idx(directory, label_stem),
        )
        if images and labels:
            return _fashion_from_idx(images, labels)
        searched.append(f"{directory} ({what})")
        if what == "root argument" and root is not None and not directory.exists():
            raise DatasetNotFound(f"root={str(root)!r} does not exist")
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(CACHE_DIR), train=True, download=True)
            FashionMNIST(str(CACHE_DIR), train=False, download=True)
        except (
            Exception
        ) as error:  # offline, proxy, disk: the message below says what to do
            searched.append(
                f"torchvision download into {CACHE_DIR} ({type(error).__name__}: "
                f"{error})"
            )
        else:
            return fashion_mnist(split, CACHE_DIR, download=False)
    raise DatasetNotFound(
        "Fashion-MNIST was not found. Looked in:\n  "
        + "\n  ".join(searched)
        + "\nTo get it: `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
        "or run once with a network connection (torchvision downloads it), or put the "
        "four idx .gz files in a directory and set VITBOOK_DATA to it."
    )


def _fashion_from_idx(image_path: Path, label_path: Path) -> ImageTensors:
    # (n, 1, 28, 28) uint8
    images = torch.from_numpy(_read_idx(image_path).copy())[:, None]
    labels = torch.from_numpy(_read_idx(label_path).astype(np.int64))
    return ImageTensors(images, labels, FASHION_CLASSES, mean=(0.2860,), std=(0.3530,))


def cifar10(split: str = "train", root=None, download: bool = True) -> ImageTensors:
    """CIFAR-10 (Krizhevsky 2009) through torchvision: 32x32 colour images, 10 classes.
    Needs a network once."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not one of ('train', 'test')")
    from torchvision.datasets import CIFAR10

    root = Path(root or os.environ.get("VITBOOK_DATA") or CACHE_DIR)
    try:
        ds = CIFAR10(str(root), train=split == "train", download=download)
    except Exception as error:
        raise DatasetNotFound(
            f"CIFAR-10 is not in {root} and could not be downloaded ({error}). "
            "Run once with a network connection, or set VITBOOK_DATA to a directory "
            "that holds cifar-10-batches-py/."
        ) from error
    # (n, 3, 32, 32) uint8
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(ds.targets, dtype=torch.int64)
    return ImageTensors(
        images,
        labels,
        CIFAR10_CLASSES,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    )


def sample_photo(name: str = "astronaut", size: int | None = 224) -> torch.Tensor:
    """A real photo shipped with scikit-image, as a float ``(3, size, size)`` tensor in
    [0, 1]."""
    import skimage.data
    from skimage.transform import resize

    if not hasattr(skimage.data, name):
        raise ValueError(f"skimage.data has no image called {name!r}")
    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
    img = img / 255.0 if img.max() > 1 else img
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3]
    if size is not None:
        side = min(img.shape[:2])  # centre square crop, then resize
        top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        img = resize(
            img[top : top + side, left : left + side], (size, size), anti_aliasing=True
        )
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()


def sample_photos(
    names=("astronaut", "coffee", "chelsea", "rocket"),
    long_side: int = 224,
    patch_size: int = 16,
) -> list[torch.Tensor]:
    """Real photos from scikit-image at their native aspect ratio: float ``(3, h, w)``
    in [0, 1], the longer side ``long_side``, both sides rounded to a multiple of
    ``patch_size`` (the aspect ratio moves by less than one patch)."""
    import torch.nn.functional as F

    if long_side % patch_size:
        raise ValueError(
            f"long_side {long_side} is not divisible by patch_size {patch_size}"
        )
    photos = []
    for name in names:
        full = sample_photo(name, size=None)  # (3, H, W)
        h, w = full.shape[-2:]
        ratio = long_side / max(h, w)
        size = [
            max(patch_size, round(s * ratio / patch_size) * patch_size) for s in (h, w)
        ]
        photo = F.interpolate(full[None], size=size, mode="bilinear", antialias=True)
        photos.append(photo[0].clamp(0, 1))
    return photos


def patch_multiples(low: int, high: int, patch_size: int) -> list[int]:
    """The sides ``low <= s <= high`` that are multiples of ``patch_size``."""
    sides = [s for s in range(low, high + 1) if s % patch_size == 0 and s > 0]
    if not sides:
        raise ValueError(
            f"no multiple of patch_size {patch_size} lies in [{low}, {high}]"
        )
    return sides


class VariableResolutionLoader:
    """Batches ``(list of float images (c, h_i, w_i), labels)``: every image resized to
    its own random height and width, drawn from the multiples of ``patch_size`` in
    ``heights`` and ``widths`` (inclusive ranges), so aspect ratios vary too.

    No per-sample PIL: the images of a batch that drew the same size are resized
    together by one ``F.interpolate`` (bilinear, antialiased). The sizes and the order
    come from a generator seeded by ``seed`` and the epoch, so two loaders with the
    same seed give the same batches. ``heights=(28, 28), widths=(14, 14)`` is a fixed
    size, for evaluation at one resolution.
    """

    def __init__(
        self,
        data: ImageTensors,
        batch_size: int,
        heights=(14, 42),
        widths=None,
        patch_size: int = 7,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device=None,
    ):
        self.base = TensorLoader(data, batch_size, shuffle, seed, drop_last, device)
        self.heights = patch_multiples(*heights, patch_size)
        self.widths = patch_multiples(*(widths or heights), patch_size)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def sizes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, 2)`` random (height, width) pairs."""
        hs = torch.tensor(self.heights)[
            torch.randint(len(self.heights), (n,), generator=generator)
        ]
        ws = torch.tensor(self.widths)[
            torch.randint(len(self.widths), (n,), generator=generator)
        ]
        return torch.stack((hs, ws), 1)

    def __iter__(self):
        import torch.nn.functional as F

        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.base.epoch)
        for images, labels in self.base:  # normalized (b, c, 28, 28)
            sizes = self.sizes(len(images), generator)
            out: list = [None] * len(images)
            for h, w in torch.unique(sizes, dim=0).tolist():
                idx = ((sizes[:, 0] == h) & (sizes[:, 1] == w)).nonzero()[:, 0]
                # (k, c, h, w)
                resized = F.interpolate(
                    images[idx.to(images.device)],
                    size=(h, w),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )
                for i, image in zip(idx.tolist(), resized):
                    out[i] = image
            yield out, labels


def main() -> None:
    """Make sure Fashion-MNIST is there (``make data`` calls this), and say so."""
    train, test = fashion_mnist("train"), fashion_mnist("test")
    print(
        f"Fashion-MNIST ready: {len(train)} train and {len(test)} test images of shape "
        f"{tuple(train.images.shape[1:])}"
    )


if __name__ == "__main__":
    main()
