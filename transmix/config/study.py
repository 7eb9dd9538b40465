"""A study config -> its runs: run ids, ablation points and every run's settings, checked before any job starts.

A study (``workflow/config/*.yaml``, its shape in ``workflow/schemas/config.schema.yaml``) names ``models``,
``methods``, ``seeds`` and the ``train:`` settings its runs share; optionally per-model ``overrides``, per-model
``more_methods`` (methods trained on that model only, beside ``methods``: the other mixes), an ``ablations:`` grid,
a ``robustness:`` section and a ``distillation:`` section (students taught by the study's own runs). The
Snakefile's input functions ask a :class:`Study` for paths and arguments; everything that decides what a run is
lives here, where unit tests reach it. No torch is imported,
so parsing the workflow stays fast.

Run ids are deterministic (:class:`~transmix.config.run_id.RunId`): a main run's model, method and seed, plus the
ablation point or the distillation student's teacher of a run outside the main grid.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from transmix.config.run import TrainConfig, from_dict
from transmix.config.run_id import ALONE, Ablation, RunId, Student
from transmix.errors import BadConfig

# Axes that only change how TransMix reads the attention: their points train TransMix alone. Any other axis
# (switch_prob, cutmix_alpha, ...) changes what every method sees, so its points train every method of the study.
TRANSMIX_ONLY = ("area_weight", "attn_block", "attn_blocks", "attn_heads", "box_to_grid")
NAMES_THE_RUN = ("model", "method", "seed", "study", "ablation", "dataset", "data_dir")  # not an ablation axis
PAIRS = 500  # CutMix pairs of test images per run and weights for the attention-against-area rows (`evaluation:`)
PAIRS_SEED = 1  # the seed those pairs are drawn with; notebook 04's scatter draws the same pairs with it
DISTILLING = ("teacher", "distillation", "distill_alpha", "distill_tau")  # set per student by the study


class StudyError(BadConfig, ValueError):
    """A study config is inconsistent; the message names the key and the fix."""


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
        self.more_methods: dict[str, list[str]] = config.get("more_methods", {})
        self.seeds: list[int] = config["seeds"]
        self.train: dict[str, Any] = config.get("train", {})
        self.overrides: dict[str, dict[str, Any]] = config.get("overrides", {})
        self.robustness: dict[str, Any] | None = config.get("robustness")
        self.ablations: dict[str, Any] | None = config.get("ablations")
        self.evaluation_images: int = config.get("evaluation", {}).get("images", 0)  # 0: the whole test split
        self.evaluation_pairs: int = config.get("evaluation", {}).get("pairs", PAIRS)  # attention against area
        self.distillation: dict[str, Any] | None = config.get("distillation")
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
        """The study's main runs: models x methods x seeds, then each model's ``more_methods`` x seeds."""
        runs = [RunId(m, meth, s) for m in self.models for meth in self.methods for s in self.seeds]
        more = [RunId(m, meth, s) for m, methods in self.more_methods.items() for meth in methods for s in self.seeds]
        return [str(run) for run in runs + more]

    @cached_property
    def points(self) -> dict[str, tuple[str, Any]]:
        """``{point: (key, value)}`` for every value of every axis of the ablation grid; a point is named
        ``key=value`` (``area_weight=0.25``), which is also the last part of its runs' ids."""
        axes = self.ablations["axes"] if self.ablations else {}
        return {str(Ablation(key, str(value))): (key, value) for key, values in axes.items() for value in values}

    def ablation_runs(self, point: str) -> list[str]:
        """The run ids of one ablation point: its models x methods x seeds."""
        key, _ = self.points[point]
        methods = ["transmix"] if key in TRANSMIX_ONLY else self.methods
        models = self.ablations.get("models", self.models)
        seeds = self.ablations.get("seeds", self.seeds)
        return [str(RunId(m, meth, s, Ablation(key, str(self.points[point][1])))) for m in models for meth in methods
                for s in seeds]  # fmt: skip

    def students(self) -> list[str]:
        """The distillation section's student runs: for each seed and student method, one per teacher method and
        kind (``soft`` at each temperature, ``hard``), and with ``alone: true`` one without a teacher."""
        if not self.distillation:
            return []
        d = self.distillation
        kinds = [("soft", float(t)) for t in d.get("temperatures", [1.0])] if "soft" in d["kinds"] else []
        kinds += [("hard", None)] if "hard" in d["kinds"] else []
        points = [Student(teacher, kind, tau) for teacher in d["teachers"] for kind, tau in kinds]
        points += [Student(ALONE)] if d.get("alone", True) else []
        return [str(RunId(d["model"], method, seed, point)) for seed in d.get("seeds", self.seeds)
                for method in d["methods"] for point in points]  # fmt: skip

    @property
    def teacher_model(self) -> str:
        """The model of the teacher runs: ``distillation: teacher_model``, else the study's one model."""
        return self.distillation.get("teacher_model") or self.models[0]

    def pairs(self, run: str) -> int:
        """CutMix pairs for a run's attention-against-area rows: the study's ``evaluation: pairs``, none for students
        (notebook 04 shows the study's own runs)."""
        return 0 if RunId.parse(run).student else self.evaluation_pairs

    def teacher(self, run: str) -> str | None:
        """The run id of a student's teacher: the study's main run of the teacher method, model ``teacher_model``,
        with the student's seed; ``None`` for any other run (and for a student trained alone)."""
        parsed = RunId.parse(run)
        if parsed.student is None or parsed.student.teacher == ALONE:
            return None
        return str(RunId(self.teacher_model, parsed.student.teacher, parsed.seed))

    def _student_settings(self, run: str, point: Student) -> dict[str, Any]:
        if not self.distillation or run not in self.students():
            raise StudyError(f"{run!r} is not a student of the study's distillation section")
        d = self.distillation
        values = {**self.train, **self.overrides.get(d["model"], {}), **d.get("train", {}), "study": self.name,
                  "ablation": str(point)}  # fmt: skip
        if point.teacher != ALONE:
            values.update(teacher=f"results/{self.name}/train/{self.teacher(run)}", distill_alpha=d.get("alpha", 0.5),
                          distillation=point.kind)  # fmt: skip
            if point.kind == "soft":
                values["distill_tau"] = point.tau
        return values

    def settings(self, run: str) -> dict[str, Any]:
        """Every config key of one run: the study's ``train:``, the model's overrides, the ablation point's value,
        and the run's model, method and seed; checked (and kept, so each run is checked once)."""
        if run not in self._settings:
            parsed = RunId.parse(run)
            values = {**self.train, **self.overrides.get(parsed.model, {}), "study": self.name}
            if parsed.student:
                values = self._student_settings(run, parsed.student)
            elif parsed.point:
                if parsed.ablation not in self.points:
                    raise StudyError(f"{parsed.ablation!r} is not a point of the study's ablation grid: "
                                     f"{list(self.points)}")  # fmt: skip
                key, value = self.points[parsed.ablation]
                values.update({key: value, "ablation": parsed.ablation})
            values.update(model=parsed.model, method=parsed.method, seed=parsed.seed)
            from_dict(values)
            self._settings[run] = values
        return self._settings[run]

    def model_config(self, model: str) -> TrainConfig:
        """The config a model's runs share (the study's ``train:`` with the model's overrides)."""
        return from_dict({**self.train, **self.overrides.get(model, {}), "study": self.name, "model": model})

    def notebooks(self) -> list[str]:
        """The notebooks the study renders: 01 and 05 always; 02 with robustness, 03 with ablations, 04 with TransMix,
        06 with distillation."""
        return (
            ["01_main_results"]
            + (["02_robustness"] if self.robustness else [])
            + (["03_ablations"] if self.ablations else [])
            + (["04_attention_vs_area"] if "transmix" in self.methods else [])
            + ["05_training_dynamics"]
            + (["06_distillation"] if self.distillation else [])
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
        self._check_more_methods()
        if self.ablations:
            self._check_ablations()
        if self.distillation:
            self._check_distillation()
        if self.robustness:
            from transmix.config.robustness import Protocol, applicable

            protocol = Protocol.from_dict(self.robustness.get("protocol", {}))
            applicable(self.dataset, protocol, self.robustness.get("suites"))

    def check_models(self, check_model: Callable[[str, int, int], None]) -> None:
        """Every model is timm's and fits the study's images: what :meth:`check` cannot see without torch.
        ``check_model(name, img_size, in_chans)`` is :func:`transmix.method.models.check_model`, passed in so that
        this module stays free of torch. The Snakefile runs it once before the first job (not in a dry run)."""
        for model in self.models:
            cfg = self.model_config(model)
            try:
                check_model(model, cfg.img_size, 1 if cfg.dataset == "fashion_mnist" else 3)
            except ValueError as err:
                raise StudyError(f"{err} (study {self.name}, `models`)") from None

    def _check_more_methods(self) -> None:
        unknown = sorted(set(self.more_methods) - set(self.models))
        if unknown:
            raise StudyError(f"more_methods name model(s) not in `models`: {unknown}; add them to `models`")
        for model, methods in self.more_methods.items():
            again = sorted(set(methods) & set(self.methods))
            if again:  # the run ids would repeat
                raise StudyError(f"more_methods: {model} lists {again}, which `methods` already trains on every "
                                 "model; remove them there")  # fmt: skip

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

    def _check_distillation(self) -> None:
        d = self.distillation
        missing = sorted(set(d["teachers"]) - set(self.methods))
        if missing:
            raise StudyError(f"distillation teachers {missing} are not methods of the study {self.methods}: a "
                             "teacher is one of the study's own runs")  # fmt: skip
        if self.teacher_model not in self.models or (len(self.models) > 1 and not d.get("teacher_model")):
            raise StudyError(f"distillation: teacher_model must name one of the study's models {self.models}")
        unknown = sorted(set(d.get("seeds", [])) - set(self.seeds))
        if unknown:
            raise StudyError(f"distillation seeds {unknown} have no teacher runs: the study's seeds are {self.seeds}")
        named = sorted(set(d.get("train", {})) & {*NAMES_THE_RUN, *DISTILLING})
        if named:
            raise StudyError(f"distillation `train:` sets {named}, which the section itself decides; remove them")
        if "hard" in d["kinds"] and "distilled" not in d["model"]:
            raise StudyError(f"distillation: kind hard needs a student with a distillation token (deit_*_distilled_*), "
                             f"not {d['model']}; use soft")  # fmt: skip
        if "soft" not in d["kinds"] and d.get("temperatures"):
            raise StudyError("distillation: `temperatures` set, but `kinds` has no soft (hard takes no temperature)")
        for run in self.students():
            self.settings(run)  # a bad student setting fails here, naming it
