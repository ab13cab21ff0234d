import inspect
from types import SimpleNamespace

import pytest
import torch

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
    assert results.machine["matmul GFLOP/s"] > 0
    for r in results.values():  # achieved FLOP/s as a share of the measured matmul peak
        assert r["forward % peak"] > 0 and r["train step % peak"] > 0
    text = bench.report(results)
    assert "timm" in text and "x)" in text and "matmul peak" in text
    assert max(len(line) for line in text.splitlines()) <= 88


def test_flop_count_of_a_linear_layer_is_2_n_in_out():
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16)
    assert bench.count_flops(lambda: layer(x)) == 2 * 4 * 16 * 8


def test_swin_contenders_share_the_same_stochastic_depth():
    models = bench.swin_contenders(image_size=56, depth=2, num_classes=10)

    def rates(model):  # per-block rates (timm has two DropPath modules per block)
        return sorted(
            {
                round(float(getattr(m, "p", getattr(m, "drop_prob", 0.0))), 6)
                for m in model.modules()
                if type(m).__name__ == "DropPath"
            }
            - {0.0}
        )

    assert rates(models["vitbook"]) == rates(models["timm"])
    assert max(rates(models["vitbook"])) == 0.1


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


def test_twins_benchmark_pits_vitbook_against_timm_with_the_same_weights():
    results = bench.run(
        "twins",
        batch_size=1,
        rounds=1,
        warmup=0,
        device="cpu",
        image_size=64,
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
    assert set(results) == {
        "vitbook", "vitbook greedy", "vit-pytorch", "timm NaFlex", "padded ViT"
    }
    assert all(r["train step img/s"] > 0 for r in results.values())
    line = bench.navit_utilization(16, 64)
    assert "first-fit decreasing" in line and "padded to the largest" in line


def test_the_dispatch_fallback_counts_what_flop_counter_mode_counts():
    from vitbook import ViT

    model = ViT(image_size=16, patch_size=4, num_classes=3, dim=16, depth=1, heads=2)
    x = torch.randn(2, 3, 16, 16)
    with bench.DispatchFlops() as counter:
        model(x).sum().backward()
    assert counter.total == bench.count_flops(lambda: model(x).sum().backward()) > 0


TINY = dict(image_size=32, patch_size=16, dim=32, depth=1, heads=2)


def test_mae_benchmark_pits_vitbook_against_transformers_with_the_same_weights():
    results = bench.run("mae", batch_size=2, rounds=1, warmup=0, device="cpu",
                        decoder_dim=16, decoder_depth=1, decoder_heads=2, **TINY)  # fmt: skip
    assert set(results) == {"vitbook", "transformers", "vit-pytorch"}
    # vitbook's MAE is converted from the transformers one: equal parameter counts
    assert results["vitbook"]["params (M)"] == results["transformers"]["params (M)"]


def test_a_method_training_step_updates_the_ema_teacher():
    models = bench.dino_contenders(out_dim=64, hidden_dim=16, **TINY)
    for name, contender in models.items():
        teacher = (
            contender.method.teacher
            if name == "vitbook"
            else contender.method._get_teacher_encoder()
        )
        before = [p.detach().clone() for p in teacher.parameters()]
        optimizer = torch.optim.AdamW(contender.parameters(), lr=1e-2)
        bench.train_step(contender.train(), torch.randn(2, 3, 32, 32), None, optimizer)
        after = list(teacher.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before)), name


def test_summary_has_one_row_per_reference_and_fits_88_columns():
    row = {"params (M)": 1.0, "train step img/s": 10.0, "forward img/s": 40.0,
           "train step % peak": 5.0}  # fmt: skip
    results = {
        "vit": {"vitbook": row, "timm": {**row, "train step img/s": 5.0},
                "vit-pytorch": row},
        "swin": {"vitbook": row, "timm": row},
    }  # fmt: skip
    text = bench.summary(results, {"vit": bench.describe("vit", 8, bench.QUICK["vit"])})
    rows = [line for line in text.splitlines() if line.startswith(("vit ", "swin "))]
    assert [r.split()[:2] for r in rows] == [
        ["vit", "timm"], ["vit", "vit-pytorch"], ["swin", "timm"]
    ]  # fmt: skip
    assert "2.00x" in rows[0]  # vitbook's 10 img/s over timm's 5
    assert max(len(line) for line in text.splitlines()) <= 88


def test_byol_benchmark_pits_vitbook_against_byol_pytorch_with_equal_heads():
    pytest.importorskip("byol_pytorch")
    results = bench.run("byol", batch_size=2, rounds=1, warmup=0, device="cpu",
                        projection_dim=8, hidden_dim=16, **TINY)  # fmt: skip
    assert set(results) == {"vitbook", "byol-pytorch"}
    # the same backbone class and head sizes on both sides: the same trainable weights
    assert results["vitbook"]["params (M)"] == results["byol-pytorch"]["params (M)"]


