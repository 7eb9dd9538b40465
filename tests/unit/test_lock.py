"""The locked stack: the lock pins what made the committed studies, every file made from it agrees with it, and a
run records which stack it ran on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from transmix.records.provenance import LOCK, lock_hash, lock_pins, stack
from transmix.tools import lock

REPO = Path(__file__).resolve().parents[2]
PINS = lock_pins((REPO / LOCK).read_text())


def recorded_versions(notebook: Path) -> set[tuple[str, str]]:
    """The (torch, timm) versions a rendered page's setup table shows, read from the runs' config.resolved.yaml
    when it was rendered; runs whose folders were gone by then say "not recorded" and are skipped."""
    found = set()
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            text = "".join(output.get("data", {}).get("text/plain", ""))
            found |= set(re.findall(r"torch / timm\s+(\S+) / (\S+)", text))
    return found


@pytest.mark.parametrize("study", sorted(p.parent.parent.name for p in REPO.glob("results/*/notebooks/01_*.ipynb")))
def test_the_lock_pins_the_torch_and_timm_every_committed_study_was_made_with(study: str) -> None:
    versions = recorded_versions(REPO / f"results/{study}/notebooks/01_main_results.ipynb")
    assert versions, f"results/{study}: no torch / timm recorded in its setup table"
    for torch_version, timm_version in versions:  # PyPI's torch reports its CUDA build as a local version: +cu130
        assert (torch_version.split("+")[0], timm_version) == (PINS["torch"], PINS["timm"]), study


def test_the_gpu_check_carries_the_locked_timm_and_recorded_it() -> None:
    carried = lock_pins((REPO / lock.GPU_CHECK).read_text())
    assert carried == {"timm": PINS["timm"]}
    for environment in REPO.glob("results/gpu/*/environment.json"):
        assert json.loads(environment.read_text())["timm"] == PINS["timm"], environment


def test_every_file_made_from_the_lock_matches_it() -> None:
    result = subprocess.run([sys.executable, "-m", "transmix.tools.lock", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert python == [f"python={lock.lock_python((REPO / LOCK).read_text())}"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert lock_pins("\n".join(pip)) == PINS and len(pip) == len(PINS)  # the same pins and nothing else: no path
    deploy = (REPO / "environment.post-deploy.sh").read_text()
    assert 'pip install --no-deps --no-build-isolation -e "$(cd "$(dirname "$0")" && pwd)"' in deploy


def test_a_changed_lock_is_found_stale(tmp_path, monkeypatch) -> None:
    (tmp_path / "requirements").mkdir()
    (tmp_path / LOCK).write_text((REPO / LOCK).read_text().replace(f"timm=={PINS['timm']}", "timm==0.0.1"))
    for path, text in lock.made(REPO).items():
        (tmp_path / path).write_text(text)
    monkeypatch.setattr(lock, "source_root", lambda: tmp_path)
    assert lock.main(["--check"]) == 1
    assert lock.main([]) == 0 and "timm==0.0.1" in (tmp_path / "environment.yml").read_text()
    assert lock.main(["--check"]) == 0


def test_the_stack_names_the_lock_and_every_package_that_differs_from_it(tmp_path) -> None:
    (tmp_path / "requirements").mkdir()
    yaml_version = metadata.version("PyYAML")
    (tmp_path / LOCK).write_text(f"PyYAML=={yaml_version} \\\n    --hash=sha256:00\n")
    assert stack(tmp_path) == lock_hash(tmp_path / LOCK)
    (tmp_path / LOCK).write_text("PyYAML==0.1 \\\n    --hash=sha256:00\nno-such-package==1.0\n")
    assert stack(tmp_path) == (f"{lock_hash(tmp_path / LOCK)}, differs: no-such-package missing (locked 1.0), "
                               f"pyyaml {yaml_version} (locked 0.1)")  # fmt: skip
    assert stack(tmp_path / "elsewhere") == "none"


def test_version_names_the_package_the_revision_and_the_stack() -> None:
    result = subprocess.run([sys.executable, "-m", "transmix.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert re.fullmatch(rf"transmix-repro \S+, git [0-9a-f]{{40}}(-dirty)?, lock {lock_hash(REPO / LOCK)}(, .*)?\n",
                        result.stdout), result.stdout  # fmt: skip
