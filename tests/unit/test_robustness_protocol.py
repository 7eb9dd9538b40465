"""The robustness protocol and the pieces of the suites that need no trained run: strict keys, which suites
apply to a run, the library's corruption names, and the token cells occlusion blacks out on every family."""

from __future__ import annotations

import pytest

from transmix.config import robustness as protocol
from transmix.config.robustness import Protocol
from transmix.config.run import ConfigError
from transmix.method.models import create_model
from transmix.robustness import spatial


def test_protocol_is_strict() -> None:
    with pytest.raises(ConfigError, match="`occlusion_fraction`.*did you mean `occlusion_fractions`"):
        protocol.load(["occlusion_fraction=[0.5]"])
    with pytest.raises(ConfigError, match=r"corruption_severities holds \[6\]"):
        protocol.load(["corruption_severities=[1,6]"])
    with pytest.raises(ConfigError, match=r"corruption_names holds \['gausian_noise'\]"):
        Protocol(corruption_names=("gausian_noise",))
    with pytest.raises(ConfigError, match="shuffle_grids lists \\[2\\] more than once"):
        protocol.load(["shuffle_grids=[2,2]"])
    with pytest.raises(ConfigError, match="ood_images=6000"):
        protocol.load(["ood_images=6000"])
    parsed = protocol.load(["adversarial_epsilons=[0, 8/255]", "shuffle_grids=7", "pgd_random_start=false"])
    assert parsed.adversarial_epsilons == (0.0, 8 / 255) and parsed.shuffle_grids == (7,)
    assert parsed.pgd_random_start is False
    assert "occlusion_fractions" in Protocol.describe() and "8/255" in Protocol.describe()


def test_corruption_names_are_the_librarys() -> None:
    from imagecorruptions import get_corruption_names

    assert protocol.CORRUPTIONS == tuple(get_corruption_names("all"))
    assert protocol.COMMON_CORRUPTIONS == tuple(get_corruption_names("common"))


def test_patch_cells_follow_each_family() -> None:
    # ViT: 4-pixel patches. XCiT and PVT-v2 downsample 8 times with padded convolutions, so token i is centred
    # on pixel 8 i: cells 0-4, 4-12, 12-20, 20-28. Swin under a class-attention head: merged 4-pixel patches.
    cells = {
        "vit_micro_patch4_28": [c for c in range(7) for _ in range(4)],
        "xcit_micro_patch8_28": [0] * 4 + [1] * 8 + [2] * 8 + [3] * 8,
        "pvt_v2_micro_28": [0] * 4 + [1] * 8 + [2] * 8 + [3] * 8,
        "swin_micro_patch2_28": [c for c in range(7) for _ in range(4)],
    }
    for name, expected in cells.items():
        rows, cols = spatial.patch_cells(create_model(name, num_classes=10, in_chans=1, img_size=28), (28, 28))
        assert rows.tolist() == cols.tolist() == expected, name


def test_suites_apply_by_dataset_and_folders() -> None:
    with pytest.raises(ConfigError, match="set ood_dir"):
        protocol.applicable("imagefolder", Protocol(), ["ood"])
    assert protocol.applicable("imagefolder", Protocol()) == ["occlusion", "shuffle", "adversarial", "corruption"]
    assert "natural" in protocol.applicable("imagefolder", Protocol(natural_dir="/data/imagenet-a"))
    with pytest.raises(ConfigError, match="Fashion-MNIST has no natural adversarial set"):
        protocol.applicable("fashion_mnist", Protocol(), ["natural"])
    with pytest.raises(ConfigError, match="ood_dir is for imagefolder runs"):
        protocol.applicable("fashion_mnist", Protocol(ood_dir="/data/imagenet-o"), ["ood"])
    with pytest.raises(ConfigError, match="ood_dir is for imagefolder runs"):  # also when no suite is named
        protocol.applicable("fashion_mnist", Protocol(ood_dir="/data/imagenet-o"))
    assert protocol.applicable("fashion_mnist", Protocol()) == ["occlusion", "shuffle", "adversarial", "ood",
                                                                "corruption"]  # fmt: skip
    with pytest.raises(ConfigError, match=r"unknown robustness suite\(s\) \['occlusions'\]"):
        protocol.applicable("fashion_mnist", Protocol(), ["occlusions"])
