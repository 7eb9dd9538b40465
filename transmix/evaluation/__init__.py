"""A finished run measured: the run loaded once (:mod:`.finished`), its tidy rows (:mod:`.evaluate`: top-k and
calibration through :mod:`transmix.training.accuracy`, the very code of per-epoch validation), and the CutMix pairs
that compare attention with area (:mod:`.pairs`)."""
