"""transmix-repro: TransMix (Chen et al., CVPR 2022) for timm vision transformers, reproducibly.

Where things are: the method in :mod:`transmix.mixing` (labels) and :mod:`transmix.attention` (class-token
attention); the loop in :mod:`transmix.train`; the results schema in :mod:`transmix.results`; the command line
in :mod:`transmix.cli`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("transmix-repro")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
