from vitbook import bench


def test_benchmark_measures_every_contender_and_reports_ratios():
    # a smoke test of the harness on a tiny model: it asserts what is measured, never how fast
    results = bench.run(
        "vit",
        batch_size=2,
        rounds=1,
        warmup=0,
        device="cpu",
        image_size=32,
        patch_size=16,
        dim=32,
        depth=1,
        heads=2,
        num_classes=10,
    )
    assert set(results) == {"vitbook", "timm", "vit-pytorch"}
    assert all(
        r["forward img/s"] > 0 and r["train step img/s"] > 0 for r in results.values()
    )
    # vitbook and timm build the same architecture: the same number of weights
    assert results["vitbook"]["params (M)"] == results["timm"]["params (M)"]
    text = bench.report(results)
    assert "timm" in text and "x)" in text


def test_swin_benchmark_pits_vitbook_against_timm():
    results = bench.run(
        "swin",
        batch_size=1,
        rounds=1,
        warmup=0,
        device="cpu",
        image_size=56,
        depth=2,
        num_classes=10,
    )
    assert set(results) == {"vitbook", "timm"}
    assert results["vitbook"]["params (M)"] == results["timm"]["params (M)"]


def test_unknown_benchmark_is_named():
    import pytest

    with pytest.raises(ValueError, match="no benchmark called 'resnet'"):
        bench.run("resnet")


def test_navit_benchmark_runs_packed_seed_and_padded_models_on_one_batch():
    results = bench.run(
        "navit",
        batch_size=4,
        rounds=1,
        warmup=0,
        device="cpu",
        image_size=64,
        patch_size=16,
        dim=32,
        depth=1,
        heads=2,
        num_classes=10,
    )
    assert set(results) == {"vitbook", "vitbook greedy", "vit-pytorch", "padded ViT"}
    assert all(r["train step img/s"] > 0 for r in results.values())
    line = bench.navit_utilization(16, 64)
    assert "first-fit decreasing" in line and "padded to the largest" in line
