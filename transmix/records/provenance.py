"""Which code and which stack made a number: the git revision of the checkout, marked dirty only when code that
produces results changed, and the locked set of packages it ran on. No torch and no pandas, so the trainer records
both without loading the reporting layer, and ``transmix --version`` answers at once."""

from __future__ import annotations

import hashlib
import re
import subprocess
from importlib import metadata
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


LOCK = Path("requirements") / "lock.txt"  # the locked stack, in the source tree: every package pinned, with hashes
_PIN = re.compile(r"(?m)^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def source_root() -> Path:
    """The source tree this package was imported from (an editable install or ``PYTHONPATH=.``)."""
    return Path(__file__).resolve().parents[2]


def normalise(name: str) -> str:
    """A distribution's name as packaging compares them (PEP 503): ``Jinja2`` and ``jinja2`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(text: str) -> dict[str, str]:
    """``{name: version}`` of every ``name==version`` line of a pip-compile lock (names normalised)."""
    return {normalise(name): version for name, version in _PIN.findall(text)}


def lock_hash(path: Path) -> str:
    """The first 12 hex digits of the lock file's SHA-256: which stack, in one word."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def stack(root: Path | None = None) -> str:
    """Which locked stack this process runs on: the lock's :func:`lock_hash` when every package the lock pins is
    installed at its pinned version, ``<hash>, differs: <name> <installed> (locked <pinned>), ...`` when some are not
    (a number made then may not repeat on the locked stack), ``none`` without a source tree beside the package. Reads
    package metadata only: no import of torch."""
    path = (root or source_root()) / LOCK
    if not path.is_file():
        return "none"
    installed = {normalise(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    pins = lock_pins(path.read_text())
    differs = [f"{name} {installed.get(name, 'missing')} (locked {version})" for name, version in sorted(pins.items())
               if installed.get(name) != version]  # fmt: skip
    shown = ", ".join(differs[:3]) + (f" and {len(differs) - 3} more" if len(differs) > 3 else "")
    return lock_hash(path) + (f", differs: {shown}" if differs else "")
