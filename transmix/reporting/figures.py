"""Where a page's figures are kept: PNG copies beside the rendered notebooks, for ``snakemake --report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, directory: str | Path, name: str) -> None:
    """Keep a notebook's figure as ``<directory>/<name>.png`` (nothing when ``directory`` is empty), so that
    ``snakemake --report`` can collect every figure beside the rendered notebooks. It returns nothing, so a cell
    that ends with it prints no stray value on the page."""
    if not directory:
        return
    path = Path(directory) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
