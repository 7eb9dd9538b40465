"""The files made from the locked stack (``requirements/lock.txt``), so that every way of installing gets its pins.

``requirements/lock.txt`` is pip-compile's lock of ``pyproject.toml`` with its ``dev`` extra: every package of the
CPU stack that made the committed studies, pinned, with hashes. From it this command writes:

- ``environment.yml``: the same Python and the same pins for conda (``conda env create -f environment.yml``), and
  for Snakemake's ``--software-deployment-method conda``. It installs no path: Snakemake creates an environment from
  a copy of the file, where a relative path would point elsewhere. ``environment.post-deploy.sh`` beside it installs
  this package from the folder the script lies in, which Snakemake runs after creating the environment.
- ``requirements/gpu-check.txt``: what the prepared GPU check carries to a GPU machine that has its own CUDA build
  of torch and no registry: timm, at the lock's version and hashes.

``python -m transmix.tools.lock`` writes both; ``--check`` only says whether they match the lock (the tests run it).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from transmix.records.provenance import LOCK, lock_pins, source_root

ENVIRONMENT = Path("environment.yml")
GPU_CHECK = Path("requirements") / "gpu-check.txt"
CARRIED = ("timm",)  # what the GPU check brings along; the device's image has the rest (torch, numpy, pandas, ...)


def lock_python(lock: str) -> str:
    """The Python the lock was compiled for (pip-compile's header: ``... with Python 3.11``)."""
    match = re.search(r"with Python (\d+\.\d+)", lock)
    if match is None:
        raise ValueError(f"{LOCK} does not say which Python it was compiled with; compile it again with pip-compile")
    return match.group(1)


def environment_yml(lock: str) -> str:
    """``environment.yml`` for the lock: its Python, pip, and every pin (without hashes: conda passes them to pip
    together with nothing it could hash)."""
    pins = "".join(f"      - {name}=={version}\n" for name, version in sorted(lock_pins(lock).items()))
    return (
        f"# Made from {LOCK.as_posix()} by `python -m transmix.tools.lock`: the same Python and pins. Do not edit.\n"
        "#   conda env create -f environment.yml && conda activate transmix && sh environment.post-deploy.sh\n"
        "# (Snakemake's --software-deployment-method conda runs environment.post-deploy.sh itself.)\n"
        "name: transmix\n"
        "channels:\n"
        "  - conda-forge\n"
        "dependencies:\n"
        f"  - python={lock_python(lock)}\n"
        "  - pip\n"
        "  - pip:\n"
        f"{pins}"
    )


def gpu_check_requirements(lock: str) -> str:
    """The carried packages' entries of the lock, hashes and all."""
    blocks = re.findall(r"(?ms)^([A-Za-z0-9][A-Za-z0-9._-]*==\S+(?: \\\n\s+--hash=\S+)+)", lock)
    carried = [block for block in blocks if block.split("==")[0].lower() in CARRIED]
    if len(carried) != len(CARRIED):
        raise ValueError(f"{LOCK} lacks one of {CARRIED}")
    return (
        f"# Made from {LOCK.as_posix()} by `python -m transmix.tools.lock`. What the prepared GPU check carries to a\n"
        "# GPU machine with its own CUDA build of torch and no registry (docs/gpu.md):\n"
        "#   pip download --no-deps --require-hashes -r requirements/gpu-check.txt -d .whl\n"
        + "\n".join(carried)
        + "\n"
    )


def made(root: Path) -> dict[Path, str]:
    """Each file made from the lock, and what it must hold."""
    lock = (root / LOCK).read_text()
    return {ENVIRONMENT: environment_yml(lock), GPU_CHECK: gpu_check_requirements(lock)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transmix.tools.lock", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file differs from the lock")
    args = parser.parse_args(argv)
    root = source_root()
    stale = []
    for path, text in made(root).items():
        if (root / path).is_file() and (root / path).read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            (root / path).write_text(text)
    verb = "differ from" if args.check else "written from"
    print(f"{', '.join(map(str, stale))} {verb} {LOCK}" if stale else f"every file matches {LOCK}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
