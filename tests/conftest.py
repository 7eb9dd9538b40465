"""Shared fixtures. Fashion-MNIST comes from Debian's package (installed by .ci/run) and is unpacked once; one real
training run is made once and shared by every test that only reads a finished run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: deterministic cuBLAS when asked
# Workers take test files in this order (`--no-loadscope-reorder`), the rest after them as collected: the longest
# first, so that no worker is left running one of them alone at the end. A worker holds the file after the one it
# runs (xdist runs a test once it knows the next), so the two short files after the two long single-test ones wait
# behind them, not a long one.
FIRST = (
    "tests/workflow/test_smoke.py",
    "tests/cluster/",
    "tests/integration/test_run_folder.py",
    "tests/unit/test_mixing.py",
    "tests/unit/test_config.py",
    "tests/integration/test_reliability.py",
    "tests/integration/test_ddp.py",
    "tests/integration/test_train.py",
    "tests/workflow/test_dry_runs.py",
    "tests/integration/test_robustness_imagefolder.py",
    "tests/integration/test_gpu_check.py",
    "tests/workflow/test_rerun.py",
    "tests/integration/test_robustness.py",
    "tests/integration/test_imagefolder.py",
)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: one torch thread each, no oversubscription
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = Path(item.path).relative_to(REPO).as_posix()
        return next((i for i, prefix in enumerate(FIRST) if path.startswith(prefix)), len(FIRST))

    items.sort(key=rank)  # stable: each file keeps its own order


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
