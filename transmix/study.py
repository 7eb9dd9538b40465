"""A study config -> its runs: run ids, ablation points and every run's settings, checked before any job starts.

A study (``workflow/config/*.yaml``, its shape in ``workflow/schemas/config.schema.yaml``) names ``models``,
``methods``, ``seeds`` and the ``train:`` settings its runs share; optionally per-model ``overrides``, an
``ablations:`` grid and a ``robustness:`` section. The Snakefile's input functions ask a :class:`Study` for paths
and arguments; everything that decides what a run is lives here, where unit tests reach it. No torch is imported,
so parsing the workflow stays fast.

Run ids are deterministic: ``{model}__{method}__s{seed}``, plus ``__{key}={value}`` for a run of an ablation point.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any

from transmix.config import TrainConfig, from_dict

RUN_ID = re.compile(r"^(?P<model>[A-Za-z0-9_.]+?)__(?P<method>[a-z]+)__s(?P<seed>\d+)(?:__(?P<point>[^_/]\S*))?$")
# Axes that only change how TransMix reads the attention: their points train TransMix alone. Any other axis
# (switch_prob, cutmix_alpha, ...) changes what every method sees, so its points train every method of the study.
TRANSMIX_ONLY = ("area_weight", "attn_block", "attn_blocks", "attn_heads", "box_to_grid")
NAMES_THE_RUN = ("model", "method", "seed", "study", "ablation", "dataset", "data_dir")  # not an ablation axis


class StudyError(ValueError):
    """A study config is inconsistent; the message names the key and the fix."""


def run_id(model: str, method: str, seed: int, point: str = "") -> str:
    """``{model}__{method}__s{seed}``, plus ``__{point}`` (``key=value``) for a run of an ablation point."""
    return f"{model}__{method}__s{seed}" + (f"__{point}" if point else "")


def parse_run_id(text: str) -> dict[str, Any]:
    """The parts of a run id: ``model``, ``method``, ``seed`` (int) and ``point`` ("" for a main run)."""
    match = RUN_ID.match(text)
    if match is None:
        raise StudyError(f"run_id {text!r} is not model__method__s<seed>[__key=value]")
    parts = match.groupdict()
    return {**parts, "seed": int(parts["seed"]), "point": parts["point"] or ""}


class Study:
    """One study config (already valid against its JSON schema), read once.

    Raises:
        StudyError, ConfigError: on :meth:`check`, naming the bad key or value.
    """

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.name: str = config.get("study", "adhoc")
        self.models: list[str] = config["models"]
        self.methods: list[str] = config["methods"]
        self.seeds: list[int] = config["seeds"]
        self.train: dict[str, Any] = config.get("train", {})
        self.overrides: dict[str, dict[str, Any]] = config.get("overrides", {})
        self.robustness: dict[str, Any] | None = config.get("robustness")
        self.ablations: dict[str, Any] | None = config.get("ablations")
        self.evaluation_images: int = config.get("evaluation", {}).get("images", 0)  # 0: the whole test split
        self.evaluation_pairs: int = config.get("evaluation", {}).get("pairs", 500)  # attention against area
        self._settings: dict[str, dict[str, Any]] = {}

    @property
    def baseline(self) -> str:
        """The method the notebooks pair every other one against: ``baseline:``, else ``deit`` when the study
        trains it, else its first method."""
        return self.config.get("baseline") or ("deit" if "deit" in self.methods else self.methods[0])

    @property
    def dataset(self) -> str:
        return self.train.get("dataset", TrainConfig.dataset)

    @property
    def data_dir(self) -> str:
        return self.train.get("data_dir", TrainConfig.data_dir)

    def default(self, key: str) -> Any:
        """The study's own value of a training key (its ``train:`` setting, else the config's default)."""
        return self.train.get(key, getattr(TrainConfig, key))

    def run_ids(self) -> list[str]:
        """The study's main runs: models x methods x seeds."""
        return [run_id(m, meth, s) for m in self.models for meth in self.methods for s in self.seeds]

    @cached_property
    def points(self) -> dict[str, tuple[str, Any]]:
        """``{point: (key, value)}`` for every value of every axis of the ablation grid; a point is named
        ``key=value`` (``area_weight=0.25``), which is also the last part of its runs' ids."""
        axes = self.ablations["axes"] if self.ablations else {}
        return {f"{key}={value}": (key, value) for key, values in axes.items() for value in values}

    def ablation_runs(self, point: str) -> list[str]:
        """The run ids of one ablation point: its models x methods x seeds."""
        key, _ = self.points[point]
        methods = ["transmix"] if key in TRANSMIX_ONLY else self.methods
        models = self.ablations.get("models", self.models)
        seeds = self.ablations.get("seeds", self.seeds)
        return [run_id(m, meth, s, point) for m in models for meth in methods for s in seeds]

    def settings(self, run: str) -> dict[str, Any]:
        """Every config key of one run: the study's ``train:``, the model's overrides, the ablation point's value,
        and the run's model, method and seed; checked (and kept, so each run is checked once)."""
        if run not in self._settings:
            parts = parse_run_id(run)
            values = {**self.train, **self.overrides.get(parts["model"], {}), "study": self.name}
            if parts["point"]:
                if parts["point"] not in self.points:
                    raise StudyError(f"{parts['point']!r} is not a point of the study's ablation grid: "
                                     f"{list(self.points)}")  # fmt: skip
                key, value = self.points[parts["point"]]
                values.update({key: value, "ablation": parts["point"]})
            values.update(model=parts["model"], method=parts["method"], seed=parts["seed"])
            from_dict(values)
            self._settings[run] = values
        return self._settings[run]

    def model_config(self, model: str) -> TrainConfig:
        """The config a model's runs share (the study's ``train:`` with the model's overrides)."""
        return from_dict({**self.train, **self.overrides.get(model, {}), "study": self.name, "model": model})

    def notebooks(self) -> list[str]:
        """The notebooks the study renders: 01 always; 02 with robustness, 03 with ablations, 04 with TransMix."""
        return (
            ["01_main_results"]
            + (["02_robustness"] if self.robustness else [])
            + (["03_ablations"] if self.ablations else [])
            + (["04_attention_vs_area"] if "transmix" in self.methods else [])
            + ["05_training_dynamics"]
        )

    def check(self) -> None:
        """Fail before any job starts, naming the key, instead of in every training job."""
        from_dict({**self.train, "study": self.name})
        if self.baseline not in self.methods:
            raise StudyError(f"baseline {self.baseline!r} is not one of the study's methods {self.methods}; add it "
                             "to `methods` or name one of them")  # fmt: skip
        unknown = sorted(set(self.overrides) - set(self.models))
        if unknown:  # an override of a model that is not in `models` (a typo) would apply to nothing
            raise StudyError(f"overrides name model(s) not in `models`: {unknown}; add them to `models` or fix the "
                             "name")  # fmt: skip
        for model in self.overrides:
            self.model_config(model)
        if self.ablations:
            self._check_ablations()
        if self.robustness:
            from transmix.robustness.protocol import Protocol, applicable

            protocol = Protocol.from_dict(self.robustness.get("protocol", {}))
            applicable(self.dataset, protocol, self.robustness.get("suites"))

    def check_models(self) -> None:
        """Every model is timm's and fits the study's images (:func:`transmix.models.check_model`): what
        :meth:`check` cannot see without torch. The Snakefile runs it once before the first job (not in a dry run)."""
        from transmix.models import check_model

        for model in self.models:
            cfg = self.model_config(model)
            try:
                check_model(model, cfg.img_size, 1 if cfg.dataset == "fashion_mnist" else 3)
            except ValueError as err:
                raise StudyError(f"{err} (study {self.name}, `models`)") from None

    def _check_ablations(self) -> None:
        unknown = sorted(set(self.ablations.get("models", [])) - set(self.models))
        if unknown:
            raise StudyError(f"ablations name model(s) not in `models`: {unknown}")
        for point, (key, value) in self.points.items():
            if key in TRANSMIX_ONLY and "transmix" not in self.methods:  # its points would lack reference runs
                raise StudyError(
                    f"ablation axis {key!r} changes only how TransMix reads the attention, and the "
                    f"study's methods {self.methods} have no transmix: add it, or drop the axis"
                )
            if key in NAMES_THE_RUN:
                raise StudyError(f"ablation axis {key!r} names the run or its data; ablate a training setting")
            if key in TrainConfig.keys() and value == self.default(key):
                raise StudyError(f"ablation point {point} is the study's own setting (its main runs); remove it")
            for run in self.ablation_runs(point):
                self.settings(run)  # a bad key or value of the grid fails here, naming it
