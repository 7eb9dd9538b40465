"""The ``transmix`` command: what each subcommand does (its arguments and help are in :mod:`transmix.cli.args`).
Every pipeline stage is a subcommand; Snakemake calls these and nothing else.

Nothing heavy is imported until a command runs: ``transmix --help`` and ``transmix data`` never load torch.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import logging
import sys
from collections.abc import Iterator

from transmix.cli.args import build_parser
from transmix.config import robustness as protocol_mod
from transmix.config import run as config_mod
from transmix.errors import Failure, Stopped


@contextlib.contextmanager
def start_up() -> Iterator[None]:
    """Import a command's modules (torch, torchvision, timm, pandas) with Python's cyclic garbage collector paused,
    then freeze what they built. Those hundreds of thousands of objects live as long as the process, so every
    collection that walks them, while importing and in every full collection of the run after it, is wasted work
    (the README's "Measured" table has what it saves). Forked loader workers then no longer write to the pages that
    hold those objects, as Python's ``gc.freeze`` documentation explains. What a command imports later, and what it
    builds, is collected as usual."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_data(args: argparse.Namespace) -> int:
    if args.check:
        from transmix.data import CorruptImage
        from transmix.data.imagefolder import check_image_folder

        try:
            counts = check_image_folder(args.root, workers=args.workers)
        except CorruptImage as err:
            print(f"transmix: error: {err}", file=sys.stderr)
            return 1
        print(f"{args.root}: {counts['train']} train and {counts['val']} val images of {counts['classes']} classes; "
              "every one decodes")  # fmt: skip
        return 0
    if args.dataset != "fashion_mnist":
        from transmix.data.cifar import prepare_cifar

        root = prepare_cifar(args.dataset, args.root, source=args.source, download=not args.no_download)
        print(f"{args.dataset} ready as class folders in {root}")
        return 0
    from transmix.data.prepare import prepare_fashion_mnist

    raw = prepare_fashion_mnist(args.root, source=args.source, download=not args.no_download)
    print(f"Fashion-MNIST ready in {raw}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, args.set)
    with start_up():
        _threads(args.threads)
        from transmix.training.train import train

    progress = {"auto": None, "bar": True, "log": False, "epochs": False}[args.progress]
    if args.progress == "epochs":
        _epoch_lines_to_stdout()
    print(train(cfg, args.out, stop_after=args.stop_after, progress=progress, set_aside=args.set_aside))
    return 0


def _epoch_lines_to_stdout() -> None:
    """Each finished epoch's line (run, epoch, loss, validation top-1) on stdout too, while every log line still
    goes to stderr: a workflow sends stderr to the job's log and leaves stdout on the user's terminal."""
    from transmix.training.train import EPOCH_LINE

    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(lambda record: getattr(record, EPOCH_LINE, False))
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    logging.getLogger("transmix.training.train").addHandler(handler)


def cmd_evaluate(args: argparse.Namespace) -> int:
    with start_up():
        from transmix.evaluation.evaluate import clean
        from transmix.records.results import write

        _threads(args.threads)
    df = clean(args.run, device=args.device, images=args.images, pairs=args.pairs)
    write(df, args.out)
    top1 = df[df.metric == "top1"].set_index("variant")["value"].round(2).to_dict()
    print(f"{args.out}: top-1 {top1}")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    protocol = protocol_mod.load(args.set)
    with start_up():
        from transmix.records.results import write
        from transmix.robustness.runner import run

        _threads(args.threads)
    df = run(args.run, protocol, device=args.device, suites=args.suite)
    write(df, args.out)
    print(f"{args.out}: {len(df)} rows ({', '.join(df.suite.unique())}; variants {', '.join(df.variant.unique())})")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    with start_up():
        from transmix.records.results import collect, write

    df = collect(args.inputs, include_paper=not args.no_paper, onto=args.onto)
    write(df, args.out)
    print(f"{args.out}: {len(df)} rows ({int((df.source == 'ours').sum())} measured)")
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    with start_up():
        from transmix.records.results import read
        from transmix.reporting.pages import summarize

    print(summarize(read(args.table), args.treatment, args.baseline), end="")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    cfg = config_mod.load(None, [f"model={args.model}", f"batch_size={args.batch_size}", *args.set])
    modes, precisions = (
        _choices("--modes", args.modes, ("eager", "compiled")),
        _choices("--precisions", args.precisions, ("fp32", "bf16")),
    )
    with start_up():
        from transmix.tools.bench import bench, format_table, write_csv

        _threads(args.threads)
    rows = bench(cfg, steps=args.steps, rounds=args.rounds, warmup=args.warmup, img_size=args.img_size,
                 in_chans=args.in_chans, num_classes=args.num_classes, modes=modes, precisions=precisions,
                 peak_tflops=args.peak_tflops, teacher_model=args.teacher_model)  # fmt: skip
    print(format_table(rows))
    if args.out:
        print(f"appended {len(rows)} rows to {write_csv(rows, args.out)}")
    return 0


def cmd_bench_loader(args: argparse.Namespace) -> int:
    cfg = config_mod.load(None, ["dataset=imagefolder", f"img_size={args.img_size}", f"batch_size={args.batch_size}",
                                 f"aa={args.aa}", "device=cpu", *args.set])  # fmt: skip
    try:
        workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    except ValueError:
        raise config_mod.ConfigError(f"--workers {args.workers!r}: give worker counts such as 0,1,2") from None
    if not workers or min(workers) < 0:
        raise config_mod.ConfigError(f"--workers {args.workers!r}: give worker counts >= 0 such as 0,1,2")
    loaders = _choices("--loader", args.loader, config_mod.LOADERS)
    configs = [cfg.replace(loader=loader) for loader in loaders]  # each checked now, before any timing
    with start_up():
        from transmix.tools.bench import write_csv
        from transmix.tools.loader_bench import run

    rows = [row for each in configs for row in run(each, workers, args.batches, args.rounds, args.data_dir)]
    if args.out:
        print(f"appended {len(rows)} rows to {write_csv(rows, args.out)}")
    return 0


def _choices(flag: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise config_mod.ConfigError(f"{flag} {text!r}: a comma-separated list of {', '.join(allowed)}")
    return values


def cmd_cost(args: argparse.Namespace) -> int:
    if args.tflops is not None and args.tflops <= 0:
        raise config_mod.ConfigError(f"--tflops {args.tflops} must be > 0")
    with start_up():
        from transmix.tools import cost

    measured = cost.read_measured(args.measured) if args.measured is not None else None  # before the FLOP counts
    images = args.images or cost.train_images(args.config)
    if measured is not None:
        print(cost.format_measured(cost.measured_cost(args.config, measured, images), measured, images))
    else:
        print(cost.format_table(cost.study_cost(args.config, args.tflops, images), args.tflops, images))
    return 0


def cmd_chunk(args: argparse.Namespace) -> int:
    if args.minutes <= 0 or args.parallel < 1 or args.run_minutes < 0 or (args.threads or 1) < 1:
        raise config_mod.ConfigError(f"--minutes {args.minutes:g} must be > 0, --parallel {args.parallel} >= 1, "
                                     f"--run-minutes {args.run_minutes:g} >= 0 and --threads >= 1")  # fmt: skip
    with start_up():
        from transmix.tools.chunk import chunk

    chunk(args.config, args.minutes, args.parallel, args.threads, args.run_minutes, args.collect,
          say=lambda line: print(line, flush=True))  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with start_up():
        from transmix.tools.export import export

    print(f"timm.create_model('local-dir:{export(args.run, args.out, args.variant)}', pretrained=True)")
    return 0


COMMANDS = {  # subcommand -> what it does
    "data": cmd_data,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "robustness": cmd_robustness,
    "collect": cmd_collect,
    "summarize": cmd_summarize,
    "bench": cmd_bench,
    "bench-loader": cmd_bench_loader,
    "export": cmd_export,
    "cost": cmd_cost,
    "chunk": cmd_chunk,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")  # fmt: skip
    try:
        return COMMANDS[args.command](args)
    except Exception as err:
        full = next((e for e in _causes(err) if isinstance(e, OSError) and e.errno == errno.ENOSPC), None)
        if full is not None:  # torch.save wraps it in its own error, dozens of frames deep
            where = full.filename or "the output folder"
            print(f"transmix: error: no space left on the device writing {where}; free space and run the same "
                  "command again (what was written before is intact)", file=sys.stderr)  # fmt: skip
            return 1
        if isinstance(err, Failure | Stopped):  # every error a user can fix derives from one (transmix.errors)
            print(f"transmix: {err.LABEL}: {err}", file=sys.stderr)
            return err.EXIT
        if isinstance(err, FileNotFoundError):
            print(f"transmix: error: {err}", file=sys.stderr)
            return 1
        raise


def _causes(err: BaseException) -> list[BaseException]:
    """``err`` and what it was raised from or during, innermost last."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


if __name__ == "__main__":
    sys.exit(main())
