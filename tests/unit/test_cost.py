"""GPU-hour estimates rest on counted FLOPs; the count is checked against a hand count."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from transmix.cli import main
from transmix.tools.cost import forward_flops, measured_cost, read_measured, study_cost, train_images

REPO = Path(__file__).resolve().parents[2]


def test_vit_micro_flops_match_a_hand_count() -> None:
    # 28 px, patch 4: 49 patches + class token = 50 tokens of width 64; 4 blocks, 4 heads of 16, MLP 64 -> 128.
    n, d = 50, 64
    embed = 49 * 16 * d
    block = n * d * 3 * d + 2 * 4 * n * n * 16 + n * d * d + 2 * n * d * 2 * d  # qkv, q@k and attn@v, proj, MLP
    head = d * 10
    flops, params = forward_flops("vit_micro_patch4_28", 28, in_chans=1, num_classes=10)
    assert flops == 2 * (embed + 4 * block + head)  # multiply-adds count twice
    assert params == pytest.approx(0.139e6, rel=0.01)


def test_study_cost_is_three_forwards_per_image_and_epoch(tmp_path, capsys) -> None:
    study = {"models": ["vit_micro_patch4_28"], "methods": ["deit", "transmix"], "seeds": [0, 1, 2],
             "train": {"epochs": 4}}  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    (cost,) = study_cost(path, tflops=1e-6, images=1000)
    flops, _ = forward_flops("vit_micro_patch4_28", 28, in_chans=1, num_classes=10)  # built for Fashion-MNIST
    assert cost.runs == 6 and cost.gflops == pytest.approx(flops / 1e9)
    assert cost.gpu_hours == pytest.approx(3 * flops * 1000 * 4 / 1e6 / 3600) and cost.minutes == cost.gpu_hours * 60
    assert main(["cost", "--config", str(path), "--tflops", "0"]) == 2
    assert "--tflops 0.0 must be > 0" in capsys.readouterr().err


def test_a_cifar_study_counts_cifar_images(capsys) -> None:
    assert main(["cost", "--config", str(REPO / "workflow/config/cifar100.yaml"), "--tflops", "150"]) == 0
    out = capsys.readouterr().out
    assert "50000 images per epoch" in out and "deit_small_patch16_224" in out


def test_a_fashion_study_counts_its_training_images_on_one_channel(tmp_path, capsys) -> None:
    # The GPU study: all 60,000 images; the tiny ViT's 50 tokens of width 192, 12 blocks, MLP 768, by hand
    n, d = 50, 192
    block = n * d * 3 * d + 2 * 3 * n * n * 64 + n * d * d + 2 * n * d * 4 * d  # qkv, q@k and attn@v, proj, MLP
    flops, _ = forward_flops("vit_tiny_patch4_28", 28, in_chans=1, num_classes=10)
    assert flops == 2 * (49 * 16 * d + 12 * block + d * 10)
    assert main(["cost", "--config", str(REPO / "workflow/config/fashion_gpu.yaml"), "--tflops", "100"]) == 0
    out = capsys.readouterr().out
    assert "60000 images per epoch" in out and "vit_tiny_patch4_28" in out and "min / run" in out
    subset = tmp_path / "subset.yaml"
    subset.write_text(yaml.safe_dump({"models": ["vit_micro_patch4_28"], "methods": ["deit"], "seeds": [0],
                                      "train": {"train_subset": 500}}))  # fmt: skip
    assert train_images(subset) == 500


H200 = REPO / "results/gpu/nvidia-h200"


def _study(tmp_path: Path, model: str, methods: list[str], epochs: int = 10) -> Path:
    path = tmp_path / "study.yaml"
    train = {"dataset": "imagefolder", "img_size": 224, "epochs": epochs, "cooldown_epochs": 0}
    path.write_text(yaml.safe_dump({"models": [model], "methods": methods, "seeds": [0], "train": train}))
    return path


def test_the_committed_h200_check_prices_a_study_fed_and_loader_bound(tmp_path, capsys) -> None:
    measured = read_measured(H200)
    assert measured.device == "NVIDIA H200" and measured.batch_size == 256 and list(measured.loader) == ["pil"]
    assert measured.step == {"deit": pytest.approx(8546.676, abs=1e-3), "transmix": pytest.approx(8248.906, abs=1e-3)}
    assert measured.loader["pil"][0] == 15 and measured.loader["pil"][1] == pytest.approx(2224.696, abs=1e-3)
    study = _study(tmp_path, "deit_small_patch16_224", ["deit"])
    (cost,) = measured_cost(study, measured, images=1000)
    assert cost.runs == 1 and cost.step_images_per_second == pytest.approx(measured.step["deit"])
    assert cost.fed_hours == pytest.approx(1000 * 10 / measured.step["deit"] / 3600)
    step, loader = measured.step["deit"], measured.loader["pil"][1]
    assert cost.loader_hours["pil"] / cost.fed_hours == pytest.approx(step / loader), "bound by the loader's rate"
    assert main(["cost", "--config", str(study), "--measured", str(H200), "--images", "1000"]) == 0
    out = capsys.readouterr().out
    assert "loader (pil): 2225 images/s with 15 workers" in out and "deit 8547, transmix 8249" in out
    assert "h pil-bound" in out and f"{cost.loader_hours['pil']:14.2f}" in out.splitlines()[-1]


def test_each_loader_path_of_a_folder_bounds_the_study_and_a_transmix_run_goes_at_its_own_rate(tmp_path) -> None:
    folder = tmp_path / "gpu"
    folder.mkdir()
    shutil.copy(H200 / "bench.csv", folder / "bench.csv")
    loader = [("pil", 8, 1000.0), ("pil", 16, 1500.0), ("pil", 32, 3000.0), ("device", 4, 20000.0)]
    (folder / "loader.csv").write_text("workers,images_per_second,low,high,path\n" + "".join(
        f"{w},{s},{s},{s},{p}\n" for p, w, s in loader))  # fmt: skip
    measured = read_measured(folder)
    assert measured.loader == {"pil": (16, 1500.0), "device": (4, 20000.0)}, "32 workers is more than a GPU has"
    (folder / "loader.csv").write_text((folder / "loader.csv").read_text().replace(",path\n", ",loader\n", 1))
    assert read_measured(folder).loader == measured.loader, "the loader benchmark's own column"
    (cost,) = measured_cost(_study(tmp_path, "deit_small_patch16_224", ["deit", "transmix"]), measured, images=1000)
    deit, transmix = measured.step["deit"], measured.step["transmix"]
    assert cost.runs == 2 and cost.fed_hours == pytest.approx(1000 * 10 * (1 / deit + 1 / transmix) / 3600)
    assert cost.loader_hours["device"] == pytest.approx(cost.fed_hours), "a loader faster than the step is no bound"
    assert cost.loader_hours["pil"] == pytest.approx(2 * 1000 * 10 / 1500 / 3600)
    (half,) = measured_cost(_study(tmp_path, "deit_tiny_patch16_224", ["deit"]), measured, images=1000)
    tiny, _ = forward_flops("deit_tiny_patch16_224", 224)
    small, _ = forward_flops("deit_small_patch16_224", 224)
    assert half.step_images_per_second == pytest.approx(deit * small / tiny), "another model at the same TFLOP/s"


def test_a_folder_without_the_measurements_is_one_line_saying_what_is_missing(tmp_path, capsys) -> None:
    study = str(REPO / "workflow/config/cifar100.yaml")
    assert main(["cost", "--config", study, "--measured", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("transmix: error: --measured ") and "no such folder" in err and err.count("\n") == 1
    shutil.copy(H200 / "bench.csv", tmp_path / "bench.csv")
    assert main(["cost", "--config", study, "--measured", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "loader.csv (the loader's speed) is missing" in err and err.count("\n") == 1
    (tmp_path / "bench.csv").unlink()
    shutil.copy(H200 / "loader.csv", tmp_path / "loader.csv")
    assert main(["cost", "--config", study, "--measured", str(tmp_path)]) == 1
    assert "bench.csv (the step's speed) is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one rate or the other
        main(["cost", "--config", study, "--measured", str(H200), "--tflops", "100"])


def test_timed_stretches_cover_whole_turns_of_the_workers() -> None:
    # A DataLoader hands batches to its workers in turn, so they arrive in bursts of `workers`: a timed stretch that
    # ends inside a burst counts batches that were already waiting.
    from transmix.tools.loader_bench import batches_needed, untimed_batches, whole_turns

    assert [whole_turns(10, w) for w in (0, 1, 4, 15)] == [10, 10, 12, 15]
    assert [untimed_batches(w) for w in (0, 1, 15)] == [1, 4, 60]
    assert batches_needed([4, 15], 20, 3) == max(16 + 3 * 20, 60 + 3 * 30)
