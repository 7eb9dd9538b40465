"""The paths a GPU takes, each run on the CPU (always, so CI keeps them alive) and on CUDA (marked gpu; skipped
without a device): a resumed run equals an uninterrupted one with every RNG restored, bf16 attention weights,
torch.compile with the attention capture, and the loss reduction through a real process group.

On a GPU machine: ``python -m pytest -m gpu -n 0`` (the prepared check, ``python -m transmix.tools.gpu_check``,
runs it).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.distributed as dist
from torch.nn.attention import SDPBackend, sdpa_kernel

from transmix.config.run import from_dict
from transmix.data.synthetic import make_class_folders
from transmix.method.attention import ClassAttention, last_attention
from transmix.method.models import create_model
from transmix.training.checkpoint import CHECKPOINT, FINAL
from transmix.training.runtime import compile_model, reduce
from transmix.training.train import train

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=[pytest.mark.gpu, CUDA])]


def sharpened(name: str, device: str) -> torch.nn.Module:
    """A micro model whose last attention is peaked (the projections scaled up), so that small errors show."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1, img_size=28).to(device).eval()
    with torch.no_grad():
        for layer in last_attention(model).attn.children():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(8.0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_resumed_run_equals_uninterrupted_on_device(device, tmp_path) -> None:
    # Stochastic depth draws from the device's RNG (CUDA's on a GPU): a resume that did not restore it would differ.
    # Deterministic kernels (and the plain attention kernel, whose backward is deterministic on CUDA), so that two
    # runs can be compared bit for bit at all; CUBLAS_WORKSPACE_CONFIG is set in conftest.py for cuBLAS.
    tree = make_class_folders(tmp_path / "data", classes=3, per_class=(16, 4), size=32)
    values = dict(img_size=32, epochs=2, batch_size=8, warmup_epochs=0, drop_path=0.5, switch_prob=1.0, num_workers=1)
    cfg = from_dict(dict(values, dataset="imagefolder", data_dir=str(tree), method="transmix", device=device))
    torch.use_deterministic_algorithms(True)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            train(cfg, tmp_path / "whole", progress=False)
            assert train(cfg, tmp_path / "split", stop_after=1, progress=False).name == CHECKPOINT
            train(cfg, tmp_path / "split", progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    whole, split = (torch.load(tmp_path / run / FINAL, weights_only=True) for run in ("whole", "split"))
    for key in ("model", "ema"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, split[key][name]), f"{key}.{name} differs after resume"


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_attention_weight_is_close_to_fp32(device) -> None:
    # The whole forward runs in bf16 under autocast, so single samples move by up to about 3e-3 (measured on every
    # micro family); over a batch the mean absolute difference stays below 1e-3.
    model = sharpened("vit_micro_patch4_28", device)
    capture = ClassAttention(model)
    capture.enabled = True
    x = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    box = (4, 20, 8, 24)
    with torch.no_grad():
        model(x)
        fp32 = capture.lam(box, (28, 28), "release")
        with torch.autocast(device, torch.bfloat16):
            model(x)
        bf16 = capture.lam(box, (28, 28), "release")
    assert capture.attn.amax(1).mean() > 3 / 49, "a peaked attention (uniform would be 1/49 per token)"
    diff = (fp32 - bf16).abs()
    assert diff.mean() < 1e-3 and diff.max() < 5e-3, (float(diff.mean()), float(diff.max()))


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_model_gives_the_eager_logits_and_attention(device) -> None:
    # torch.compile traces the capture's hooks into the graph (one graph with the capture on, one with it off).
    model = sharpened("vit_micro_patch4_28", device)
    eager_model = copy.deepcopy(model)
    capture, eager_capture = ClassAttention(model), ClassAttention(eager_model)
    capture.enabled = eager_capture.enabled = True
    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    compiled = torch.compile(model)
    with torch.no_grad():
        eager = eager_model(x)
        logits = compiled(x)
        assert torch.allclose(logits, eager, atol=1e-4, rtol=0), float((logits - eager).abs().max())
        assert torch.allclose(capture.attn, eager_capture.attn, atol=1e-6, rtol=0)
        capture.enabled = False
        capture.attn = None
        compiled(x)
        assert capture.attn is None, "the compiled model honours the capture switch"


@pytest.mark.slow
def test_a_compiled_model_runs_its_own_hooks_beside_an_unhooked_twin() -> None:
    # Dynamo reuses a graph across models of one class unless it guards on hooks: the baseline's graph, compiled
    # first, would run for the TransMix model and its capture would never fire (the benchmark compiles both).
    # That reuse is dynamo's, decided before a backend runs: aot_eager traces forward and backward as inductor
    # does, without generating and compiling C++ (four fifths of the time). Without the hook guards: capture None.
    base = sharpened("vit_micro_patch4_28", "cpu").train()
    plain, hooked = copy.deepcopy(base), copy.deepcopy(base)
    capture = ClassAttention(hooked)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    compile_model(plain, backend="aot_eager")(x).sum().backward()
    capture.enabled = True
    compile_model(hooked, backend="aot_eager")(x).sum().backward()
    assert capture.attn is not None and capture.attn.shape == (8, 49)


@pytest.mark.parametrize("device", DEVICES)
def test_reduction_through_a_process_group(device, monkeypatch) -> None:
    # One process of a real group (gloo on CPU, NCCL on CUDA): the collective sums this process's part alone, so
    # world=2 must give half the loss, and the stop flag of any process stops all.
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=0, world_size=1)
    try:
        loss, stop = reduce(torch.tensor(3.0, dtype=torch.float64, device=device), True, world=2)
    finally:
        dist.destroy_process_group()
    assert (loss, stop) == (1.5, True)


@pytest.mark.parametrize("device", DEVICES)
def test_transmix_step_waits_for_the_device_no_more_often_than_deit(device) -> None:
    # The label needs the attention of this very forward pass, but nothing of it on the host: the box mask is made
    # where the attention is. A mask copied from pageable host memory made the host wait for the forward pass
    # before it could queue the backward one. CUDA's sync debug mode warns at each wait; on the CPU the same step
    # runs (there is nothing to wait for) and its label must still be a weight.
    import warnings

    from transmix.training.step import Stepper

    waits, lams = {}, {}
    for method in ("deit", "transmix"):
        cfg = from_dict({"model": "vit_micro_patch4_28", "method": method, "switch_prob": 1.0, "device": device})
        torch.manual_seed(0)
        model = create_model(cfg.model, num_classes=10, in_chans=1, img_size=28).to(device)
        step = Stepper(cfg, model, torch.optim.AdamW(model.parameters()), 10, torch.device(device), (28, 28))
        x = torch.randn(16, 1, 28, 28).to(device)
        y = torch.arange(16).remainder(10).to(device)
        step(x, y, torch.Generator().manual_seed(0))  # the first step allocates (the optimizer's state)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                out = step(x, y, torch.Generator().manual_seed(1))
            finally:
                if device == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
        waits[method] = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
        lams[method] = out.lam
        assert out.mode == "cutmix"
    assert len(waits["transmix"]) <= len(waits["deit"]), waits
    assert lams["transmix"] is not None and bool(((lams["transmix"] >= 0) & (lams["transmix"] <= 1)).all())


@pytest.mark.parametrize("device", DEVICES)
def test_the_epoch_meter_adds_a_step_without_waiting_and_in_float64(device) -> None:
    # The area weight of a CutMix batch is a Python float: made into a tensor on the host and copied, it made the
    # host wait for the device at every step (of every method), and it was rounded to float32 on the way.
    import warnings

    from transmix.training.checkpoint import Progress
    from transmix.training.meter import EpochMeter, epoch_sums
    from transmix.training.step import StepOutput

    meter = EpochMeter(Progress(sums=epoch_sums()), torch.device(device))
    lam = torch.full((4,), 0.25, device=device)
    step = StepOutput(torch.tensor(1.5, device=device), "cutmix", 0.1, lam, lam)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            meter.add(step)
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    assert not [w for w in caught if "synchroniz" in str(w.message)]
    assert meter.acc.tolist()[:3] == [1.5, 0.1, 0.25]  # 0.1 as float64, not float32's 0.10000000149
