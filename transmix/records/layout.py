"""The names of the files in a run directory, in a module that imports nothing: the notebooks' setup tables read
``config.resolved.yaml`` without loading torch, which :mod:`transmix.training.checkpoint` (where these files are
written and read) needs."""

CHECKPOINT, PREVIOUS, CORRUPT, FINAL = "checkpoint.pt", "checkpoint.prev.pt", "checkpoint.corrupt.pt", "final.pt"
HISTORY, RESOLVED, LOCK = "history.jsonl", "config.resolved.yaml", "train.lock"
