"""The chunk's schedule on a fake clock: which runs start, when the budget stops them, and what a bad call says.

A real chunk of real runs is tests/integration/test_chunk.py; here every process is a fake that ends at a set time,
so that each rule of the schedule is checked to the second without training anything.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from transmix.cli import main
from transmix.tools.chunk import Outcome, schedule


class Clock:
    """Time that passes only when the schedule sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeRun:
    """A run's process that ends ``seconds`` after it started; SIGTERM ends it ``save`` seconds later with 143, as
    the trainer's preemption does (``save=None``: it never reacts, and only a kill ends it)."""

    def __init__(self, clock: Clock, seconds: float, save: float | None = 1.0) -> None:
        self.clock, self.end, self.save = clock, clock.now + seconds, save
        self.code = 0
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.code if self.clock.now >= self.end else None

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if self.poll() is None and self.save is not None:
            self.end, self.code = min(self.end, self.clock.now + self.save), 143

    def kill(self) -> None:
        self.end, self.code = self.clock.now, -signal.SIGKILL


def run_schedule(durations: dict[str, float], budget: float, parallel: int = 1, estimate: float = 0.0,
                 save: float | None = 1.0) -> tuple[list[Outcome], list[str], dict[str, FakeRun]]:  # fmt: skip
    clock, started, procs = Clock(), [], {}

    def launch(run: str) -> FakeRun:
        started.append(run)
        procs[run] = FakeRun(clock, durations[run], save)
        return procs[run]

    outcomes = schedule(list(durations), launch, budget, parallel, estimate, clock=clock, sleep=clock.sleep,
                        grace_s=5.0)  # fmt: skip
    return outcomes, started, procs


def test_a_run_starts_only_while_the_time_left_holds_the_longest_run_so_far() -> None:
    # 100 s budget, 30 s runs: after the first, 70 s are left (starts); after the second, 40 (starts); after the
    # third, 10 s < 30: the fourth never starts, and nothing is stopped
    outcomes, started, _ = run_schedule({f"r{i}": 30.0 for i in range(5)}, budget=100.0)
    assert started == ["r0", "r1", "r2"]
    assert [o.run for o in outcomes if o.done] == ["r0", "r1", "r2"] and not any(o.stopped for o in outcomes)
    assert all(o.seconds == pytest.approx(30.0, abs=0.6) for o in outcomes)


def test_the_estimate_holds_back_the_first_runs_and_stays_the_floor() -> None:
    _, started, _ = run_schedule({"a": 10.0, "b": 10.0}, budget=50.0, estimate=60.0)
    assert started == []  # 50 s left, 60 expected: nothing starts
    outcomes, started, _ = run_schedule({"a": 10.0, "b": 10.0, "c": 10.0}, budget=50.0, estimate=30.0)
    assert started == ["a", "b"]  # after b, 30 s left would fit a 10 s run, but not the 30 s estimate
    assert [o.run for o in outcomes] == ["a", "b"]


def test_parallel_runs_fill_their_slots_and_the_budgets_end_stops_them_with_sigterm() -> None:
    durations = {"a": 20.0, "b": 100.0, "c": 20.0, "d": 30.0, "e": 20.0}
    outcomes, started, procs = run_schedule(durations, budget=70.0, parallel=2)
    # t=0: a, b; t=20: a done (50 s left >= 20): c; t=40: c done (30 left >= 20): d; t=70: the budget ends
    assert started == ["a", "b", "c", "d"]
    by_run = {o.run: o for o in outcomes}
    assert [r for r, o in by_run.items() if o.done] == ["a", "c"]
    for run in ("b", "d"):  # under way at the end: SIGTERM, then they save and leave with 143
        assert by_run[run].stopped and by_run[run].returncode == 143 and procs[run].signals == [signal.SIGTERM]
    assert by_run["b"].seconds == pytest.approx(71.0, abs=1.0)  # the budget, then 1 s to save


def test_a_run_that_does_not_save_within_the_grace_is_killed() -> None:
    outcomes, _, procs = run_schedule({"a": 100.0}, budget=10.0, save=None)
    (outcome,) = outcomes
    assert outcome.stopped and outcome.returncode == -signal.SIGKILL
    assert outcome.seconds == pytest.approx(15.0, abs=0.6)  # the budget, then the 5 s grace


def test_a_failed_run_is_reported_and_the_others_go_on() -> None:
    clock, seen = Clock(), []

    def launch(run: str) -> FakeRun:
        proc = FakeRun(clock, 5.0)
        proc.code = 1 if run == "bad" else 0
        return proc

    outcomes = schedule(["bad", "good"], launch, 100.0, report=seen.append, clock=clock, sleep=clock.sleep)
    assert [(o.run, o.returncode, o.stopped) for o in outcomes] == [("bad", 1, False), ("good", 0, False)]
    assert seen == outcomes  # each outcome reported as it ended


STUDY = "study: s\nmodels: [vit_micro_patch4_28]\nmethods: [deit]\nseeds: [0]\n"


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("models: [vit_micro_patch4_28]\n", [], "lacks methods, seeds"),
        ("a: [b\n", [], "is not YAML"),
        (f"{STUDY}train: {{epoch: 2}}\n", [], "did you mean `epochs`"),
        (f"{STUDY}train: {{data_dir: nowhere}}\n", [], "Fashion-MNIST is not prepared in nowhere"),
        ("", ["--minutes", "0"], "--minutes 0 must be > 0"),
    ],
)
def test_a_bad_study_or_a_missing_dataset_is_one_line(tmp_path: Path, capsys, text: str, args: list[str],
                                                      message: str) -> None:  # fmt: skip
    config = tmp_path / "study.yaml"
    config.write_text(text)
    code = main(["chunk", "--config", str(config), "--minutes", "1", *args])
    err = capsys.readouterr().err
    assert code in (1, 2) and err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "results").exists()


def test_a_missing_config_is_named(tmp_path: Path, capsys) -> None:
    assert main(["chunk", "--config", str(tmp_path / "nope.yaml"), "--minutes", "1"]) == 2
    assert "nope.yaml: no such study config" in capsys.readouterr().err
