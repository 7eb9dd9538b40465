"""transmix-repro: TransMix (Chen et al., CVPR 2022) for timm vision transformers, reproducibly.

Where things are, one folder per role: the method in :mod:`transmix.method` (start with ``mixing.py`` and
``attention.py``); what a run and a study are in :mod:`transmix.config`; training and its run folder in
:mod:`transmix.training`; datasets in :mod:`transmix.data`; a finished run measured in :mod:`transmix.evaluation` and
:mod:`transmix.robustness`; the results table and provenance in :mod:`transmix.records`; the analyses and page
texts of the notebooks in :mod:`transmix.reporting`; benchmarks, cost and checks in :mod:`transmix.tools`; the
``transmix`` command in :mod:`transmix.cli`. Layers import downwards only (``python -m transmix.tools.imports``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("transmix-repro")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