def test_count_flops_counts_attention_on_the_cpu():
    # SDPA's CPU kernel is missing from FlopCounterMode's table: count it as its CUDA
    # kernels are, 2 b h n m d for q k^T and as many for the weighted values
    b, h, n, m, d = 2, 3, 10, 4, 8
    q = torch.randn(b, h, n, d, requires_grad=True)
    k, v = torch.randn(b, h, m, d), torch.randn(b, h, m, d)

    def attend():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    assert bench.count_flops(attend) == 4 * b * h * n * m * d
    # the backward recomputes q k^T and does 4 more products of the same size
    step = bench.count_flops(lambda: attend().sum().backward())
    assert step == (4 + 10) * b * h * n * m * d


def test_mp3_benchmark_counts_fewer_flops_for_the_gathered_context():
    b, depth, dim = 2, 2, 32
    config = dict(image_size=64, patch_size=16, dim=dim, depth=depth, heads=2)
    results = bench.run("mp3", batch_size=b, rounds=1, warmup=0, device="cpu", **config)
    assert set(results) == {"vitbook", "masked", "plain ViT"}
    assert len({r["params (M)"] for r in results.values()}) == 1  # the same weights
    flops = results.flops
    assert flops["masked"] == flops["plain ViT"]  # a mask costs no counted FLOPs
    assert flops["vitbook"]["train step"] < flops["masked"]["train step"]
    # 17 tokens (class token and a 4x4 grid), 5 of them keys and values (the class
    # token and 4 context patches): per layer, keys and values are not projected for
    # 12 tokens (2 projections of dim x dim), and 12 columns of the 17 x 17 scores and
    # of the weighted sum are not computed
    t, m = 17, 5
    saved = depth * (2 * 2 * b * (t - m) * dim * dim + 2 * 2 * b * t * (t - m) * dim)
    assert flops["masked"]["forward"] - flops["vitbook"]["forward"] == saved
    text = bench.mp3_costs(results)
    assert "x the masked one's time" in text and "GFLOP" in text
    assert max(len(line) for line in text.splitlines()) <= 88


# --------------------------------------------------------------------------- timing
def test_interleaved_median_rotates_the_order_and_takes_the_median(monkeypatch):
    # a clock that each call moves on by its next duration: no real time is measured
    clock = [0.0]
    fake_time = SimpleNamespace(perf_counter=lambda: clock[0])
    monkeypatch.setattr(bench.timing, "time", fake_time)
    # per call, the warm-up round first (100: never counted), then three rounds
    durations = {"a": [100, 9, 2, 1], "b": [100, 4, 10, 4], "c": [100, 6, 7, 8]}
    order = []

    def call(k):
        def fn():
            order.append(k)
            clock[0] += durations[k].pop(0)

        return fn

    medians = bench.interleaved_median({k: call(k) for k in "abc"}, 3, warmup=1)
    # every round calls each once, the first one moving on by one each round
    assert "".join(order) == "abc" + "bca" + "cab" + "abc"
    assert medians == {"a": 2, "b": 4, "c": 7}


@pytest.mark.parametrize(
    "calls, rounds, warmup, message",
    [
        ({}, 3, 0, "calls is empty"),
        ({"a": lambda: None}, 0, 0, r"rounds 0 must be >= 1"),
        ({"a": lambda: None}, 3, -1, r"warmup -1 must be >= 0"),
    ],
)
def test_interleaved_median_refuses_what_has_no_median(calls, rounds, warmup, message):
    with pytest.raises(ValueError, match=message):
        bench.interleaved_median(calls, rounds, warmup)


# ------------------------------------------------------------------------- registry
def test_every_benchmark_is_one_registry_entry_and_its_quick_sizes_fit_it():
    assert sorted(bench.REGISTRY) == [
        "byol", "dino", "mae", "mp3", "navit", "swin", "twins", "vit"
    ]  # fmt: skip
    for name, benchmark in bench.REGISTRY.items():
        sizes = inspect.signature(benchmark.contenders).parameters
        # --quick's sizes, and the command line's --image-size and --depth
        assert set(benchmark.quick) | {"image_size", "depth"} <= set(sizes), name
        assert bench.describe(name, 8, {}) == f"{benchmark.settings}; batch 8"
    # the four tables of before, each read from the registry
    assert bench.BENCHMARKS["swin"] is bench.swin_contenders
    assert bench.INPUTS["navit"] is bench.variable_images
    assert bench.QUICK["mae"] == dict(image_size=96, depth=4, decoder_depth=2)
    assert bench.SETTINGS["vit"] == "ViT-Ti/16 (DeiT-Tiny), classification"


