"""vitbook.threads: the choice of CPU threads on simulated machines (no timing here:
``python -m vitbook.bench contention`` measures what the choice is worth)."""

import pytest
import torch

from vitbook import threads
from vitbook.threads import CpuClock, ThreadPlan, choose_threads


@pytest.fixture(autouse=True)
def keep_threads(monkeypatch):
    """Every test starts from torch's default, with nobody's choice in the env, and
    leaves the process's threads as it found them."""
    found = torch.get_num_threads()
    monkeypatch.delenv("VITBOOK_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_set_by_us", None)
    monkeypatch.setattr(threads, "TORCH_DEFAULT", found)
    yield
    torch.set_num_threads(found)


@pytest.mark.parametrize(
    "cores, others, default, expected",
    [
        # a quiet machine: torch's own number, so nothing changes there
        (2, 0.0, 2, 2),
        (2, 0.3, 2, 2),
        # one busy process on a 2-core machine
        (2, 1.0, 2, 1),
        (2, 0.7, 2, 1),
        # two busy processes: still one thread
        (2, 2.0, 2, 1),
        (16, 3.2, 16, 13),
        # never more than torch's default (physical cores of a hyper-threaded CPU)
        (16, 0.0, 8, 8),
        (8, 7.9, 8, 1),
    ],
)
def test_choose_threads_leaves_the_busy_cores(cores, others, default, expected):
    assert choose_threads(cores, others, default) == expected


def test_choose_threads_refuses_impossible_readings():
    with pytest.raises(ValueError, match="others=-1"):
        choose_threads(2, -1.0, 2)
    with pytest.raises(ValueError, match="cores=0"):
        choose_threads(0, 0.0, 2)


def test_vitbook_threads_is_checked():
    assert threads.threads_from_env({}) is None
    assert threads.threads_from_env({"VITBOOK_THREADS": "3"}) == 3
    for bad in ("0", "two", "-1", "1.5"):
        with pytest.raises(ValueError, match=f"VITBOOK_THREADS='{bad}'"):
            threads.threads_from_env({"VITBOOK_THREADS": bad})


def test_who_chose_the_threads():
    default = threads.TORCH_DEFAULT
    assert threads.user_choice({}, current=default) is None
    assert threads.user_choice({"VITBOOK_THREADS": "1"}, default) == "VITBOOK_THREADS"
    assert threads.user_choice({"OMP_NUM_THREADS": "1"}, default) == "OMP_NUM_THREADS"
    assert threads.user_choice({}, current=default + 1) == "torch.set_num_threads"


def test_others_since_subtracts_this_process():
    before = CpuClock(busy=10.0, own=4.0, wall=100.0)
    # 2 s of wall time, 3.6 s busy on the machine, 1.6 s of it this process's
    after = CpuClock(busy=13.6, own=5.6, wall=102.0)
    assert after.others_since(before) == pytest.approx(1.0)
    # a reading that cannot be is no load at all
    assert before.others_since(after) == 0.0
    assert CpuClock.read() is None or CpuClock.read().wall > 0


class FakeMachine:
    """``CpuClock.read`` on a 2-core machine where the other processes keep ``others``
    cores busy and this one uses ``own`` cores; the clock moves one second a read."""

    def __init__(self, others: float, own: float = 0.0):
        self.others, self.own, self.t = others, own, 0.0

    def read(self):
        self.t += 1.0
        return CpuClock(
            busy=(self.others + self.own) * self.t, own=self.own * self.t, wall=self.t
        )


def fake(monkeypatch, machine):
    monkeypatch.setattr(threads.CpuClock, "read", staticmethod(machine.read))
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(threads, "TORCH_DEFAULT", 2)
    monkeypatch.setattr(threads, "PROBE_SECONDS", 0.0)
    torch.set_num_threads(2)


def test_plan_trains_on_the_free_core_and_sets_back(monkeypatch):
    machine = FakeMachine(others=1.0)
    fake(monkeypatch, machine)
    plan = ThreadPlan(torch.device("cpu")).start()
    assert torch.get_num_threads() == 1
    assert plan.label == "1 thread, 1.0 cores busy elsewhere"
    # the other process stops: the next epoch gets both cores back
    machine.others, machine.own = 0.0, 1.0
    assert plan.recheck() is True and torch.get_num_threads() == 2
    assert plan.recheck() is False
    machine.others = 1.0
    plan.recheck()
    plan.restore()
    assert torch.get_num_threads() == 2


def test_plan_leaves_a_quiet_machine_and_the_user_alone(monkeypatch):
    fake(monkeypatch, FakeMachine(others=0.1, own=0.0))
    plan = ThreadPlan(torch.device("cpu")).start()
    assert torch.get_num_threads() == 2 and plan.label.startswith("2 threads")
    # the user's own choice is kept, busy or not
    fake(monkeypatch, FakeMachine(others=1.5))
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    plan = ThreadPlan(torch.device("cpu")).start()
    assert torch.get_num_threads() == 2 and plan.label == "2 threads, OMP_NUM_THREADS"
    assert plan.recheck() is False
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("VITBOOK_THREADS", "1")
    plan = ThreadPlan(torch.device("cpu")).start()
    assert torch.get_num_threads() == 1 and plan.label == "1 thread, VITBOOK_THREADS"
    plan.restore()
    assert torch.get_num_threads() == 2


class Burst:
    """A machine where another process keeps one core busy during the first look of
    ``start`` only (the interval that ends at the third reading): a short burst."""

    def __init__(self):
        self.reads, self.busy = 0, 0.0

    def read(self):
        self.reads += 1
        self.busy += 1.0 if self.reads == 3 else 0.0
        return CpuClock(busy=self.busy, own=0.0, wall=float(self.reads))


def test_a_burst_during_the_first_look_is_not_taken_for_load(monkeypatch):
    fake(monkeypatch, Burst())
    plan = ThreadPlan(torch.device("cpu")).start()
    assert torch.get_num_threads() == 2 and plan.label.startswith("2 threads")


def test_plan_does_nothing_off_the_cpu(monkeypatch):
    fake(monkeypatch, FakeMachine(others=1.5))
    plan = ThreadPlan(torch.device("meta")).start()
    assert torch.get_num_threads() == 2 and plan.label == ""
    assert plan.recheck() is False


def test_fit_shows_its_choice_and_sets_back(monkeypatch):
    from factories import tiny_vit
    from vitbook.train import fit

    machine = FakeMachine(others=1.0)
    fake(monkeypatch, machine)
    seen = []
    original = ThreadPlan.start

    def start(self):
        plan = original(self)
        seen.append((torch.get_num_threads(), plan.label))
        return plan

    monkeypatch.setattr(ThreadPlan, "start", start)
    images = torch.randn(8, 1, 16, 16)
    loader = [(images, torch.randint(0, 10, (8,)))] * 2
    fit(tiny_vit(num_classes=10), loader, epochs=2, progress=False)
    assert seen == [(1, "1 thread, 1.0 cores busy elsewhere")]
    assert torch.get_num_threads() == 2
