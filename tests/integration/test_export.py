"""A finished run exported for timm: loaded by timm alone, in a process that never imports this package, it gives
the run's own logits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from transmix.config.run import from_dict
from transmix.data import eval_split
from transmix.data.synthetic import make_class_folders
from transmix.evaluation.finished import load_final, variants
from transmix.tools.export import ExportError, export
from transmix.training.train import train

pytestmark = pytest.mark.slow
LOAD = """
import sys, torch, timm
assert "transmix" not in sys.modules
torch.set_num_threads(int(sys.argv[3]))  # the exporting process's count: another sums the logits in another order
model = timm.create_model(f"local-dir:{sys.argv[1]}", pretrained=True).eval()
io = torch.load(sys.argv[2], weights_only=True)
print(torch.equal(model(io["x"]), io["y"]), timm.data.resolve_data_config({}, model=model)["mean"])
"""


def test_an_exported_run_loads_in_timm_alone_with_the_same_logits(tmp_path) -> None:
    data = make_class_folders(tmp_path / "data", 3, (8, 4), 32)
    cfg = from_dict(dict(dataset="imagefolder", data_dir=str(data), model="deit_tiny_patch16_224", img_size=32,
                         epochs=1, batch_size=8, warmup_epochs=0, ema_decay=0.9, method="transmix", aa="",
                         mean=[0.5] * 3, std=[0.25] * 3, device="cpu"))  # fmt: skip
    run = tmp_path / "deit_tiny_patch16_224__transmix__s0"
    train(cfg, run, progress=False)
    out = export(run, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "deit_tiny_patch16_224" and config["num_classes"] == 3
    assert config["label_names"] == ["class0", "class1", "class2"] and config["pretrained_cfg"]["crop_pct"] == 0.875
    assert "transmix" in (out / "README.md").read_text() and run.name in (out / "README.md").read_text()

    saved, state = load_final(run, torch.device("cpu"))
    model = variants(saved, state, eval_split(saved), torch.device("cpu"))["ema"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.save({"x": x, "y": model(x)}, tmp_path / "io.pt")
    args = [str(out), str(tmp_path / "io.pt"), str(torch.get_num_threads())]
    loaded = subprocess.run([sys.executable, "-c", LOAD, *args], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and loaded.stdout.split()[0] == "True", loaded.stdout + loaded.stderr
    assert "0.5" in loaded.stdout  # the run's normalisation travels with the weights


def test_a_model_timm_cannot_build_alone_is_refused(finished_run, tmp_path) -> None:
    with pytest.raises(ExportError, match="vit_micro_patch4_28 is built by this package"):
        export(finished_run, tmp_path / "export")
    assert not (tmp_path / "export").exists()
