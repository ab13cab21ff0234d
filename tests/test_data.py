import gzip
import struct

import numpy as np
import pytest
import torch

from vitbook import data


def write_idx(path, array: np.ndarray, gz=True):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def fake_fashion(directory, n_train=12, n_test=5, value=7):
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            directory / f"{split}-images-idx3-ubyte.gz", np.full((n, 28, 28), value)
        )
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return directory


def test_reads_idx_files_from_an_explicit_root(tmp_path):
    ds = data.fashion_mnist("test", root=fake_fashion(tmp_path / "fm"))
    assert ds.images.shape == (5, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [0, 1, 2, 3, 4]


def test_root_beats_environment_which_beats_the_system_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("VITBOOK_DATA", str(fake_fashion(tmp_path / "env", value=1)))
    assert (
        data.fashion_mnist(
            "train", root=fake_fashion(tmp_path / "root", value=2)
        ).images.max()
        == 2
    )
    assert data.fashion_mnist("train").images.max() == 1


def test_uncompressed_and_torchvision_layouts_are_found(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 3), ("t10k", 2)):
        write_idx(raw / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28)), gz=False)
        write_idx(raw / f"{split}-labels-idx1-ubyte", np.zeros(n), gz=False)
    assert len(data.fashion_mnist("train", root=tmp_path)) == 3


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "nothing-here")
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "no-cache")
    monkeypatch.delenv("VITBOOK_DATA", raising=False)
    with pytest.raises(data.DatasetNotFound) as error:
        data.fashion_mnist("train", download=False)
    message = str(error.value)
    assert (
        "nothing-here" in message
        and "apt-get install dataset-fashion-mnist" in message
        and "VITBOOK_DATA" in message
    )


def test_a_root_that_does_not_exist_is_an_error_not_a_silent_fallback(tmp_path):
    with pytest.raises(data.DatasetNotFound, match="does not exist"):
        data.fashion_mnist("train", root=tmp_path / "typo")


def test_truncated_file_is_reported(tmp_path):
    d = fake_fashion(tmp_path / "fm")
    raw = gzip.open(d / "t10k-images-idx3-ubyte.gz").read()
    gzip.open(d / "t10k-images-idx3-ubyte.gz", "wb").write(raw[:-10])
    with pytest.raises(ValueError, match="truncated"):
        data.fashion_mnist("test", root=d)


def test_bad_split_is_named():
    with pytest.raises(ValueError, match="split='val' is not one of"):
        data.fashion_mnist("val")


def test_loader_normalizes_and_reshuffles_reproducibly(tmp_path):
    ds = data.fashion_mnist("train", root=fake_fashion(tmp_path / "fm", n_train=10))
    ds.images[:] = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1) * 20
    order = lambda loader: [
        int(round((x[:, 0, 0, 0] * ds.std[0] + ds.mean[0]).mul(255).item() / 20))
        for x, _ in loader
    ]
    a, b = ds.loader(1, shuffle=True, seed=3), ds.loader(1, shuffle=True, seed=3)
    first, second = order(a), order(a)
    assert first == order(b) and second == order(b), "same seed, different batches"
    assert sorted(first) == list(range(10)) and first != second, (
        "each epoch is a new permutation of all samples"
    )
    x, y = next(iter(ds.loader(4)))
    assert (
        x.dtype == torch.float32
        and x.shape == (4, 1, 28, 28)
        and y.dtype == torch.int64
    )
    torch.testing.assert_close(
        ds.denormalize(ds.normalize(ds.images[:4])), ds.images[:4].float() / 255
    )


def test_loader_length_with_and_without_drop_last(tmp_path):
    ds = data.fashion_mnist("train", root=fake_fashion(tmp_path / "fm", n_train=10))
    assert len(ds.loader(4)) == 3 and len(list(ds.loader(4))) == 3
    assert (
        len(ds.loader(4, drop_last=True)) == 2
        and len(list(ds.loader(4, drop_last=True))) == 2
    )
    with pytest.raises(ValueError, match="batch_size=0"):
        ds.loader(0)


def test_subset_is_seeded():
    images = torch.zeros(100, 1, 2, 2, dtype=torch.uint8)
    ds = data.ImageTensors(images, torch.arange(100), ("a",), (0.5,), (0.5,))
    assert torch.equal(ds.subset(10, seed=1).labels, ds.subset(10, seed=1).labels)
    assert not torch.equal(ds.subset(10, seed=1).labels, ds.subset(10, seed=2).labels)


def test_real_fashion_mnist_when_installed():
    if not (data.DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(
            "Debian's dataset-fashion-mnist is not installed (make data installs it)"
        )
    test = data.fashion_mnist("test")
    assert test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    mean = test.images.float().mean().item() / 255
    assert abs(mean - test.mean[0]) < 0.01, (
        "the normalization constants do not fit the data"
    )


def test_sample_photo_is_a_real_rgb_image():
    photo = data.sample_photo("astronaut", size=64)
    assert (
        photo.shape == (3, 64, 64)
        and 0 <= photo.min()
        and photo.max() <= 1
        and photo.std() > 0.1
    )
    with pytest.raises(ValueError, match="no image called"):
        data.sample_photo("no-such-photo")


def test_cifar10_offline_without_a_copy_says_how_to_get_it(tmp_path):
    with pytest.raises(
        data.DatasetNotFound,
        match="CIFAR-10 is not in .* Run once with a network connection",
    ):
        data.cifar10("train", root=tmp_path, download=False)
    with pytest.raises(ValueError, match="split='val'"):
        data.cifar10("val")
