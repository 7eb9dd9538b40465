"""A study's main runs trained in chunks of a time budget, for a GPU that is held for minutes at a time.

One call trains and evaluates as many of the study's runs as fit in ``minutes``, writes each run's table where the
Snakemake workflow writes it (``results/<study>/evaluate/<run_id>.csv``, from ``results/<study>/train/<run_id>``),
and says which runs remain; calls made later, on the same machine or another, add up to the study. A run counts as
done when its table exists or the study's committed ``results/<study>/results.csv`` holds its rows (``collect``
adds a chunk's tables to that file), so a machine that starts bare each time skips what is already committed.

Each run trains in a process of its own (``python -m transmix.tools.chunk CONFIG RUN_ID``), ``parallel`` at a time:
a model of 49 tokens leaves most of a GPU idle, and a process that ends hands all its memory back. A new run starts
only while the time left is at least what a run is expected to take: the longest a run of this chunk has taken, and
never less than ``run_minutes``, the estimate for the first ones. At the budget's end the runs under way get
SIGTERM, which the trainer turns into a checkpoint at its next synchronisation (``sync_every`` steps), so a later
chunk that finds the run folder resumes the run there; a run that has not saved within :data:`GRACE_S` is killed,
and loses at most the epoch under way (a checkpoint closes every epoch). Needs torch, timm, pandas and PyYAML only:
no network, no Snakemake.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

from transmix.config.study import Study
from transmix.errors import BadConfig, Failure, Stopped

log = logging.getLogger(__name__)
GRACE_S = 60.0  # after SIGTERM, the time a run has to save its checkpoint and leave before it is killed
POLL_S = 0.5  # how often the running processes are looked at
REQUIRED = ("models", "methods", "seeds")  # what a study config cannot do without (its schema requires more)


class ChunkConfigError(BadConfig, ValueError):
    """The study config cannot be read as a study; the message names the file and what is wrong."""


class ChunkError(Failure, RuntimeError):
    """Runs of the chunk failed (not stopped by the budget); the message names them and their logs."""


class Process(Protocol):
    """What the scheduler needs of a run's process (a :class:`subprocess.Popen`; a fake one in the tests)."""

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """How one run of the chunk ended: ``returncode`` 0 is done; ``stopped`` says the budget's end signalled it."""

    run: str
    returncode: int
    seconds: float
    stopped: bool

    @property
    def done(self) -> bool:
        return self.returncode == 0


@dataclass
class _Running:
    run: str
    process: Process
    started: float
    stopped: bool = False


def table(study: Study, run: str) -> Path:
    """A run's table, where the workflow's ``evaluate`` rule writes it."""
    return Path("results") / study.name / "evaluate" / f"{run}.csv"


def run_dir(study: Study, run: str) -> Path:
    """A run's folder, where the workflow's ``train`` rule trains it."""
    return Path("results") / study.name / "train" / run


def results_csv(study: Study) -> Path:
    return Path("results") / study.name / "results.csv"


def log_file(study: Study, run: str) -> Path:
    return Path("results") / study.name / "logs" / "chunk" / f"{run}.log"


def load_study(config: str | Path) -> Study:
    """The study of ``config``, checked as the Snakefile checks it (every run's settings and every model), so that a
    bad key stops the chunk before any run starts.

    Raises:
        ChunkConfigError: the file is missing, is not YAML, or is no study; StudyError or ConfigError: a bad key.
    """
    path = Path(config)
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ChunkConfigError(f"{path}: no such study config (e.g. workflow/config/fashion_gpu.yaml)") from None
    except yaml.YAMLError as err:
        raise ChunkConfigError(f"{path} is not YAML: {str(err).splitlines()[0]}") from None
    missing = [key for key in REQUIRED if key not in values] if isinstance(values, dict) else list(REQUIRED)
    if missing:
        raise ChunkConfigError(f"{path} is not a study config: it lacks {', '.join(missing)} (see docs/configs.md)")
    study = Study(values)
    study.check()
    for run in study.run_ids():
        study.settings(run)
    return study


def check_ready(study: Study) -> None:
    """Fail now, naming the fix, if the dataset is not there, a model does not fit it, or the device is missing:
    what would otherwise fail every run's process in turn."""
    from transmix.config.run import from_dict
    from transmix.data import eval_split
    from transmix.method.models import check_model
    from transmix.training.runtime import resolve_device

    study.check_models(check_model)
    cfg = from_dict(study.settings(study.run_ids()[0]))
    eval_split(cfg, 1)  # DatasetMissing, saying how to prepare it
    resolve_device(cfg.device)  # a study for cuda on a machine without one: ConfigError