# the contenders whose names the details of navit and mp3 read
CONTENDERS = {
    "navit": ["vitbook", "vitbook greedy", "vit-pytorch", "timm NaFlex", "padded ViT"],
    "mp3": ["vitbook", "masked", "plain ViT"],
}


def _fake_run(calls):
    """``run`` without measuring: fixed numbers for the contenders of ``name``."""

    def run(name, batch_size, rounds, warmup, device, **config):
        calls.append((name, batch_size, rounds, warmup, config))
        impls = CONTENDERS.get(name, ["vitbook", "ref"])
        rows, flops = {}, {}
        for i, impl in enumerate(impls):
            rows[impl] = {"params (M)": 1.0, "forward img/s": 10.0 + i,
                          "train step img/s": 5.0 + i, "forward % peak": 1.0,
                          "train step % peak": 2.0}  # fmt: skip
            flops[impl] = {"forward": 10**9 * (1 + i), "train step": 3 * 10**9}
        return bench.Results(rows, {"matmul GFLOP/s": 50.0}, flops)

    return run


@pytest.mark.parametrize(
    "name, details",
    [("navit", "token utilization (budget 36)"), ("mp3", "x the masked one's time")],
)
def test_one_benchmark_alone_prints_its_table_and_its_details(
    monkeypatch, capsys, name, details
):
    calls = []
    monkeypatch.setattr(bench.cli, "run", _fake_run(calls))
    bench.main([name, "--quick", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.startswith(f"{name}: batch 8, 5 rounds (median), device cpu")
    assert calls == [(name, 8, 5, 1, {"image_size": 96, "depth": 4})]
    assert "ratios are against vitbook" in out and details in out
    assert "float32 matmul peak measured in this run: 50 GFLOP/s" in out


def test_all_prints_the_summary_of_every_benchmark_without_details(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(bench.cli, "run", _fake_run(calls))
    bench.main(["all", "--quick", "--depth", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert [c[0] for c in calls] == sorted(bench.REGISTRY)
    assert all(c[4]["depth"] == 1 for c in calls)
    assert "ratios are against" not in out and "token utilization" not in out
    # one footnote per benchmark: its settings line, the batch and the sizes
    config = {c[0]: c[4] for c in calls}["navit"]
    assert "navit: " + bench.describe("navit", 8, config) in out


def test_contention_measures_four_cases_beside_a_process_it_stops(monkeypatch):
    from vitbook.bench import contention

    started = []
    original = contention.BusyProcess.__enter__

    def enter(self):
        busy = original(self)
        started.append(busy.process)
        return busy

    monkeypatch.setattr(contention.BusyProcess, "__enter__", enter)
    monkeypatch.setattr(contention, "BATCH_SIZE", 8)
    result = contention.measure(rounds=1, steps=1, warmup=0, settle=0.05)
    assert set(result["seconds"]) == {
        (m, c) for m in ("quiet", "busy") for c in ("torch default", "vitbook")
    }
    assert all(t > 0 for t in result["seconds"].values())
    assert set(result["chosen"]) == {"quiet", "busy"}
    # every busy process it started is stopped, and torch's threads are set back
    assert started and all(p.poll() is not None for p in started)
    assert torch.get_num_threads() == contention.threads.TORCH_DEFAULT
    text = contention.table(result)
    assert "busy / quiet" in text and "vitbook chose, busy:" in text
    assert max(map(len, text.splitlines())) <= 88


def test_contention_is_reached_from_the_command_line(monkeypatch, capsys):
    from vitbook.bench import cli, contention

    seen = {}
    monkeypatch.setattr(contention, "measure", lambda r, s: seen.update(r=r, s=s))
    monkeypatch.setattr(contention, "table", lambda result: "TABLE")
    cli.main(["contention", "--rounds", "2", "--steps", "3"])
    assert seen == {"r": 2, "s": 3} and "TABLE" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["contention", "--rounds", "0"])


def test_a_given_peak_is_the_roofline_of_every_share():
    # two tables that share one measured peak compare their "% peak" columns directly
    kwargs = dict(batch_size=2, rounds=1, warmup=0, device="cpu", image_size=32,
                  patch_size=16, dim=32, depth=1, heads=2, num_classes=10)  # fmt: skip
    results = bench.run("vit", peak=1e9, **kwargs)
    assert results.machine["matmul GFLOP/s"] == 1.0
    for name, r in results.items():
        flops = results.flops[name]["train step"]
        expected = 100 * flops * r["train step img/s"] / 2 / 1e9
        assert r["train step % peak"] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="peak=0 must be a positive number"):
        bench.run("vit", peak=0, **kwargs)
