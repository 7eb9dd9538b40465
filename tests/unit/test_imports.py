"""The import graph: layers import downwards only, no circle, and the trainer loads no reporting layer."""

from __future__ import annotations

import os
import subprocess
import sys

from transmix.tools.imports import LAYERS, by_group, problems


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "transmix.tools.imports", *args], capture_output=True, text=True,
                          env=env)  # fmt: skip


def test_the_package_has_no_circle_and_every_group_has_its_layer() -> None:
    result = run()
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines()[1:-1]]
    assert listed == [name for name in LAYERS if name in listed] and {"method", "training", "cli"} <= set(listed)
    assert result.stdout.rstrip().endswith("no circle: every module imports only its own group's modules and the "
                                           "groups below it")  # fmt: skip


def test_a_circle_an_upward_import_and_an_unknown_group_are_named() -> None:
    graph = {
        "transmix.method.mixing": {"transmix.training.step"},  # the method may not know about training
        "transmix.training.step": {"transmix.method.mixing"},
        "transmix.gadgets.thing": set(),
    }
    found = problems(graph)
    assert any(p.startswith("import circle: ") and "transmix.method.mixing" in p for p in found)
    assert "transmix.method.mixing imports transmix.training.step: 'method' lies below 'training' in LAYERS" in found
    assert any("'gadgets' is not in LAYERS" in p for p in found)
    assert by_group(graph) == {"method": {"training"}, "training": {"method"}, "gadgets": set()}
    assert problems({"transmix.training.step": {"transmix.method.mixing"}, "transmix.method.mixing": set()}) == []


def test_the_command_fails_on_a_real_circle(tmp_path) -> None:
    """A deferred import closes a circle as surely as one at the top of a module."""
    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from toy import b\n")
    (package / "b.py").write_text("def later():\n    from toy import a\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = run("--package", "toy", env=env)
    circles = [line for line in result.stderr.splitlines() if line.startswith("error: import circle: ")]
    assert result.returncode == 1 and len(circles) == 1, result.stderr
    assert sorted(set(circles[0].removeprefix("error: import circle: ").split(" -> "))) == ["toy.a", "toy.b"]


def test_the_trainer_loads_neither_the_reporting_layer_nor_pandas() -> None:
    script = ("import sys\nimport transmix.training.train\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pandas' or m.startswith("
              "('transmix.reporting', 'transmix.records.results', 'transmix.evaluation'))))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
