"""The peak table keeps its budget and its rows: a variant past the budget or one that fails is a row saying so."""

from __future__ import annotations

import math
import time

from transmix.config.run import load
from transmix.tools.peak import GPU_VARIANTS, Variant, peak

MICRO = dict(in_chans=1, img_size=28, num_classes=10, steps=2, rounds=2, warmup=1)


def test_variants_past_the_budget_are_rows_that_say_so() -> None:
    rows = peak(load(None, ["model=vit_micro_patch4_28", "device=cpu"]), GPU_VARIANTS, budget_s=0, global_batch=1024,
                **MICRO)  # fmt: skip
    assert [r.variant for r in rows] == [v.name for v in GPU_VARIANTS]
    assert {r.status for r in rows} == {"not run: budget"} and all(math.isnan(r.images_per_second) for r in rows)
    assert [r.batch_size for r in rows] == [v.batch or 1024 for v in GPU_VARIANTS]


def test_a_failing_variant_is_a_row_with_its_error_and_the_next_one_runs() -> None:
    variants = (Variant("no such mode", "no-such-mode", batch=4), Variant("eager, fused AdamW", None))
    bad, good = peak(load(None, ["model=vit_micro_patch4_28", "device=cpu"]), variants, budget_s=300,
                     global_batch=8, **MICRO)  # fmt: skip
    assert bad.status.startswith("error: ") and "no-such-mode" in bad.status and bad.batch_size == 4, bad
    assert math.isnan(bad.images_per_second)
    assert good.status == "ok" and good.batch_size == 8 and good.images_per_second > 0 and good.rounds == 2
    assert good.low <= good.images_per_second <= good.high and good.achieved_tflops > 0
    assert math.isnan(good.peak_fraction), "no bf16 peak is known for a CPU"


def test_the_budget_stops_a_variant_under_way() -> None:
    endless = dict(MICRO, rounds=100_000)
    started = time.monotonic()
    rows = peak(load(None, ["model=vit_micro_patch4_28", "device=cpu"]), (Variant("a", None), Variant("b", None)),
                budget_s=20, global_batch=4, **endless)  # fmt: skip
    assert time.monotonic() - started < 25, "the budget is a wall-clock limit"
    assert [r.status for r in rows] == ["stopped: budget", "not run: budget"]