def done_runs(study: Study) -> set[str]:
    """Runs with a table on disk, or with measured rows in the study's ``results.csv``."""
    runs = study.run_ids()
    done = {run for run in runs if table(study, run).is_file()}
    if results_csv(study).is_file():
        import pandas as pd

        rows = pd.read_csv(results_csv(study), usecols=["run_id", "source", "suite"], dtype=str)
        collected = rows[(rows.source == "ours") & (rows.suite == "clean")].run_id
        done |= set(collected) & set(runs)
    return done


def schedule(runs: list[str], launch: Callable[[str], Process], budget_s: float, parallel: int = 1,
             estimate_s: float = 0.0, report: Callable[[Outcome], None] = lambda outcome: None,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
             stop_asked: Callable[[], bool] = lambda: False, grace_s: float = GRACE_S) -> list[Outcome]:  # fmt: skip
    """Start ``runs`` in order, ``parallel`` at a time, while the time left is at least a run's expected time (the
    longest a run has taken so far, and never less than ``estimate_s``); at the budget's end, or when
    ``stop_asked()``, SIGTERM the runs under way and wait up to ``grace_s`` for them to save. Returns every
    started run's outcome, each also given to ``report`` as it ends; the runs never started have none."""
    deadline = clock() + budget_s
    queue, running, outcomes = list(runs), [], []
    longest = 0.0
    while True:
        now = clock()
        stopping = now >= deadline or stop_asked()
        while not stopping and queue and len(running) < parallel and deadline - now >= max(estimate_s, longest):
            run = queue.pop(0)
            running.append(_Running(run, launch(run), now))
        if not running:
            return outcomes
        if stopping:
            for item in running:
                item.process.send_signal(signal.SIGTERM)
                item.stopped = True
            _wait_out(running, grace_s, clock, sleep)
        for item in list(running):
            code = item.process.poll()
            if code is None:
                continue
            running.remove(item)
            outcome = Outcome(item.run, code, clock() - item.started, item.stopped)
            if outcome.done:
                longest = max(longest, outcome.seconds)
            outcomes.append(outcome)
            report(outcome)
        if stopping:
            return outcomes
        sleep(POLL_S)


def _wait_out(running: list[_Running], grace_s: float, clock: Callable[[], float],
              sleep: Callable[[float], None]) -> None:  # fmt: skip
    """Wait until every signalled process has left, or ``grace_s``; kill those still there."""
    until = clock() + grace_s
    while any(item.process.poll() is None for item in running) and clock() < until:
        sleep(POLL_S)
    for item in running:
        if item.process.poll() is None:
            log.warning("%s did not stop within %.0f s of SIGTERM: killed (it resumes from its last epoch)", item.run,
                        grace_s)  # fmt: skip
            item.process.kill()
            while item.process.poll() is None:
                sleep(POLL_S)


