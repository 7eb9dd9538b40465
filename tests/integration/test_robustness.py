"""Robustness suites on a real (tiny) trained run and real images: Fashion-MNIST, MNIST digits, real attacks."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from transmix.cli import main
from transmix.config import robustness as protocol
from transmix.config.robustness import Protocol
from transmix.config.run import ConfigError
from transmix.evaluation.finished import load_final, variants
from transmix.records.results import read
from transmix.robustness import adversarial, corruptions, images, ood, spatial
from transmix.robustness.context import Context
from transmix.training.accuracy import top_k

pytestmark = pytest.mark.slow
CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Micro models gain nothing from a second thread, and on a shared 2-core machine two spinning threads made the
    # tiny training below take 44 s instead of 6 s (measured); the caller's setting is restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(finished_run):
    return finished_run


@pytest.fixture(scope="module")
def loaded(run_dir):
    cfg, state = load_final(run_dir, CPU)
    test = images.load_images(cfg, Protocol(), protocol.SUITES)
    return variants(cfg, state, test, CPU), test


def table(rows: list[dict]) -> dict[tuple, float]:
    """Rows by (suite, setting, level, variant, metric); a missing level (NaN, never equal to itself) as None."""
    level = lambda r: None if r["level"] != r["level"] else r["level"]  # noqa: E731
    return {(r["suite"], r["setting"], level(r), r["variant"], r["metric"]): r["value"] for r in rows}


def clean_top1(model, test, n: int) -> float:
    return top_k(model, test.head(n), CPU, ks=(1,))[1]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_occlusion_drops_whole_patches(loaded) -> None:
    models, test = loaded
    rows, cols = spatial.patch_cells(models["raw"], (28, 28))
    assert rows.max() == cols.max() == 6  # 4-pixel patches of vit_micro_patch4_28: 7x7
    x = test.images[:50] + 10.0  # no pixel is background any more, so every blacked-out patch shows
    background = test.background
    assert background.shape == (1, 1, 1) and test.pixels(background[None]).item() == 0  # black, normalised
    half = spatial.occlude(x, rows, cols, 0.5, gen(), background)
    black = (half == background).view(50, 7, 4, 7, 4)
    assert (black.all(dim=(2, 4)) == black.any(dim=(2, 4))).all()  # whole patches or nothing
    assert (black.all(dim=(2, 4)).sum(dim=(1, 2)) == 25).all()  # round(0.5 * 49), half up
    assert torch.equal(half[half != background], x[half != background])
    assert (spatial.occlude(x, rows, cols, 1.0, gen(), background) == background).all()
    assert torch.equal(spatial.occlude(x, rows, cols, 0.0, gen(), background), x)


def test_occlusion_zero_is_clean_and_dropping_hurts(loaded) -> None:
    models, test = loaded
    protocol = Protocol(occlusion_images=400, occlusion_fractions=(0.0, 0.9))
    rows = table(spatial.occlusion(Context(models, test, protocol, CPU, gen())))
    for variant, model in models.items():
        clean = clean_top1(model, test, 400)
        assert rows["occlusion", "patch_drop", 0.0, variant, "top1"] == clean
        assert rows["occlusion", "patch_drop", 0.9, variant, "top1"] < clean


def test_shuffle_one_cell_is_clean_and_keeps_pixels(loaded) -> None:
    models, test = loaded
    protocol = Protocol(shuffle_images=300, shuffle_grids=(1, 7))
    rows = table(spatial.shuffle(Context(models, test, protocol, CPU, gen())))
    for variant, model in models.items():
        assert rows["shuffle", "patch_shuffle", 1, variant, "top1"] == clean_top1(model, test, 300)
    x = test.images[:20]
    shuffled = spatial.shuffle_cells(x, 7, gen())
    assert not torch.equal(shuffled, x)
    assert torch.equal(shuffled.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
    with pytest.raises(ConfigError, match="shuffle_grids holds 3.*1, 2, 4, 7, 14, 28"):
        spatial.shuffle(Context(models, test, Protocol(shuffle_grids=(1, 3)), CPU, gen()))


def test_adversarial_zero_is_clean_and_attacks_hurt(loaded) -> None:
    models, test = loaded
    eps = 8 / 255
    protocol = Protocol(adversarial_images=100, adversarial_epsilons=(0.0, eps), pgd_steps=5)
    rows = table(adversarial.adversarial(Context(models, test, protocol, CPU, gen())))
    for variant, model in models.items():
        clean = clean_top1(model, test, 100)
        assert rows["adversarial", "fgsm", 0.0, variant, "top1"] == clean
        assert rows["adversarial", "pgd", 0.0, variant, "top1"] == clean
        fgsm, pgd = (rows["adversarial", name, eps, variant, "top1"] for name in ("fgsm", "pgd"))
        # Not a theorem, but what the attacks are for; on this model by 7 points or more. (PGD below FGSM is not
        # asserted: with 5 steps of eps/4 it was the weaker one on this barely trained model.)
        assert max(fgsm, pgd) < clean


def test_attacks_are_bounded_seeded_and_one_step_pgd_is_fgsm(loaded) -> None:
    models, test = loaded
    eps = 8 / 255
    pixels, labels = test.pixels(test.images[:32]).float() / 255, test.labels[:32]
    wrapped = adversarial.PixelSpace(models["raw"], test.normalise)
    protocol = Protocol(pgd_steps=3)
    state = torch.get_rng_state()
    pgd = adversarial.attack(wrapped, "pgd", eps, pixels, labels, 7, protocol)
    assert torch.equal(torch.get_rng_state(), state), "PGD's random start leaked into the global RNG"
    assert torch.equal(pgd, adversarial.attack(wrapped, "pgd", eps, pixels, labels, 7, protocol))
    assert not torch.equal(pgd, adversarial.attack(wrapped, "pgd", eps, pixels, labels, 8, protocol))
    fgsm = adversarial.attack(wrapped, "fgsm", eps, pixels, labels, 0, protocol)
    assert not models["raw"].training, "the attack left the model in training mode (drop-path on)"
    for adv in (pgd, fgsm):
        assert eps / 2 < (adv - pixels).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    # One PGD step of size epsilon from the clean image is FGSM: checks how the protocol reaches the library.
    one_step = Protocol(pgd_steps=1, pgd_alpha=1.0, pgd_random_start=False)
    assert torch.allclose(adversarial.attack(wrapped, "pgd", eps, pixels, labels, 0, one_step), fgsm, atol=1e-6)


def test_ood_scores_fashion_against_real_mnist(loaded) -> None:
    models, test = loaded
    digits = ood.mnist_digits()
    assert digits.shape == (5000, 28, 28) and digits.dtype == torch.uint8 and digits.max() == 255
    raw = {"raw": models["raw"]}
    context = Context(raw, test, Protocol(ood_images=1000), CPU, gen())
    rows = table(ood.ood(context))
    assert set(rows) == {("ood", "mnist", None, "raw", metric) for metric in ("auroc", "aupr", "aupr_out")}
    # AUROC is the chance that an in-distribution image scores above a digit (ties count half): count it directly,
    # on the same images (the digits are a seeded random 1000 of the 5000, which ship sorted by class).
    picked = digits[torch.randperm(5000, generator=gen())[:1000]]
    inside = ood.max_softmax(context, models["raw"], test.images[:1000])
    outside = ood.max_softmax(context, models["raw"], test.normalise(picked[:, None]))
    ranked = outside.sort().values
    below, not_above = (torch.searchsorted(ranked, inside, side=side) for side in ("left", "right"))
    above = (below.double() + 0.5 * (not_above - below).double()).sum() / (len(inside) * len(outside))
    assert rows["ood", "mnist", None, "raw", "auroc"] == pytest.approx(100 * float(above), abs=1e-9)
    assert 0 <= rows["ood", "mnist", None, "raw", "aupr"] <= 100
    # AUPR-Out (ImageNet-O's measure): the digits are the positives, ranked most OOD-like first (lowest score); the
    # mean over digits of the precision at each digit's rank.
    is_out = torch.cat([torch.zeros(len(inside)), torch.ones(len(outside))])[torch.cat([inside, outside]).argsort()]
    precision = is_out.cumsum(0) / torch.arange(1, len(is_out) + 1)
    assert rows["ood", "mnist", None, "raw", "aupr_out"] == pytest.approx(100 * float(precision[is_out == 1].mean()),
                                                                          abs=1e-3)  # fmt: skip


def test_corruption_hurts_is_seeded_and_leaves_numpy_alone(loaded) -> None:
    models, test = loaded
    names = ("gaussian_noise", "impulse_noise", "contrast")  # impulse_noise draws from its own seeded RNG
    protocol = Protocol(corruption_images=150, corruption_names=names, corruption_severities=(1, 5))
    np.random.seed(123)
    state = np.random.get_state()
    rows = corruptions.corruption(Context(models, test, protocol, CPU, gen()))
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), state, strict=True))
    assert table(rows) == table(corruptions.corruption(Context(models, test, protocol, CPU, gen())))
    assert {r["n"] for r in rows} == {150} and len(rows) == 3 * 2 * 2
    top1 = table(rows)
    assert any(top1["corruption", c, 5, "raw", "top1"] < top1["corruption", c, 1, "raw", "top1"] for c in names), top1
    pixels = test.pixels(test.images[:8])[:, 0].numpy()
    noisy = corruptions.corrupt_images(pixels, "gaussian_noise", 5, range(8))
    assert noisy.shape == pixels.shape and noisy.dtype == np.uint8 and (noisy != pixels).mean() > 0.5
    assert np.array_equal(noisy, corruptions.corrupt_images(pixels, "gaussian_noise", 5, range(8)))


def test_cli_writes_every_suite_for_both_variants(run_dir, tmp_path, capsys, caplog) -> None:
    caplog.set_level(logging.INFO, logger="transmix.robustness")
    out = tmp_path / "robustness.csv"
    small = [
        "occlusion_images=50",
        "occlusion_fractions=[0,0.5]",
        "shuffle_images=50",
        "shuffle_grids=[1,4]",
        "adversarial_images=20",
        "adversarial_epsilons=[2/255]",
        "pgd_steps=2",
        "ood_images=100",
        "corruption_images=20",
        "corruption_names=[shot_noise,frost,motion_blur]",
        "corruption_severities=[3]",
    ]
    code = main(
        [
            "robustness",
            "--run",
            str(run_dir),
            "--out",
            str(out),
            "--device",
            "cpu",
            *[arg for kv in small for arg in ("--set", kv)],
        ]
    )
    assert code == 0, capsys.readouterr().err
    df = read(out)
    assert set(df.suite) == set(protocol.SUITES) - {"natural"} and set(df.variant) == {"raw", "ema"}
    assert (df.run_id == run_dir.name).all() and (df.source == "ours").all()
    assert df.groupby("suite").n.unique().map(list).to_dict() == {
        "adversarial": [20],
        "corruption": [20],
        "occlusion": [50],
        "ood": [200],
        "shuffle": [50],
    }
    assert len(df) == 2 * (2 + 2 + 2 + 3 + 3)  # ood: auroc, aupr, aupr_out
    # progress: every protocol point of the many-point suites is logged as measured, with what it measured
    points = [r.getMessage() for r in caplog.records if r.name == "transmix.robustness.context"]
    many = df[df.suite != "ood"].sort_values("variant", ascending=False, kind="stable")  # raw before ema
    by_point = many.groupby(["suite", "setting", "level"], sort=False)
    expected = []
    for (suite, setting, level), part in by_point:
        values = [f"{v} {x:.2f}" for v, x in zip(part.variant, part.value, strict=True)]
        lines = [[v] for v in values] if suite == "adversarial" else [values]  # each variant is attacked on its own
        expected += [f"robustness {suite} {setting} {level:g}: top1 {', '.join(line)} ({part.n.iloc[0]} images)"
                     for line in lines]  # fmt: skip
    assert sorted(points) == sorted(expected), points
    assert main(["robustness", "--run", str(run_dir), "--out", str(out), "--set", "epsilon=1"]) == 2
    assert "unknown robustness protocol key `epsilon`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["robustness", "--help"])
    assert "adversarial_epsilons = [0.0, 1/255, 2/255, 4/255, 8/255]" in capsys.readouterr().out
