"""Running Snakemake for real, in a fresh copy of the pipeline (the `pipeline` fixture of tests/conftest.py)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest


def run_snakemake(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["snakemake", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "XDG_CACHE_HOME": str(cwd / ".cache")},
    )


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


@pytest.fixture
def snakemake():
    return run_snakemake


@pytest.fixture
def dry_run_jobs():
    return job_counts
