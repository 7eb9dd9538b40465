"""A page's figures are kept as PNG beside it, and only where the page is given a folder."""

from __future__ import annotations

import matplotlib.pyplot as plt

from transmix.reporting.figures import save_figure


def test_a_figure_is_kept_as_png_where_a_folder_is_given(tmp_path) -> None:
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    folder = tmp_path / "figures" / "01_main_results"  # made when missing
    assert save_figure(fig, folder, "top1") is None  # nothing for a cell to print
    assert (folder / "top1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    save_figure(fig, "", "top1")  # no folder: nothing written
    assert [p.name for p in tmp_path.rglob("*.png")] == ["top1.png"]
    plt.close(fig)
