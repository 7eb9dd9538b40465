"""Robustness on an imagefolder run, the ImageNet path at toy size: real Fashion-MNIST pictures saved as PNG class
folders (train/, val/), a natural-adversarial folder named like a subset of the classes (the ImageNet-A layout) and
real MNIST digits as the OOD folder (the ImageNet-O layout); a real trained run, every suite through the CLI."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transmix.cli import main
from transmix.config import robustness as protocol
from transmix.config.robustness import Protocol
from transmix.config.run import ConfigError, from_dict
from transmix.data.imagefolder import eval_transform, image_folder_classes, list_images, random_subset
from transmix.evaluation.finished import load_final, variants
from transmix.records.results import read
from transmix.robustness import adversarial, corruptions, images, ood
from transmix.robustness.context import Context
from transmix.training.accuracy import top_k
from transmix.training.train import train

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
CLASSES = {"n01": 1, "n03": 3, "n08": 8, "n09": 9}  # folder name -> Fashion-MNIST label (trouser, dress, bag, boot)
PER_CLASS = {"train": 120, "val": 30}
NATURAL = ("n03", "n09")  # the natural-adversarial folder holds two of the four classes, as ImageNet-A 200 of 1000


def save(folder: Path, pictures: torch.Tensor) -> None:
    folder.mkdir(parents=True)
    for i, picture in enumerate(pictures):
        Image.fromarray(picture.numpy(), "L").save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def folders(fashion_root, tmp_path_factory) -> dict[str, Path]:
    """train/ and val/ from Fashion-MNIST's train and test splits; natural/ from later test images of two classes;
    ood/ 60 MNIST digits in class folders."""
    from torchvision.datasets import FashionMNIST

    root = tmp_path_factory.mktemp("imagenet-toy")
    for split, train_split in (("train", True), ("val", False)):
        ds = FashionMNIST(str(fashion_root), train=train_split, download=False)
        for name, label in CLASSES.items():
            save(root / "data" / split / name, ds.data[ds.targets == label][: PER_CLASS[split]])
    test = FashionMNIST(str(fashion_root), train=False, download=False)
    for name in NATURAL:
        save(root / "imagenet-a" / name, test.data[test.targets == CLASSES[name]][100:120])
    digits = ood.mnist_digits()
    for d in range(3):
        save(root / "imagenet-o" / f"digit{d}", digits[d * 500 : d * 500 + 20])
    return {"data": root / "data", "natural": root / "imagenet-a", "ood": root / "imagenet-o"}


@pytest.fixture(scope="module")
def run_dir(folders, tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = from_dict(
        dict(
            dataset="imagefolder",
            data_dir=str(folders["data"]),
            model="vit_micro_patch4_28",
            img_size=32,
            aa="",
            epochs=8,
            batch_size=32,
            warmup_epochs=0,
            lr=0.005,
            mix_prob=0.5,  # half the batches unmixed: a few hundred images teach the four classes in seconds
            ema_decay=0.9,
            method="transmix",
            device="cpu",
        )
    )
    out = tmp_path_factory.mktemp("runs") / "vit_micro_patch4_28__transmix__s0"
    train(cfg, out, progress=False)
    torch.set_num_threads(threads)
    return out


def table(rows) -> dict[tuple, float]:
    return {(r["suite"], r["setting"], r["variant"], r["metric"]): r["value"] for r in rows}


def test_class_columns_give_timms_imagenet_a_indices(tmp_path) -> None:
    # An ImageNet tree's class map (its 1000 wnid folders, as a run reads them); matching ImageNet-A's folders to it
    # by name must give the 200 logit indices timm ships for ImageNet-A.
    info = files("timm.data") / "_info"
    wnids = (info / "imagenet_synsets.txt").read_text().split()
    for split in ("train", "val"):
        for wnid in reversed(wnids):
            (tmp_path / split / wnid).mkdir(parents=True)
    classes = image_folder_classes(tmp_path)
    subset = (info / "imagenet_a_synsets.txt").read_text().split()
    indices = [int(i) for i in (info / "imagenet_a_indices.txt").read_text().split()]
    assert len(wnids) == 1000 and len(subset) == 200
    assert adversarial.class_columns(subset, classes, "imagenet-a").tolist() == indices
    with pytest.raises(ConfigError, match=r"1 class folder\(s\) the run did not train on \(n99999999\)"):
        adversarial.class_columns([*subset, "n99999999"], classes, "imagenet-a")


def test_val_images_are_a_seeded_random_subset_in_8_bits(run_dir, folders) -> None:
    cfg, _ = load_final(run_dir, CPU)
    test = images.load_images(cfg, Protocol(occlusion_images=50), ["occlusion"])
    assert test.images.shape == (50, 3, 32, 32) and test.num_classes == 4 and test.files is not None
    assert len(set(test.labels.tolist())) == 4  # val/ is sorted by class; the first 50 would hold two classes
    fewer = images.load_images(cfg, Protocol(occlusion_images=20), ["occlusion"])
    assert torch.equal(fewer.images, test.images[:20])  # one seeded order: a smaller subset is its head
    other = images.load_images(cfg, Protocol(occlusion_images=50, seed=1), ["occlusion"])
    assert not torch.equal(other.labels, test.labels)
    pixels = test.pixels()
    assert pixels.dtype == torch.uint8 and torch.allclose(test.normalise(pixels), test.images, atol=1e-5)
    assert test.pixels(test.background[None]).flatten().tolist() == [0, 0, 0]  # black in every channel
    grey = pixels[:, 0]  # Fashion-MNIST saved as grey PNG: the three channels are equal
    assert torch.equal(pixels[:, 1], grey) and torch.equal(pixels[:, 2], grey)


def test_natural_is_top1_over_the_folders_classes(run_dir, folders) -> None:
    cfg, state = load_final(run_dir, CPU)
    protocol = Protocol(natural_dir=str(folders["natural"]))
    test = images.load_images(cfg, protocol, ["natural"])
    assert len(test) == 0  # natural reads its own folder
    models = variants(cfg, state, test, CPU)
    rows = table(adversarial.natural(Context(models, test, protocol, CPU, torch.Generator())))
    assert set(rows) == {("natural", "imagenet-a", v, "top1") for v in ("raw", "ema")}
    # By hand: the folder's images through the run's evaluation transform, arg-max over the two classes' logits.
    classes = image_folder_classes(cfg.data_dir)
    transform = eval_transform(cfg)
    samples, found = list_images(folders["natural"])
    assert list(found) == list(NATURAL)
    x = torch.stack([transform(Image.open(path).convert("RGB")) for path, _ in samples])
    y = torch.tensor([label for _, label in samples])
    columns = [classes[name] for name in NATURAL]
    for variant, model in models.items():
        with torch.no_grad():
            hits = int((model(x)[:, columns].argmax(dim=1) == y).sum()) / len(y)
        assert rows["natural", "imagenet-a", variant, "top1"] == pytest.approx(100 * hits, abs=1e-9)
    val = images.load_images(cfg, Protocol(occlusion_images=0), ["occlusion"])
    assert len(val) == 4 * PER_CLASS["val"]
    # Above chance (25%; 40-70% measured): the checks above compare real predictions, not a constant class.
    assert top_k(models["raw"], val, CPU, ks=(1,))[1] > 100 / 4 + 5


def test_every_suite_on_an_imagefolder_run(run_dir, folders, tmp_path, capsys) -> None:
    out = tmp_path / "robustness.csv"
    small = [
        "occlusion_images=40",
        "occlusion_fractions=[0,0.9]",
        "shuffle_images=40",
        "shuffle_grids=[1,4]",
        "adversarial_images=16",
        "adversarial_attacks=fgsm",
        "adversarial_epsilons=[0,8/255]",
        "ood_images=50",
        "corruption_images=8",
        "corruption_names=[gaussian_noise,frost]",
        "corruption_severities=[5]",
        f"natural_dir={folders['natural']}",
        f"ood_dir={folders['ood']}",
    ]
    args = ["robustness", "--run", str(run_dir), "--out", str(out), "--device", "cpu", "--threads", "1"]
    assert main([*args, *[a for kv in small for a in ("--set", kv)]]) == 0, capsys.readouterr().err
    df = read(out)
    assert set(df.suite) == set(protocol.SUITES) and set(df.variant) == {"raw", "ema"}
    assert (df.dataset == "imagefolder").all()
    assert df.groupby("suite").n.unique().map(list).to_dict() == {
        "adversarial": [16],
        "corruption": [8],
        "natural": [40],
        "occlusion": [40],
        "ood": [100],  # 50 val/ images and 50 of the 60 digits
        "shuffle": [40],
    }
    assert set(df[df.suite == "ood"].setting) == {"imagenet-o"} and set(df[df.suite == "natural"].setting) == {
        "imagenet-a"
    }
    rows = df.set_index(["suite", "setting", "level", "variant", "metric"]).value
    # The unperturbed points are one number: the same 40 (resp. 16) images, the same clean top-1.
    assert rows["occlusion", "patch_drop", 0.0, "raw", "top1"] == rows["shuffle", "patch_shuffle", 1, "raw", "top1"]
    assert rows["occlusion", "patch_drop", 0.9, "raw", "top1"] < rows["occlusion", "patch_drop", 0.0, "raw", "top1"]
    cfg, state = load_final(run_dir, CPU)
    head = images.load_images(cfg, Protocol(), ["adversarial"]).head(16)
    clean16 = top_k(variants(cfg, state, head, CPU)["raw"], head, CPU, ks=(1,))[1]
    assert rows["adversarial", "fgsm", 0.0, "raw", "top1"] == clean16
    # AUROC by hand: the chance that one of the 50 val/ images scores above one of the 50 digits picked with the
    # protocol's seed (ImageNet-O's layout: class folders of OOD images, read with the run's evaluation transform).
    samples = random_subset(list_images(folders["ood"])[0], 50, torch.Generator().manual_seed(0))
    transform = eval_transform(cfg)
    digits = torch.stack([transform(Image.open(path).convert("RGB")) for path, _ in samples])
    model = variants(cfg, state, head, CPU)["ema"]
    context = Context({"ema": model}, head, Protocol(batch_size=64), CPU, torch.Generator())
    val50 = images.load_images(cfg, Protocol(), ["ood"]).head(50).images
    inside, outside = (ood.max_softmax(context, model, x) for x in (val50, digits))
    above = ((inside[:, None] > outside[None]).double() + 0.5 * (inside[:, None] == outside[None]).double()).mean()
    assert rows["ood", "imagenet-o", np.nan, "ema", "auroc"] == pytest.approx(100 * float(above), abs=1e-9)

    # Notebook 02 on this table, executed by papermill: the ImageNet-scale sections render (natural's bar chart).
    import papermill

    figures = tmp_path / "figures"
    figures.mkdir()
    papermill.execute_notebook(
        str(REPO / "notebooks/02_robustness.ipynb"),
        str(tmp_path / "02.ipynb"),
        parameters={"results_csv": str(out), "study": df.study.iloc[0], "figures_dir": str(figures)},
        cwd=str(REPO),
        progress_bar=False,
    )
    assert {"natural.png", "occlusion.png", "corruption.png"} <= {p.name for p in figures.iterdir()}


def test_suites_that_do_not_apply_are_clear_errors(run_dir, folders, tmp_path, capsys) -> None:
    out = tmp_path / "x.csv"
    base = ["robustness", "--run", str(run_dir), "--out", str(out), "--suite", "natural"]
    assert main([*base, "--set", f"natural_dir={tmp_path / 'nowhere'}"]) != 0
    assert "natural_dir=" in capsys.readouterr().err and not out.exists()
    wrong = tmp_path / "wrong"
    for name in ("n03", "cat"):
        (wrong / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(wrong / name / "0.png")
    assert main([*base, "--set", f"natural_dir={wrong}"]) != 0
    assert "1 class folder(s) the run did not train on (cat)" in capsys.readouterr().err


def test_rgb_corruptions_are_the_same_on_any_number_of_workers(run_dir) -> None:
    cfg, _ = load_final(run_dir, CPU)
    test = images.load_images(cfg, Protocol(corruption_images=6), ["corruption"])
    pixels = test.pixels().permute(0, 2, 3, 1).numpy()  # (6, 32, 32, 3): RGB, at least 32 px, so no padding
    seeds = list(range(100, 106))
    # impulse_noise draws from its own generator, seeded through its `seed` argument: the path most easily broken
    alone = corruptions.corrupt_images(pixels, "impulse_noise", 5, seeds)
    assert alone.shape == pixels.shape and alone.dtype == np.uint8 and (alone != pixels).mean() > 0.1
    with corruptions.corruption_pool(2) as pool:
        assert pool is not None
        shared = corruptions.corrupt_many(pool, 2, pixels, "impulse_noise", 5, seeds)
    assert np.array_equal(shared, alone)
    with corruptions.corruption_pool(1) as pool:
        assert pool is None


def test_notebook_04_on_a_class_folder_run(run_dir, folders, tmp_path) -> None:
    """Fig. 1 on RGB class-folder images (the ImageNet path), labelled with the study's own class folders."""
    import papermill

    table = tmp_path / "evaluate.csv"
    assert main(["evaluate", "--run", str(run_dir), "--out", str(table), "--device", "cpu", "--images", "40"]) == 0
    figures = tmp_path / "figures"
    figures.mkdir()
    executed = papermill.execute_notebook(
        str(REPO / "notebooks/04_attention_vs_area.ipynb"),
        str(tmp_path / "04.ipynb"),
        parameters={
            "results_csv": str(table),
            "study": read(table).study.iloc[0],
            "runs_dir": str(run_dir.parent),
            "run_id": run_dir.name,
            "pairs_scatter": 40,
            "figures_dir": str(figures),
        },
        cwd=str(REPO),
        progress_bar=False,
    )
    assert {"fig1_pairs.png", "area_vs_attention.png", "gap_during_training.png"} <= {p.name for p in figures.iterdir()}
    pairs_table = next(o["data"]["text/plain"] for cell in executed["cells"] for o in cell.get("outputs", [])
                       if "λ attention" in o.get("data", {}).get("text/plain", ""))  # fmt: skip
    shown = {word for line in pairs_table.splitlines()[1:] for word in line.split()[1:3]}
    assert shown and shown <= set(CLASSES), pairs_table  # folder names, not Fashion-MNIST's class names
