"""The command line as a user meets it: clear errors without tracebacks, and help that starts at once."""

from __future__ import annotations

import subprocess
import sys

from transmix.cli import main


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "transmix.cli", *args], capture_output=True, text=True)


def fresh_python(script: str) -> str:
    """What ``script`` prints in a new interpreter: one that has imported nothing yet."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout


def test_cli_errors_are_clear(tmp_path, capsys) -> None:
    bad = cli("train", "--out", str(tmp_path / "r"), "--set", "mixup-switch-prob=0.8")
    assert bad.returncode == 2 and "did you mean `switch_prob`" in bad.stderr and "Traceback" not in bad.stderr
    odd = cli("train", "--out", str(tmp_path / "r"), "--set", "batch_size=33")
    assert odd.returncode == 2 and "batch_size=33 is odd" in odd.stderr
    cost = cli("cost", "--config", str(tmp_path / "study.yaml"), "--tflops", "0")
    assert cost.returncode == 2 and "--tflops 0.0 must be > 0" in cost.stderr
    # the errors met after torch is loaded, in this process (the entry point is the same function)
    assert main(["train", "--out", str(tmp_path / "r"), "--set", f"data_dir={tmp_path / 'nowhere'}"]) == 1
    assert "transmix data" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.csv")]) == 1
    assert "has not finished" in capsys.readouterr().err


def test_help_and_light_modules_need_no_torch() -> None:
    # --help of every command, the config and study modules (the Snakefile's), Fashion-MNIST's preparation and the
    # module spawned corruption workers import all load without torch, timm or pandas
    script = (
        "import sys\n"
        "from transmix.cli.args import build_parser\n"
        "import transmix.config.run, transmix.config.study, transmix.data.prepare, transmix.robustness.corruptions\n"
        "for command in ([], ['data'], ['train'], ['robustness'], ['cost']):\n"
        "    try:\n"
        "        build_parser().parse_args([*command, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'timm', 'pandas') if m in sys.modules))\n"
    )
    out = fresh_python(script)
    assert out.splitlines()[-1] == "[]", out[-2000:]
    assert "switch_prob = 0.5  (P(CutMix) when both are on" in out and "adversarial_epsilons = [0.0, 1/255" in out


def test_the_notebooks_modules_need_no_torch() -> None:
    # what notebooks 01-03, 05 and 06 import (every module of transmix.reporting): their kernels start without torch
    # or timm (04 draws pairs: it needs both)
    script = (
        "import importlib, pkgutil, sys\n"
        "import transmix.reporting\n"
        "for module in pkgutil.iter_modules(transmix.reporting.__path__):\n"
        "    importlib.import_module(f'transmix.reporting.{module.name}')\n"
        "import transmix.config.run, transmix.records.results, transmix.config.robustness\n"
        "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))\n"
    )
    out = fresh_python(script)
    assert out.splitlines()[-1] == "[]", out[-2000:]


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys) -> None:
    import errno
    import os

    from transmix.records.results import read, write

    table = tmp_path / "run.csv"
    df = read("results/default/results.csv")
    write(df[df.run_id == df.run_id.iloc[0]], table)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # where a full disk shows itself: the data cannot reach it
    out = tmp_path / "table.csv"
    assert main(["collect", "--no-paper", "--out", str(out), str(table)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no space left on the device writing {out}" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".table.csv.*")), "no half-written file left"


def test_every_subcommand_the_parser_declares_has_its_function() -> None:
    import argparse

    from transmix.cli.args import build_parser
    from transmix.cli.commands import COMMANDS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)


def test_start_up_freezes_what_the_imports_built_and_collects_again_after() -> None:
    # in a fresh interpreter: the collector is paused while a command imports, on again afterwards (also when the
    # import fails), and what was built by then is frozen, so later collections never walk it
    script = (
        "import gc\n"
        "from transmix.cli.commands import start_up\n"
        "paused = []\n"
        "with start_up():\n"
        "    import transmix.records.results\n"
        "    paused.append(gc.isenabled())\n"
        "frozen, left = gc.get_freeze_count(), len(gc.get_objects())  # pandas alone: tens of thousands\n"
        "try:\n"
        "    with start_up():\n"
        "        import transmix.no_such_module\n"
        "except ImportError:\n"
        "    pass\n"
        "print(paused, gc.isenabled(), frozen > 50_000, left < 100)\n"
    )
    out = fresh_python(script)
    assert out.splitlines()[-1] == "[False] True True True", out[-2000:]
