import pytest
import torch
from torch import nn

from vitbook import ViT, train
from vitbook.data import ImageTensors


def toy_data(n=256, seed=0):
    """Two classes a linear model separates: bright images against dark ones."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = (
        torch.rand(n, 1, 8, 8, generator=g) * 100 + labels.view(-1, 1, 1, 1) * 120
    ).to(torch.uint8)
    return ImageTensors(images, labels, ("dark", "bright"), (0.4,), (0.25,))


def toy_vit():
    return ViT(
        image_size=8,
        patch_size=4,
        num_classes=2,
        dim=16,
        depth=1,
        heads=2,
        channels=1,
        dropout=0.1,
        drop_path=0.1,
    )


def run(seed=0, **kw):
    train.seed_everything(seed)
    model = toy_vit()
    ds = toy_data()
    history = train.fit(
        model,
        ds.loader(32, shuffle=True, seed=seed),
        epochs=2,
        eval_loader=ds.loader(64),
        device="cpu",
        progress=False,
        seed=seed,
        **kw,
    )
    return model, history


def test_seeded_runs_give_identical_histories():
    _, first = run(seed=1)
    _, second = run(seed=1)
    # everything but the clock (evaluation rows record the training seconds so far)
    strip = lambda h: h.steps + [
        {k: v for k, v in r.items() if k != "seconds"} for r in h.evals
    ]
    assert strip(first) == strip(second)


def test_different_seeds_give_different_runs():
    _, first = run(seed=1)
    _, second = run(seed=2)
    assert [r["loss"] for r in first.steps] != [r["loss"] for r in second.steps]


def test_fit_learns_a_separable_problem():
    _, history = run(lr=3e-3)
    assert history.evals[-1]["test_acc"] > 0.9


def test_step_budget_is_exact_and_schedule_warms_up_then_decays():
    model = toy_vit()
    history = train.fit(
        model,
        toy_data().loader(32, shuffle=True),
        steps=20,
        warmup=0.25,
        device="cpu",
        progress=False,
    )
    lrs = [r["lr"] for r in history.steps]
    assert len(lrs) == 20
    assert (
        lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-3) and lrs[-1] < 0.1 * max(lrs)
    )
    assert lrs.index(max(lrs)) == 5


def test_seconds_budget_stops_on_time():
    history = train.fit(
        toy_vit(),
        toy_data().loader(8, shuffle=True),
        seconds=0.5,
        device="cpu",
        progress=False,
    )
    assert 0 < len(history.steps) and history.seconds < 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "fit needs a budget"),
        ({"epochs": 0}, "epochs=0 must be positive"),
        ({"steps": -1}, "steps=-1 must be positive"),
    ],
)
def test_bad_budgets_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train.fit(toy_vit(), toy_data().loader(32), progress=False, **kwargs)


def test_a_diverging_loss_stops_training_with_advice():
    def exploding(model, batch):
        return model(batch[0]).sum() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="loss became nan at step 1"):
        train.fit(
            toy_vit(),
            toy_data().loader(32),
            steps=3,
            loss=exploding,
            device="cpu",
            progress=False,
        )


def test_teacher_is_stepped_after_every_optimizer_step():
    class WithTeacher(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.teacher_steps = nn.Linear(64, 2), 0

        def forward(self, x):
            return self.net(x.flatten(1)).pow(2).mean()

        def step_teacher(self):
            self.teacher_steps += 1

    method = WithTeacher()
    train.fit(
        method,
        toy_data().loader(32),
        steps=5,
        loss=train.self_supervised_loss,
        device="cpu",
        progress=False,
    )
    assert method.teacher_steps == 5


def test_checkpoint_round_trip_is_bit_identical(tmp_path):
    model, _ = run()
    optimizer = torch.optim.AdamW(model.parameters())
    path = train.save_checkpoint(
        tmp_path / "ckpt" / "vit.pt", model, optimizer, epoch=2, note="toy"
    )
    fresh = toy_vit()
    extra = train.load_checkpoint(path, fresh, torch.optim.AdamW(fresh.parameters()))
    assert extra == {"epoch": 2, "note": "toy"}
    x = toy_data().normalize(toy_data().images[:16])
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    model, _ = run()
    path = train.save_checkpoint(tmp_path / "vit.pt", model)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        train.load_checkpoint(path, toy_vit())
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not a vitbook checkpoint"):
        train.load_checkpoint(other, toy_vit())
    with pytest.raises(FileNotFoundError):
        train.load_checkpoint(tmp_path / "missing.pt", toy_vit())


def test_mismatched_checkpoint_names_the_weights_and_leaves_the_model_alone(tmp_path):
    path = train.save_checkpoint(tmp_path / "vit.pt", toy_vit())
    three_classes = ViT(
        image_size=8, patch_size=4, num_classes=3, dim=16, depth=1, heads=2, channels=1
    )
    before = {k: v.clone() for k, v in three_classes.state_dict().items()}
    with pytest.raises(
        ValueError,
        match=r"head.weight: checkpoint \(2, 16\) vs model \(3, 16\); head.bias",
    ):
        train.load_checkpoint(path, three_classes)
    assert all(torch.equal(before[k], v) for k, v in three_classes.state_dict().items())
    wider = ViT(
        image_size=8, patch_size=4, num_classes=2, dim=32, depth=1, heads=2, channels=1
    )
    with pytest.raises(
        ValueError,
        match=r"cls_token: checkpoint \(1, 1, 16\) vs model \(1, 1, 32\);.*and 11 more",
    ):
        train.load_checkpoint(path, wider)
    with pytest.raises(ValueError, match="holds a ViT, cannot load it into a Linear"):
        train.load_checkpoint(path, nn.Linear(2, 2))


def test_evaluate_and_predict_agree():
    model, _ = run()
    ds = toy_data()
    result = train.evaluate(model, ds.loader(50))
    logits = train.predict(model, ds.normalize(ds.images))
    assert result["acc"] == pytest.approx(
        (logits.argmax(1) == ds.labels).float().mean().item()
    )
    assert model.training, "evaluate/predict must restore training mode"


def test_scale_follows_the_environment(monkeypatch):
    monkeypatch.setenv("VITBOOK_SCALE", "full")
    assert train.scale() == "full" and train.at_scale(small=1, full=2) == 2
    monkeypatch.setenv("VITBOOK_SCALE", "small")
    assert train.at_scale(small=1, full=2) == 1
    monkeypatch.setenv("VITBOOK_SCALE", "huge")
    with pytest.raises(ValueError, match="VITBOOK_SCALE='huge' is not one of"):
        train.scale()
    monkeypatch.delenv("VITBOOK_SCALE")
    assert train.scale() == ("full" if torch.cuda.is_available() else "small")


def test_step_log_reads_the_device_only_when_flushed():
    from vitbook.train import History, StepLog

    history = History()
    log = StepLog(history, interval=float("inf"))
    for step in range(1, 6):
        log.add({"step": step, "epoch": 1, "lr": 0.1}, torch.tensor(step / 10),
                {"acc": torch.tensor(0.5)})
    assert not log.due() and history.steps == []  # nothing read yet
    newest = log.flush(lr=0.1)
    assert [r["loss"] for r in history.steps] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert newest["step"] == 5 and all(r["acc"] == 0.5 for r in history.steps)
    assert log.flush(lr=0.1) is None


def test_step_log_names_the_first_non_finite_step():
    from vitbook.train import History, StepLog

    log = StepLog(History(), interval=float("inf"))
    for step, value in enumerate([0.3, float("nan"), float("inf")], start=1):
        log.add({"step": step, "epoch": 1, "lr": 0.1}, torch.tensor(value), {})
    with pytest.raises(FloatingPointError, match="loss became nan at step 2"):
        log.flush(lr=0.1)


def test_each_evaluation_records_the_training_seconds_before_it():
    _, history = run(seed=1)
    clocks = [r["seconds"] for r in history.evals]
    assert len(clocks) == 2 and 0 < clocks[0] < clocks[1]  # one per epoch, rising
    # evaluation time is kept apart: training seconds never include it
    assert 0 < history.eval_seconds < history.seconds
    assert clocks[-1] <= history.train_seconds < history.seconds


def test_eval_every_adds_evaluations_between_epochs_without_repeating_one():
    _, history = run(seed=1, eval_every=3)
    per_epoch = len(history.steps) // 2
    steps = [r["step"] for r in history.evals]
    expected = sorted(set(range(3, 2 * per_epoch + 1, 3)) | {per_epoch, 2 * per_epoch})
    assert steps == expected  # every 3 steps and each epoch's end, each step once
    seconds = [r["seconds"] for r in history.evals]
    assert seconds == sorted(seconds)


def test_eval_every_needs_an_eval_loader():
    with pytest.raises(ValueError, match="eval_every=5 needs eval_loader"):
        train.fit(nn.Linear(2, 2), [(torch.zeros(1, 2), torch.zeros(1).long())],
            steps=1, eval_every=5)  # fmt: skip


def test_accuracy_at_reads_the_last_evaluation_within_the_budget():
    history = train.History(evals=[{"seconds": 10.0, "test_acc": 0.5},
                                   {"seconds": 20.0, "test_acc": 0.7}])  # fmt: skip
    assert history.accuracy_at(5) is None
    assert history.accuracy_at(10) == 0.5 and history.accuracy_at(19.9) == 0.5
    assert history.accuracy_at(60) == 0.7


# ------------------------------------------------ DINO's optimizer recipe
def test_clip_per_tensor_scales_each_gradient_above_the_limit_to_it_alone():
    big, small, unused = (nn.Parameter(torch.zeros(2)) for _ in range(3))
    big.grad = torch.tensor([3.0, 4.0])  # norm 5: above the limit
    small.grad = torch.tensor([0.3, 0.4])  # norm 0.5: below it
    norms = train.clip_per_tensor_([big, small, unused], max_norm=1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))  # before clipping
    # DINO: grad * max_norm / (norm + 1e-6) when that factor is below 1
    torch.testing.assert_close(big.grad, torch.tensor([3.0, 4.0]) / (5.0 + 1e-6))
    assert torch.equal(small.grad, torch.tensor([0.3, 0.4]))  # untouched, bit for bit
    assert unused.grad is None
    tiny = nn.Parameter(torch.zeros(2))
    tiny.grad = torch.tensor([3e-6, 4e-6])  # norm 5e-6: DINO's 1e-6 counts here
    train.clip_per_tensor_([tiny], max_norm=1e-6)
    assert float(tiny.grad.norm()) == pytest.approx(1e-6 * 5e-6 / 6e-6)
    with pytest.raises(ValueError, match="max_norm=0 must be positive"):
        train.clip_per_tensor_([big], max_norm=0)


class _TwoGradients(nn.Module):
    """A loss whose gradients are (30, 40) for ``big`` and (0.03, 0.04) for ``small``,
    whatever the batch."""

    def __init__(self):
        super().__init__()
        self.big = nn.Parameter(torch.zeros(2))
        self.small = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return (self.big @ torch.tensor([30.0, 40.0])
                + self.small @ torch.tensor([0.03, 0.04]))


@pytest.mark.parametrize("clip_mode", ["per_tensor", "global"])
def test_fit_clips_as_clip_mode_says(clip_mode):
    model = _TwoGradients()
    train.fit(model, [torch.zeros(1)], steps=1, loss=train.self_supervised_loss,
              optimizer=torch.optim.SGD(model.parameters(), lr=1.0), warmup=0.0,
              grad_clip=1.0, clip_mode=clip_mode, device="cpu", progress=False)
    expected = _TwoGradients()
    expected(None).backward()
    if clip_mode == "per_tensor":
        train.clip_per_tensor_(expected.parameters(), 1.0)
        assert torch.equal(model.small, -expected.small.grad)  # below the limit: as is
    else:
        nn.utils.clip_grad_norm_(expected.parameters(), 1.0)
    for name in ("big", "small"):  # one SGD step of lr 1 from zero: minus the gradient
        assert torch.equal(getattr(model, name), -getattr(expected, name).grad), name


def test_clip_mode_and_weight_decay_end_are_checked():
    with pytest.raises(ValueError, match=r"clip_mode='layer' must be one of \('glo"):
        train.fit(toy_vit(), toy_data().loader(32), steps=1, clip_mode="layer",
                  progress=False)
    with pytest.raises(ValueError, match="weight_decay_end=-0.1 must be >= 0"):
        train.fit(toy_vit(), toy_data().loader(32), steps=1, weight_decay_end=-0.1,
                  progress=False)
    with pytest.raises(ValueError, match=r"weight_decay_end=0.4 schedules .*none"):
        train.fit(toy_vit(), toy_data().loader(32), steps=1, weight_decay=0.0,
                  weight_decay_end=0.4, device="cpu", progress=False)


class _OnlyDecay(nn.Module):
    """Zero gradients: AdamW moves ``weight`` (decayed, a matrix) by its weight decay
    alone, ``p <- p (1 - lr wd)``, and leaves ``bias`` (not decayed) where it is."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2, 2))
        self.bias = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return 0.0 * (self.weight.sum() + self.bias.sum())


