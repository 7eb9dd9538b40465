"""The release's ImageNet recipe against a study config, setting by setting.

``release_recipe.csv`` transcribes what the official code (Beckschen/TransMix: ``train.py`` on timm 0.5.4 and
``configs/deit_{s,b}_transmix.yaml``) actually ran for DeiT-S and DeiT-B: its YAML files pushed through its
argparse defaults, so a key the loader ignores (DeiT-S's ``mixup-switch-prob``) counts as its default. Each row
names the setting, the release's value per model, our config key and a status:

- ``same``: our value must equal the release's;
- ``deviation``: it differs on purpose, and the note says why;
- ``same (fixed here)``: no key; both use timm's default.

:func:`problems` lists every row whose status no longer holds (the tests fail on any), and
``python -m transmix.tools.fidelity`` prints the table the README shows.
"""

from __future__ import annotations

import argparse
import csv
import sys
from fractions import Fraction
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from transmix.config.run import from_dict
from transmix.config.run_id import RunId
from transmix.config.study import Study

MODELS = ("deit_small_patch16_224", "deit_base_patch16_224")
SHORT = {"deit_small_patch16_224": "DeiT-S", "deit_base_patch16_224": "DeiT-B"}
DEFAULT_STUDY = "workflow/config/imagenet.yaml"


def release_rows() -> list[dict[str, str]]:
    with files("transmix").joinpath("release_recipe.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def our_settings(study: Study, model: str) -> dict[str, Any]:
    """Every config key of the model's TransMix run in ``study`` (defaults included), and ``global_batch``: the
    batch per process times the GPUs of a training job."""
    values = from_dict(study.settings(str(RunId(model, "transmix", study.seeds[0])))).to_dict()
    gpus = int(study.config.get("resources", {}).get("train", {}).get("gpus") or 1)
    return {**values, "global_batch": values["batch_size"] * gpus}


def _equal(release: str, ours: Any) -> bool:
    if isinstance(ours, tuple):  # "[3/4, 4/3]"
        values = [float(Fraction(v.strip())) for v in release.strip().strip("[]").split(",")]
        return len(values) == len(ours) and all(abs(v - o) < 1e-12 for v, o in zip(values, ours, strict=True))
    if isinstance(ours, bool):
        return release.strip().lower() == str(ours).lower()
    if isinstance(ours, int | float):
        try:
            return float(release) == float(ours)
        except ValueError:
            return False
    return release.strip() == str(ours)


def compare(config: str | Path = DEFAULT_STUDY) -> list[dict[str, Any]]:
    """The release's rows with ours beside them: ``ours`` and ``equal`` per model (``None`` where there is no key)."""
    study = Study(yaml.safe_load(Path(config).read_text()))
    mine = {model: our_settings(study, model) for model in MODELS}
    rows = []
    for row in release_rows():
        key = row["key"]
        ours = {m: mine[m].get(key) if key else None for m in MODELS}
        equal = {m: _equal(row[m], ours[m]) if key and key in mine[m] else None for m in MODELS}
        rows.append({**row, "ours": ours, "equal": equal})
    return rows


def problems(rows: list[dict[str, Any]]) -> list[str]:
    """Rows whose status does not hold: a ``same`` that differs, a ``deviation`` that no longer does or says not
    why, a key the config does not have."""
    out = []
    for row in rows:
        for model, equal in row["equal"].items():
            where = f"{row['setting']} ({SHORT[model]}): release {row[model]!r}, ours {row['ours'][model]!r}"
            if row["key"] and equal is None:
                out.append(f"{where}: `{row['key']}` is not a config key")
            elif row["status"] == "same" and not equal:
                out.append(f"{where}: differs, but the table says same")
            elif row["status"] == "deviation" and (equal or not row["note"]):
                out.append(f"{where}: a deviation must differ and say why")
    return out


def _shown(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return value


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as the README shows it."""
    lines = ["| setting | release DeiT-S | release DeiT-B | ours (key) | status | note |", "|---|---|---|---|---|---|"]
    for row in rows:
        ours = [_shown(row["ours"][m]) for m in MODELS]
        shown = "" if not row["key"] else f"{ours[0]}" if ours[0] == ours[1] else f"{ours[0]} / {ours[1]}"
        key = f"{shown} (`{row['key']}`)" if row["key"] else "(no key)"
        cells = [row["setting"], row[MODELS[0]], row[MODELS[1]], key, row["status"], row["note"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transmix.tools.fidelity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", default=DEFAULT_STUDY, help="study config (default: %(default)s)")
    args = parser.parse_args(argv)
    rows = compare(args.config)
    print(markdown(rows), end="")
    wrong = problems(rows)
    for line in wrong:
        print(f"fidelity: {line}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
