"""A second checkout of the pipeline (a worktree at a fixed revision) runs its own package in every job, not the
copy that is installed: the revision a study's rows record is the code that made them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_jobs_import_the_package_beside_the_snakefile(pipeline, snakemake) -> None:
    shutil.copytree(REPO / "transmix", pipeline / "transmix", ignore=shutil.ignore_patterns("__pycache__"))
    with (pipeline / "transmix" / "__init__.py").open("a") as fh:
        fh.write('\nimport sys as _sys\n\nprint("package imported from", __file__, file=_sys.stderr)\n')
    result = snakemake(pipeline, "--cores", "1", "data/FashionMNIST/raw/train-images-idx3-ubyte")
    assert result.returncode == 0, result.stderr[-3000:]
    log = (pipeline / "results" / "default" / "logs" / "data.log").read_text()
    assert f"package imported from {pipeline / 'transmix' / '__init__.py'}" in log, log
