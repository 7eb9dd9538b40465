"""The suites by name, and :func:`run`: load a finished run once and measure it, as tidy rows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
import torch

from transmix.config.robustness import FOLDERS, SUITES, Protocol, applicable
from transmix.data import DatasetMissing
from transmix.evaluation.evaluate import run_columns
from transmix.evaluation.finished import load_final, variants
from transmix.records.results import frame
from transmix.robustness.adversarial import adversarial, natural
from transmix.robustness.context import Context, Rows
from transmix.robustness.corruptions import corruption
from transmix.robustness.images import load_images
from transmix.robustness.ood import ood
from transmix.robustness.spatial import occlusion, shuffle
from transmix.training.runtime import resolve_device

log = logging.getLogger(__name__)

Suite = Callable[[Context], Rows]
BY_NAME: dict[str, Suite] = {"occlusion": occlusion, "shuffle": shuffle, "adversarial": adversarial,
                             "natural": natural, "ood": ood, "corruption": corruption}  # fmt: skip
assert tuple(BY_NAME) == SUITES, "every suite the protocol names has a function, in the same order"


def run(run_dir: str | Path, protocol: Protocol | None = None, device: str = "auto",
        suites: Iterable[str] | None = None) -> pd.DataFrame:  # fmt: skip
    """Load a finished run once and measure ``suites`` (default: every one that applies, :func:`applicable`) on its
    raw and EMA weights; tidy rows.

    Raises:
        ConfigError: a suite name is unknown or does not apply to the run, or a protocol value does not fit the data.
        FileNotFoundError: the run has not finished.
        DatasetMissing: the run's data, or a folder the protocol names, is not there.
    """
    protocol = protocol or Protocol()
    dev = resolve_device(device)
    cfg, state = load_final(run_dir, dev)
    names = applicable(cfg.dataset, protocol, suites)
    for key, _ in FOLDERS.values():  # before reading val/ and loading the models
        folder = getattr(protocol, key)
        if folder and not Path(folder).is_dir():
            raise DatasetMissing(f"{key}={folder} does not exist; expected a folder of class folders holding images")
    test = load_images(cfg, protocol, names)
    models = variants(cfg, state, test, dev)
    rows: Rows = []
    for number, name in enumerate(names, 1):
        log.info("robustness %s (%d of %d) ...", name, number, len(names))
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(protocol.seed)  # one per suite: numbers do not depend on the others
        rows += BY_NAME[name](Context(models, test, protocol, dev, gen, cfg.precision))
        log.info("robustness %s: %.1f s", name, time.perf_counter() - start)
    columns = run_columns(run_dir, cfg, state)
    return frame({**columns, **row} for row in rows)