def test_weight_decay_follows_a_cosine_to_weight_decay_end():
    from vitbook.ssl import cosine_schedule

    model, total = _OnlyDecay(), 8
    history = train.fit(model, [torch.zeros(1)] * total, epochs=1, lr=0.5,
                        weight_decay=0.04, weight_decay_end=0.4, warmup=0.0,
                        loss=train.self_supervised_loss, device="cpu", progress=False)
    wd = [r["wd"] for r in history.steps]
    assert len(wd) == total and wd[0] == pytest.approx(0.04)  # step 0: weight_decay
    assert wd[total // 2] == pytest.approx(0.22)  # half way: the mean of the two
    expected = [cosine_schedule(0.04, 0.4, s, total) for s in range(total)]
    assert wd == pytest.approx(expected)
    # the last step uses step T - 1's value; T's is weight_decay_end (DINO's too)
    assert wd[-1] < 0.4 and cosine_schedule(0.04, 0.4, total, total) == 0.4
    shrink = torch.ones(())
    for row in history.steps:  # what AdamW applied, step by step
        shrink = shrink * (1 - row["lr"] * row["wd"])
    torch.testing.assert_close(model.weight, shrink.expand(2, 2))
    assert torch.equal(model.bias, torch.ones(2))  # the undecayed group stays at 0


def test_without_weight_decay_end_the_rows_have_no_wd():
    history = train.fit(_OnlyDecay(), [torch.zeros(1)] * 2, steps=2, device="cpu",
                        loss=train.self_supervised_loss, progress=False)
    assert all("wd" not in r for r in history.steps)


def test_after_backward_comes_after_clipping_and_before_the_optimizer_step():
    class FrozenLastLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.last_layer = nn.Linear(4, 4), nn.Linear(4, 4)
            self.seen_norms = []

        def forward(self, x):
            return self.last_layer(self.body(x)).pow(2).mean()

        def after_backward(self):  # DINO freezes its last layer in the first epoch
            self.seen_norms.append(float(self.body.weight.grad.norm()))
            self.last_layer.weight.grad = None

    model = FrozenLastLayer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train.fit(model, [torch.randn(8, 4)] * 3, steps=3, lr=0.1, weight_decay=0.5,
              grad_clip=1e-4, clip_mode="per_tensor", loss=train.self_supervised_loss,
              device="cpu", progress=False)
    assert len(model.seen_norms) == 3
    assert max(model.seen_norms) <= 1e-4 * (1 + 1e-5)  # clipped before the hook
    after = model.state_dict()
    # no gradient: AdamW leaves it alone, weight decay included
    assert torch.equal(after["last_layer.weight"], before["last_layer.weight"])
    for name in ("last_layer.bias", "body.weight", "body.bias"):
        assert not torch.equal(after[name], before[name]), name


def test_new_arguments_resume_a_checkpoint_written_before_them(tmp_path):
    from workers.train_toy import WithTeacher, toy_set

    path = tmp_path / "old.ckpt"
    kwargs = dict(steps=2, device="cpu", progress=False, checkpoint=path)
    first = train.fit(WithTeacher(0.0), toy_set().loader(16), **kwargs)
    saved = torch.load(path)
    for name in ("weight_decay_end", "clip_mode"):  # as an older fit wrote it
        del saved["extra"]["run"][name]
    torch.save(saved, path)
    again = train.fit(WithTeacher(0.0), toy_set().loader(16), **kwargs)  # finished
    assert again.steps == first.steps
    with pytest.raises(ValueError, match="clip_mode='global' then, 'per_tensor' now"):
        train.fit(WithTeacher(0.0), toy_set().loader(16), clip_mode="per_tensor",
                  **kwargs)
    with pytest.raises(ValueError, match="weight_decay_end=None then, 0.4 now"):
        train.fit(WithTeacher(0.0), toy_set().loader(16), weight_decay_end=0.4,
                  **kwargs)


# ------------------------------------------------ random draws
def test_a_single_process_draws_as_before_torch_from_seed_crops_where_they_were():
    from workers.train_draws import Probe, toy_set

    images = toy_set().normalize(toy_set().images[:4])
    probe = Probe()
    probe.multicrop(images)  # a figure drawn before training: the crops go on from it
    train.fit(probe, toy_set().loader(16, shuffle=True, seed=3), steps=3, seed=5,
              loss=train.self_supervised_loss, device="cpu", progress=False)
    expected = Probe()
    expected.multicrop(images)
    torch.manual_seed(5)  # fit's seed, as in one process it always was
    for batch, _ in toy_set().loader(16, shuffle=True, seed=3):
        expected(batch)
    for step, (a, b) in enumerate(zip(probe.draws, expected.draws[:3]), start=1):
        for kind in ("boxes", "dropout", "mae"):
            assert torch.equal(a[kind], b[kind]), f"{kind} at step {step}"


def test_resume_restores_the_multicrop_generator_and_every_draw(tmp_path):
    from workers.train_draws import Probe, train_probe

    straight = Probe()
    train_probe(straight, 4)
    path = tmp_path / "draws.ckpt"
    with pytest.raises(RuntimeError, match="crash at step 3"):
        train_probe(Probe(), 4, path, crash_at=3)
    resumed = Probe()  # a fresh generator, at MultiCrop's seed
    train_probe(resumed, 4, path)
    assert len(resumed.draws) == 2  # steps 3 and 4, after the checkpoint at step 2
    for a, b in zip(straight.draws[2:], resumed.draws):
        for kind in ("boxes", "dropout", "mae"):
            assert torch.equal(a[kind], b[kind]), kind


def test_a_checkpoint_of_two_ranks_is_refused_by_one_process(tmp_path):
    from workers.train_toy import WithTeacher, toy_set

    path = tmp_path / "ranks.ckpt"
    kwargs = dict(steps=2, device="cpu", progress=False, checkpoint=path)
    train.fit(WithTeacher(0.0), toy_set().loader(16), **kwargs)
    saved = torch.load(path)
    saved["extra"]["rng"] = [saved["extra"]["rng"]] * 2  # as two ranks write it
    torch.save(saved, path)
    with pytest.raises(ValueError, match="written by 2 data-parallel processes and 1"):
        train.fit(WithTeacher(0.0), toy_set().loader(16), **kwargs)


# ------------------------------------------------ the pieces of fit
def _old_lr_factor(progress, warmup):
    """fit's learning-rate factor before it was computed by vitbook.schedules, kept
    here as the reference: linear warm-up, then cosine decay to zero."""
    import math

    if progress < warmup:
        return progress / warmup
    return 0.5 * (
        1.0
        + math.cos(math.pi * min(1.0, (progress - warmup) / max(1e-8, 1.0 - warmup)))
    )


@pytest.mark.parametrize("warmup", [0.0, 0.1, 0.25, 1 / 3, 0.5, 0.999, 1.0])
def test_warmup_cosine_gives_the_floats_of_the_old_lr_factor(warmup):
    from vitbook.schedules import warmup_cosine

    # every fraction a run of 1 to 40 steps takes, and the clock's in between
    fractions = {s / total for total in range(1, 41) for s in range(total + 1)}
    fractions |= {k / 997 for k in range(998)}
    for fraction in sorted(fractions):
        # the same float, not a close one: seeded histories stay number for number
        assert warmup_cosine(fraction, warmup) == _old_lr_factor(fraction, warmup), (
            fraction
        )


def test_self_supervised_loss_and_method_loss_are_one_function():
    import vitbook.ssl

    assert train.self_supervised_loss is vitbook.ssl.method_loss

    class WithMetrics(nn.Module):
        def __init__(self):
            super().__init__()
            self.metrics = {}

        def forward(self, images):
            self.metrics = {"std": images.std()}
            return images.mean()

    images = torch.arange(6.0)
    loss, metrics = train.self_supervised_loss(WithMetrics(), (images, None))
    assert loss == images.mean() and metrics == {"std": images.std()}


def test_budget_takes_the_first_limit_reached_and_says_how_much_is_spent():
    from vitbook.schedules import Budget

    assert Budget(epochs=1.5, batches=12).total_steps == 18
    assert Budget(epochs=2, steps=7, batches=12).total_steps == 7
    assert Budget(epochs=2, steps=70, batches=12).total_steps == 24
    assert Budget(seconds=10).total_steps is None
    steps = Budget(steps=20, seconds=100.0)
    assert steps.fraction(5, elapsed=1.0) == 0.25  # the steps' share
    assert steps.fraction(5, elapsed=50.0) == 0.5  # the clock runs out first
    assert steps.fraction(30, elapsed=0.0) == 1.0
    assert not steps.spent(19, 99.0) and steps.spent(20, 0.0) and steps.spent(1, 100.0)
    with pytest.raises(ValueError, match="epochs= needs a loader with a length"):
        Budget(epochs=1)
    with pytest.raises(ValueError, match="the loader yields no batches"):
        Budget(steps=3, batches=0)


def test_batches_left_goes_on_in_the_epoch_a_run_stopped_in():
    loader = toy_data(64).loader(16, shuffle=True, seed=3)
    straight = train.RunState()
    batches = train.batches_left(loader, straight)
    first = [next(batches) for _ in range(5)]  # epoch 1's 4 batches, then its end
    assert first[4] is None and (straight.epoch, straight.batch) == (1, 4)
    second = next(batches)
    assert (straight.epoch, straight.batch, straight.loader_epoch) == (2, 1, 1)
    # stopped after 2 batches of epoch 1: the loader has moved on since
    resumed = train.RunState(step=2, epoch=1, batch=2, loader_epoch=0)
    rest = train.batches_left(loader, resumed)
    again = [next(rest) for _ in range(4)]
    for a, b in zip(first[2:4] + [None, second], again):
        assert (a is None and b is None) or torch.equal(a[0], b[0])
    assert (resumed.epoch, resumed.batch) == (2, 1)


def test_train_step_unscales_the_gradients_before_clipping_them():
    model = _TwoGradients()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    train.train_step(model, torch.zeros(1), train.self_supervised_loss,
                     torch.optim.SGD(model.parameters(), lr=1.0), scaler=scaler,
                     grad_clip=1.0)  # fmt: skip
    expected = _TwoGradients()
    expected(None).backward()
    nn.utils.clip_grad_norm_(expected.parameters(), 1.0)
    for name in ("big", "small"):  # one SGD step of lr 1 from zero: minus the gradient
        assert torch.equal(getattr(model, name), -getattr(expected, name).grad), name


class _FailsOnce:
    """An eval loader whose first pass raises, as a process killed in the last
    evaluation would stop."""

    def __init__(self, loader):
        self.loader, self.failed = loader, False

    def __iter__(self):
        if not self.failed:
            self.failed = True
            raise RuntimeError("killed while evaluating")
        return iter(self.loader)


def test_a_run_stopped_in_its_last_evaluation_resumes_to_only_evaluate(tmp_path):
    from workers.train_toy import WithTeacher, toy_set

    def counted(model, batch):
        calls.append(1)
        return train.classification_loss(model, batch)

    def toy():
        torch.manual_seed(0)
        return WithTeacher(0.1)

    kwargs = dict(steps=4, device="cpu", progress=False, loss=counted)
    evals = toy_set(64, seed=1).loader(32)
    calls = []
    straight = train.fit(toy(), toy_set().loader(16), eval_loader=evals, **kwargs)
    path = tmp_path / "last.ckpt"
    with pytest.raises(RuntimeError, match="killed while evaluating"):
        train.fit(toy(), toy_set().loader(16), checkpoint=path, checkpoint_every=4,
                  eval_loader=_FailsOnce(evals), **kwargs)  # fmt: skip
    calls.clear()
    resumed = train.fit(toy(), toy_set().loader(16), checkpoint=path,
                        checkpoint_every=4, eval_loader=evals, **kwargs)  # fmt: skip
    assert calls == []  # no step trained again
    assert resumed.steps == straight.steps
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(resumed.evals) == strip(straight.evals) and len(resumed.evals) == 1
