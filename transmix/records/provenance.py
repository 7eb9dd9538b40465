"""Which code made a number: the git revision of the checkout, marked dirty only when code that produces results
changed. No torch and no pandas, so the trainer records it without loading the reporting layer."""

from __future__ import annotations

import subprocess
from pathlib import Path

# What produces a number: a change here makes a run ``-dirty``; a rewritten results table or notebook output does not.
CODE_PATHS = ("transmix", "workflow", "notebooks", "Snakefile", "pyproject.toml")


def git_sha(cwd: str | Path | None = None) -> str:
    """The checkout's commit, ``-dirty`` when the code that produces results (:data:`CODE_PATHS`) has uncommitted
    changes; ``unknown`` outside git."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *(f":(top){p}" for p in CODE_PATHS)],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
