"""Strict config: unknown keys and wrong types are errors that name the key and the fix."""

from __future__ import annotations

import re

import pytest

from transmix.config.run import ConfigError, TrainConfig, from_dict, load, parse_overrides


def test_defaults_are_valid_and_hash_is_stable() -> None:
    cfg = TrainConfig()
    assert cfg.hash() == TrainConfig().hash()
    assert cfg.replace(lr=0.01).hash() != cfg.hash()


def test_unknown_key_names_it_and_suggests() -> None:
    # The official DeiT-S config spelled this with hyphens and the loader ignored it; here it is an error.
    with pytest.raises(ConfigError, match=r"unknown config key `mixup-switch-prob`; did you mean `switch_prob`"):
        from_dict({"mixup-switch-prob": 0.8})
    with pytest.raises(ConfigError, match="unknown config key `learning_rate`"):
        parse_overrides(["learning_rate=0.1"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": "fast"}, "lr='fast' has type str; expected float"),
        ({"epochs": 2.5}, "epochs=2.5 has type float; expected int"),
        ({"epochs": True}, "expected int"),
        ({"method": "cutmixx"}, "method='cutmixx' is not one of"),
        ({"batch_size": 65}, "batch_size=65 is odd"),
        ({"area_weight": 1.5}, r"area_weight=1.5 must lie in \[0, 1\]"),
        ({"switch_prob": -0.1}, "switch_prob"),
        ({"method": "transmix", "cutmix_alpha": 0.0}, "needs cutmix_alpha > 0"),
        ({"warmup_epochs": 5, "epochs": 5}, "warmup_epochs=5 must be smaller"),
        ({"epochs": 1}, "warmup_epochs=1 must be smaller than epochs=1; set warmup_epochs=0"),
        ({"seed": -1}, "seed=-1 must be >= 0"),
        ({"num_workers": -2}, "num_workers=-2 must be >= 0, or -1"),
        ({"models": ["x"], "train": {}}, "this is a study config .*snakemake --cores all --configfile"),
        ({"box_to_grid": "nearest"}, "box_to_grid='nearest'"),
        ({"attn_heads": "median"}, "attn_heads='median' is not one of mean, max"),
        ({"attn_blocks": 0}, "attn_blocks=0 must be >= 1"),
        ({"method": "deit", "attn_heads": "max"}, "attn_heads set for method=deit: only transmix reads"),
        ({"sync_every": 0}, "sync_every=0 must be >= 1"),
        ({"compile": "yes"}, "compile='yes' has type str; expected bool"),
    ],
)
def test_bad_values_name_the_key(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(values)


def test_one_set_of_value_rules() -> None:
    # Fractions and numbers written as text are read the same way for every key, here and in the protocol.
    cfg = load(None, ["lr=1/1000", "warmup_lr=1e-6", "epochs=3", "compile=true"])
    assert (cfg.lr, cfg.warmup_lr, cfg.epochs, cfg.compile) == (0.001, 1e-6, 3, True)
    with pytest.raises(ConfigError, match="epochs='3/2' has type str; expected int"):
        load(None, ["epochs=3/2"])
    help_text = TrainConfig.describe()
    assert "switch_prob = 0.5  (P(CutMix) when both are on" in help_text and " mixing:" in help_text


def test_odd_batch_is_fine_without_mixing() -> None:
    assert from_dict({"batch_size": 65, "method": "none"}).batch_size == 65


def test_yaml_then_overrides(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.0005\nmethod: deit\nepochs: 3\n")
    cfg = load(path, ["epochs=4", "lr=1e-4"])
    assert (cfg.lr, cfg.method, cfg.epochs) == (1e-4, "deit", 4)
    assert isinstance(cfg.lr, float)
    with pytest.raises(ConfigError, match="is not key=value"):
        load(None, ["lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("swich_prob: 0.8\n")
    with pytest.raises(ConfigError, match="did you mean `switch_prob`"):
        load(tmp_path / "bad.yaml")


def test_a_study_config_given_to_train_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"study config \(it has methods, models, seeds, train\)"):
        load("workflow/config/default.yaml")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"distillation": "soft"}, "needs teacher="),
        ({"teacher": "results/x/train/run"}, "set with distillation=none"),
        ({"distill_tau": 4.0}, "set with distillation=none"),
        ({"distillation": "hard", "teacher": "t", "distill_tau": 4.0}, "no temperature"),
        ({"distillation": "soft", "teacher": "t", "distill_alpha": 1.5}, "distill_alpha=1.5 must lie in [0, 1]"),
        ({"distillation": "soft", "teacher": "t", "distill_tau": 0.0}, "distill_tau=0.0 must be > 0"),
        ({"distillation": "logit", "teacher": "t"}, "distillation='logit' is not one of none, soft, hard"),
    ],
)
def test_distillation_keys_are_checked(values, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(values)
