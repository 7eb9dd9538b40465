"""The ImageNet study against the release's recipe, setting by setting (transmix/release_recipe.csv)."""

from __future__ import annotations

from pathlib import Path

import yaml

from transmix.tools.fidelity import MODELS, compare, markdown, problems, release_rows

REPO = Path(__file__).resolve().parents[1].parent
STUDY = REPO / "workflow/config/imagenet.yaml"


def test_the_imagenet_study_is_the_release_recipe_but_for_its_listed_deviations() -> None:
    rows = compare(STUDY)
    assert problems(rows) == []
    assert all(r["status"] in ("same", "deviation", "same (fixed here)") for r in release_rows())
    keyed = [r for r in rows if r["key"]]
    assert len(keyed) >= 30 and all(r["equal"][m] is not None for r in keyed for m in MODELS)
    deviations = {r["setting"] for r in rows if r["status"] == "deviation"}
    assert deviations == {"seed"}, deviations


def test_a_changed_setting_is_caught(tmp_path) -> None:
    """The table is not a list of names: a study drifting from the release fails, naming the setting."""
    values = yaml.safe_load(STUDY.read_text())
    values["train"].update(precision="bf16", cooldown_epochs=0)
    values["overrides"]["deit_small_patch16_224"]["switch_prob"] = 0.8  # what the DeiT-S file says, not what ran
    changed = tmp_path / "imagenet.yaml"
    changed.write_text(yaml.safe_dump(values))
    found = problems(compare(changed))
    assert len(found) == 5, found  # precision and cooldown for both models, switch_prob for DeiT-S
    assert any("mixup_switch_prob (DeiT-S): release '0.5', ours 0.8" in p for p in found)


def test_the_fidelity_page_shows_the_table_as_the_code_computes_it() -> None:
    assert markdown(compare(STUDY)) in (REPO / "docs/fidelity.md").read_text()
