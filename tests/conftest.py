"""Shared fixtures. Fashion-MNIST comes from Debian's package (installed by .ci/run) and is unpacked once; one real
training run is made once and shared by every test that only reads a finished run."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: deterministic cuBLAS when asked
# Seconds each test file took, as the suite itself measured them (`python -m pytest --record-durations`). Workers take
# whole files longest first (`--dist=loadfile --no-loadscope-reorder`), so that no worker is left running a long one
# alone at the end; a file not recorded yet counts as the longest, until the next recording.
DURATIONS = REPO / "tests" / "durations.json"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-durations", action="store_true",
                     help=f"write each test file's time in this run to {DURATIONS.relative_to(REPO)}: later runs start "
                     "the longest files first")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: one torch thread each, no oversubscription
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    recorded = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    items.sort(key=lambda item: -recorded.get(_file(item.nodeid), math.inf))  # stable: each file keeps its order


_SPENT: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _SPENT[_file(report.nodeid)] += report.duration  # setup, call and teardown; from every worker, in the controller


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if config.getoption("record_durations") and not hasattr(config, "workerinput") and _SPENT:
        recorded = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}  # a partial run keeps the rest
        merged = {**recorded, **{f: round(t, 1) for f, t in _SPENT.items()}}
        kept = {f: t for f, t in merged.items() if (REPO / f).is_file()}  # files since removed are dropped
        DURATIONS.write_text(json.dumps(dict(sorted(kept.items(), key=lambda kv: -kv[1])), indent=1) + "\n")


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every test worker of this session sees (guard what is made in it with a lock beside it)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.getbasetemp().parent
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="session")
def fashion_root(shared_tmp: Path) -> Path:
    """Fashion-MNIST unpacked once for the session, in one folder every worker reads: runs trained by different
    workers then share their `data_dir`, so one worker's finished run is the same config in another's test."""
    from filelock import FileLock

    from transmix.data import DatasetMissing
    from transmix.data.prepare import prepare_fashion_mnist

    root = shared_tmp / "fashion-mnist"
    with FileLock(str(shared_tmp / "fashion-mnist.lock")):
        try:
            prepare_fashion_mnist(root, download=False)  # nothing to do when another worker prepared it
        except DatasetMissing as err:
            pytest.fail(f"tests need Fashion-MNIST: {err}")
    return root


@pytest.fixture(scope="session")
def finished_run(fashion_root: Path, shared_tmp: Path) -> Path:
    """A finished TransMix run of the micro ViT: 2 epochs on 2048 training images, enough to learn something
    (attacks and occlusion then have accuracy to take away). Read it; never train into it. Made once for the whole
    session: the first test worker to need it trains it, under a lock, and the others read it."""
    import torch
    from filelock import FileLock

    from transmix.config.run import from_dict
    from transmix.training.checkpoint import FINAL
    from transmix.training.train import train

    out = shared_tmp / "shared-run" / "vit_micro_patch4_28__transmix__s0"
    settings = dict(train_subset=2048, val_subset=128, epochs=2, batch_size=64, warmup_epochs=0, lr=0.003)
    cfg = from_dict(dict(settings, study="shared", data_dir=str(fashion_root), ema_decay=0.9, method="transmix"))
    with FileLock(str(shared_tmp / "shared-run.lock")):
        if not (out / FINAL).exists():
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # a micro model gains nothing from a second thread on a shared 2-core machine
            try:
                train(cfg, out, progress=False)
            finally:
                torch.set_num_threads(threads)
    return out


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    """A fresh copy of the pipeline (Snakefile, environment.yml, workflow/, notebooks/) with no outputs yet."""
    dest = tmp_path / "repo"
    dest.mkdir()
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, dest)
    for name in ("workflow", "notebooks"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return dest
