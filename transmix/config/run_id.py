"""A run's id: what it trained (model, method, seed) and, for a run outside the study's main grid, its point.

A run id names a run folder, a results row and a Snakemake target, so it is written and read in one place: this
module. Its text is ``{model}__{method}__s{seed}``, plus ``__{key}={value}`` for a run of an ablation point
(``__area_weight=0.25``) and ``__kd={teacher method}.{kind}`` for a distillation student (``kd=transmix.soft4``: soft
distillation at temperature 4 from the study's transmix run of the student's seed; ``kd=deit.hard``; ``kd=alone``:
the student's recipe without a teacher). The point is also what a run's rows carry in ``ablation``. Published rows
have ids of their own (:class:`PublishedId`). No torch, no pandas: the Snakefile derives its wildcard from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from transmix.errors import BadConfig

__all__ = [
    "ALONE",
    "KD",
    "PATTERN",
    "POINT_PATTERN",
    "Ablation",
    "PublishedId",
    "RunId",
    "RunIdError",
    "Student",
    "parse_point",
]

KD = "kd"  # the point key of a distillation student
ALONE = "alone"  # the teacher of a student trained without one
_MODEL, _METHOD, _SEED = r"[A-Za-z0-9_.]+?", r"[a-z]+", r"\d+"
_KEY, _VALUE = r"[a-z_]+", r"[A-Za-z0-9_.+-]+"
POINT_PATTERN = f"{_KEY}={_VALUE}"  # an ablation point or a student's teacher, as Snakemake's `point` wildcard
PATTERN = f"{_MODEL}__{_METHOD}__s{_SEED}(?:__{POINT_PATTERN})?"  # a run id, as Snakemake's `run_id` wildcard
_PARSE = re.compile(
    rf"(?P<model>{_MODEL})__(?P<method>{_METHOD})__s(?P<seed>{_SEED})(?:__(?P<key>{_KEY})=(?P<value>{_VALUE}))?"
)
_PUBLISHED = re.compile(r"(?P<source>.+?)__(?P<model>.+?)__(?P<method>[a-z]+)__e(?P<epochs>\d+)(?:__(?P<tag>.+))?")
_STUDENT = re.compile(r"(?P<teacher>[a-z]+)\.(?:(?P<hard>hard)|soft(?P<tau>\d+(?:\.\d+)?))")


class RunIdError(BadConfig, ValueError):
    """A run id (or a point) that does not follow the grammar; the message shows it."""


@dataclass(frozen=True)
class Ablation:
    """One point of an ablation grid: the config key changed and its value, as written in the study."""

    key: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


@dataclass(frozen=True)
class Student:
    """A distillation student's teacher: the teacher run's method (or ``alone``), the kind, soft's temperature."""

    teacher: str
    kind: str = ""  # "soft" | "hard"; "" when alone
    tau: float | None = None  # soft only

    def __str__(self) -> str:
        if self.teacher == ALONE:
            return f"{KD}={ALONE}"
        return f"{KD}={self.teacher}." + ("hard" if self.kind == "hard" else f"soft{self.tau:g}")

    @property
    def label(self) -> str:
        """How a page names the kind: ``soft T=4``, ``hard`` or ``alone``."""
        if self.teacher == ALONE:
            return ALONE
        return "hard" if self.kind == "hard" else f"soft T={self.tau:g}"


@dataclass(frozen=True)
class RunId:
    """One run: ``RunId.parse(text)`` and ``str(run)`` are inverses for every id this package writes."""

    model: str
    method: str
    seed: int
    point: Ablation | Student | None = None

    def __str__(self) -> str:
        return f"{self.model}__{self.method}__s{self.seed}" + (f"__{self.point}" if self.point else "")

    @classmethod
    def parse(cls, text: str) -> RunId:
        """The run of ``text``.

        Raises:
            RunIdError: ``text`` is not ``model__method__s<seed>[__key=value]``, or its ``kd=`` point is not a
                teacher's method and kind.
        """
        match = _PARSE.fullmatch(text)
        if match is None:
            raise RunIdError(f"run_id {text!r} is not model__method__s<seed>[__key=value]")
        return cls(match["model"], match["method"], int(match["seed"]), point(match["key"], match["value"]))

    @property
    def ablation(self) -> str:
        """The point as text ("" for a main run): the ``ablation`` column of the run's rows."""
        return str(self.point) if self.point else ""

    @property
    def student(self) -> Student | None:
        return self.point if isinstance(self.point, Student) else None

    def with_method(self, method: str) -> RunId:
        """The same run with another method: its twin of the same seed (and point)."""
        return replace(self, method=method)


def point(key: str | None, value: str | None) -> Ablation | Student | None:
    """``key=value`` as a point: a student's teacher for ``kd``, else an ablation point; ``None`` without a key.

    Raises:
        RunIdError: a ``kd`` value that is neither ``alone`` nor ``<method>.hard`` / ``<method>.soft<T>``.
    """
    if key is None:
        return None
    if key != KD:
        return Ablation(key, str(value))
    if value == ALONE:
        return Student(ALONE)
    match = _STUDENT.fullmatch(str(value))
    if match is None:
        raise RunIdError(f"{KD}={value!r} is not {KD}={ALONE}, {KD}=<method>.hard or {KD}=<method>.soft<T>")
    if match["hard"]:
        return Student(match["teacher"], "hard")
    return Student(match["teacher"], "soft", float(match["tau"]))


def parse_point(text: str) -> Ablation | Student | None:
    """A run's ``ablation`` column (``key=value``, or "" for a main run) as a point."""
    if not text:
        return None
    key, sep, value = text.partition("=")
    if not sep:
        raise RunIdError(f"point {text!r} is not key=value")
    return point(key, value)


@dataclass(frozen=True)
class PublishedId:
    """A published row's id in ``paper.csv``: ``{source}__{model}__{method}__e{epochs}``, plus ``__{tag}`` where one
    source reports the same model twice (``__in1k``)."""

    source: str
    model: str
    method: str
    epochs: int
    tag: str = ""

    def __str__(self) -> str:
        return f"{self.source}__{self.model}__{self.method}__e{self.epochs}" + (f"__{self.tag}" if self.tag else "")

    @classmethod
    def parse(cls, text: str) -> PublishedId:
        match = _PUBLISHED.fullmatch(text)
        if match is None:
            raise RunIdError(f"published id {text!r} is not source__model__method__e<epochs>[__tag]")
        return cls(match["source"], match["model"], match["method"], int(match["epochs"]), match["tag"] or "")