def launcher(config: str | Path, study: Study, threads: int) -> Callable[[str], subprocess.Popen]:
    """Start one run's process, its output to its log: the same package as this process, whatever the directory."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])  # the folder that holds the package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)

    def launch(run: str) -> subprocess.Popen:
        path = log_file(study, run)
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "transmix.tools.chunk", str(config), run, "--threads", str(threads)]
        with path.open("a") as out:  # the child holds its own copy of the file
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    return launch


def run_one(config: str | Path, run: str) -> Path:
    """Train (or resume) one run of the study into its folder, evaluate it as the workflow does, write its table.

    Raises:
        Preempted: SIGTERM arrived while training; the checkpoint holds the state (exit code 143).
    """
    from transmix.config.run import from_dict
    from transmix.evaluation.evaluate import clean
    from transmix.records.results import write
    from transmix.training.train import train

    study = Study(yaml.safe_load(Path(config).read_text()))
    cfg = from_dict(study.settings(run))
    started = time.perf_counter()
    train(cfg, run_dir(study, run), progress=False, set_aside=True)
    trained = time.perf_counter()
    rows = clean(run_dir(study, run), device=cfg.device, images=study.evaluation_images, pairs=study.pairs(run))
    out = write(rows, table(study, run))
    log.info("%s: trained in %.1f min, evaluated in %.1f min", run, (trained - started) / 60,
             (time.perf_counter() - trained) / 60)  # fmt: skip
    return out


def chunk(config: str | Path, minutes: float, parallel: int = 1, threads: int | None = None, run_minutes: float = 0.0,
          collect: bool = False, say: Callable[[str], None] = print) -> list[Outcome]:  # fmt: skip
    """Train and evaluate the study's runs that are not done, as many as fit in ``minutes``; ``say`` gets one line
    per run that ends and, last, ``k of n done; remaining: ...``. ``collect``: then add every table of the study
    on disk to ``results/<study>/results.csv`` (the rows of a run it holds are replaced).

    Raises:
        ChunkError: after the summary, when a run failed for another reason than the budget's end.
    """
    from transmix.training.checkpoint import CHECKPOINT, preemption_flag

    study = load_study(config)
    check_ready(study)
    runs = study.run_ids()
    before = done_runs(study)
    todo = [run for run in runs if run not in before]
    threads = threads or max(1, _cpus() // parallel)
    say(f"{study.name}: {len(before)} of {len(runs)} runs done; {len(todo)} to go, {parallel} at a time, "
        f"{minutes:g} min")  # fmt: skip

    def report(outcome: Outcome) -> None:
        took = f"{outcome.seconds / 60:.1f} min"
        if outcome.done:
            say(f"{outcome.run}: done in {took}, {_top1(table(study, outcome.run))}")
        elif outcome.stopped:
            kept = (run_dir(study, outcome.run) / CHECKPOINT).is_file()
            then = "resumes it from its checkpoint, where its folder is kept" if kept else "starts it again"
            say(f"{outcome.run}: stopped at the budget's end after {took}; a later chunk {then}")
        else:
            last = _last_line(log_file(study, outcome.run))
            say(f"{outcome.run}: failed after {took} (exit {outcome.returncode}): {last}")

    with preemption_flag() as flag:  # SIGTERM or Ctrl-C here ends the chunk as its budget's end does
        outcomes = schedule(todo, launcher(config, study, threads), minutes * 60, parallel, run_minutes * 60, report,
                            stop_asked=lambda: flag.asked)  # fmt: skip
    done = before | {o.run for o in outcomes if o.done}
    remaining = [run for run in runs if run not in done]
    say(f"{len(done)} of {len(runs)} done; remaining: {', '.join(remaining) or 'none'}")
    if collect:
        say(_collect(study))
    failed = [o for o in outcomes if not o.done and not o.stopped]
    if failed:
        raise ChunkError(f"{len(failed)} run(s) failed: {', '.join(o.run for o in failed)}; their logs: "
                         f"{log_file(study, failed[0].run).parent}/")  # fmt: skip
    return outcomes


def _collect(study: Study) -> str:
    from transmix.records.results import collect, write

    tables = [table(study, run) for run in study.run_ids() if table(study, run).is_file()]
    if not tables:
        return f"{results_csv(study)}: nothing to add (no run's table on disk)"
    onto = results_csv(study) if results_csv(study).is_file() else None
    rows = collect(tables, onto=onto)
    write(rows, results_csv(study))
    held = rows[rows.source == "ours"].run_id.nunique()
    return f"{results_csv(study)}: the rows of {len(tables)} run(s) added; it holds {held} runs"


def _top1(path: Path) -> str:
    """A finished run's top-1, as its line shows it."""
    from transmix.records.results import read

    if not path.is_file():  # the process said done; its table is gone since: the next chunk trains it again
        return f"but its table {path} is missing"
    rows = read(path)
    clean = rows[(rows.suite == "clean") & (rows.metric == "top1")]
    top1 = clean.set_index("variant")["value"].to_dict()
    shown = [f"{top1[variant]:.2f} ({name})" for variant, name in (("ema", "EMA"), ("raw", "raw")) if variant in top1]
    return f"top-1 {', '.join(shown)} on {int(clean.n.iloc[0])} test images"


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return f"{lines[-1] if lines else 'no output'} (log: {path})"


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    """One run of a chunk, in its own process: ``python -m transmix.tools.chunk CONFIG RUN_ID``."""
    parser = argparse.ArgumentParser(prog="python -m transmix.tools.chunk", description=main.__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("run")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(run_one(args.config, args.run), flush=True)
    except (Failure, Stopped) as err:  # as the command line reports them (transmix.errors)
        print(f"transmix: {err.LABEL}: {err}", file=sys.stderr, flush=True)
        return err.EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
