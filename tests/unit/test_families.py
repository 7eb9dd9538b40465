"""Every family of the paper: the hooked class-token attention is exact, on the right token grid, and trains.

Real micro models (ViT, DeiT distilled, CaiT, XCiT, Swin and PVT-v2 with a class-attention head) and the GPU study's
ViT-Tiny on the same tokens, no mocks.
"""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
from timm.models.cait import ClassAttn
from timm.optim import create_optimizer_v2

from transmix.config.run import from_dict
from transmix.method.attention import ClassAttention, ExplicitClassAttention, last_attention
from transmix.method.mixing import box_mask
from transmix.method.models import MICRO_MODELS, OWN_MODELS, ClassAttentionHead, create_model
from transmix.training.step import Stepper

# the token grid the class token attends to on 28x28 input, worked out by hand from each patch embedding
GRIDS = {
    "vit_micro_patch4_28": (7, 7),  # patch 4
    "deit_micro_distilled_patch4_28": (7, 7),
    "cait_micro_patch4_28": (7, 7),
    "xcit_micro_patch8_28": (4, 4),  # three 3x3 stride-2 padding-1 convs: 28 -> 14 -> 7 -> 4
    "swin_micro_patch2_28": (7, 7),  # patch 2 -> 14, one patch merging -> 7
    "deit_nano_distilled_patch4_28": (7, 7),  # the distillation student
    "pvt_v2_micro_28": (4, 4),  # 7x7 stride-4 padding-3 conv: 28 -> 7; 3x3 stride-2 padding-1 conv: 7 -> 4
    "vit_tiny_patch4_28": (7, 7),  # the GPU study's ViT: patch 4, as the micro ViT
}
HIERARCHICAL = ("swin_micro_patch2_28", "pvt_v2_micro_28")


def micro(name: str, img_size: int = 28, drop_path: float = 0.1) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_chans=1, img_size=img_size, drop_path=drop_path)


@torch.no_grad()
def sharpen(model: torch.nn.Module) -> torch.nn.Module:
    """Scale the attended layer's projections: at init the class token attends almost uniformly (all rows within
    about 1e-3 of 1/N), which would hide a misplaced or mis-scaled token from a 1e-5 comparison."""
    for layer in last_attention(model).attn.children():
        if isinstance(layer, torch.nn.Linear):
            layer.weight.mul_(8.0)
    return model


def true_grid(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """The grid of the tokens the last attention sees, read off the model's own layers on ``x``."""
    with torch.no_grad():
        if isinstance(model, ClassAttentionHead):
            features = model.backbone.forward_features(x)
            return tuple(features.shape[1:3] if model.channels_last else features.shape[2:4])
        if hasattr(model.patch_embed, "proj") and isinstance(model.patch_embed.proj, torch.nn.Conv2d):
            return tuple(model.patch_embed.proj(x).shape[-2:])  # ViT, DeiT, CaiT
        return tuple(model.patch_embed(x)[1])  # XCiT's ConvPatchEmbed returns (tokens, (Hp, Wp))


def test_every_family_has_a_micro_model() -> None:
    assert MICRO_MODELS[:2] == ("vit_micro_patch4_28", "deit_micro_distilled_patch4_28")
    assert set(OWN_MODELS) == set(GRIDS) and set(MICRO_MODELS) < set(OWN_MODELS)  # every registered model is tested
    for name in MICRO_MODELS:
        params = sum(p.numel() for p in micro(name).parameters())
        low = 20_000 if name == "deit_nano_distilled_patch4_28" else 50_000  # the student is smaller on purpose
        assert low <= params <= 300_000, (name, params)
    tiny = micro("vit_tiny_patch4_28")  # DeiT-Tiny: width 192, 12 blocks, 3 heads, MLP ratio 4
    assert (tiny.embed_dim, len(tiny.blocks), tiny.blocks[0].attn.num_heads) == (192, 12, 3)
    assert tiny.blocks[0].mlp.fc1.out_features == 4 * 192
    assert 5.3e6 <= sum(p.numel() for p in tiny.parameters()) <= 5.4e6


@pytest.mark.parametrize("name", OWN_MODELS)
@pytest.mark.parametrize("training", [False, True])
def test_hook_equals_explicit_attention(name: str, training: bool) -> None:
    model = sharpen(micro(name))
    reference = copy.deepcopy(model)
    model.train(training)
    reference.train(training)
    x = torch.randn(6, 1, 28, 28)

    torch.manual_seed(1)
    plain_logits = model(x)
    hooked = ClassAttention(model)
    hooked.enabled = True
    assert hooked.module.fused_attn, "the hooked model must keep fused attention on"
    torch.manual_seed(1)  # same stochastic depth draws in every pass
    logits = model(x)
    explicit = ExplicitClassAttention(reference)
    explicit.enabled = True
    torch.manual_seed(1)
    reference(x)

    grid = GRIDS[name]
    assert hooked.grid == explicit.grid == grid == true_grid(model, x)
    assert hooked.attn.shape == explicit.attn.shape == (6, grid[0] * grid[1])
    assert hooked.attn.dtype == torch.float32 and not hooked.attn.requires_grad
    assert torch.allclose(hooked.attn, explicit.attn, atol=1e-5, rtol=0)
    if not training:
        assert torch.equal(logits, plain_logits), "capturing must not change the logits"
    assert hooked.num_prefix_tokens == model.num_prefix_tokens
    assert (hooked.attn.sum(1) < 1).all() and (hooked.attn.sum(1) > 0).all()  # the class token took the rest
    assert (hooked.attn.amax(1) > 1.5 * hooked.attn.amin(1)).all(), "a peaked row: the comparison above has teeth"


@pytest.mark.parametrize("name", HIERARCHICAL)
def test_head_attends_to_the_last_stage_tokens_in_row_major_order(name: str) -> None:
    # Recompute the class token's row from the backbone's feature map with the plainest ops (NCHW for both), so
    # a wrong layout (NHWC read as NCHW, column-major flattening) of ClassAttentionHead would show up here.
    model = sharpen(micro(name)).eval()
    capture = ClassAttention(model)
    capture.enabled = True
    x = torch.randn(4, 1, 28, 28)
    model(x)
    capture.enabled = False  # the recomputation below calls the hooked q and k layers itself
    with torch.no_grad():
        features = model.backbone.forward_features(x)
        nchw = features.permute(0, 3, 1, 2) if model.channels_last else features
        gh, gw = nchw.shape[-2:]
        tokens = torch.stack([nchw[:, :, r, c] for r in range(gh) for c in range(gw)], dim=1)  # (B, N, C)
        block = model.blocks_token_only[0]
        u = block.norm1(torch.cat((model.cls_token.expand(4, -1, -1), tokens), dim=1))
        heads, dim = block.attn.num_heads, u.shape[-1]
        q = block.attn.q(u[:, :1]).reshape(4, 1, heads, dim // heads).transpose(1, 2)
        k = block.attn.k(u).reshape(4, -1, heads, dim // heads).transpose(1, 2)
        row = ((q @ k.transpose(-2, -1)) / math.sqrt(dim // heads)).softmax(-1).mean(1)[:, 0, 1:]
    assert capture.grid == (gh, gw) == GRIDS[name]
    assert torch.allclose(capture.attn, row, atol=1e-5, rtol=0)


def test_pvt_grid_for_sizes_not_divisible_by_the_stride() -> None:
    # Each overlapping patch embed is a conv: out = floor((n + 2 * padding - kernel) / stride) + 1.
    # 36: (36 + 6 - 7) // 4 + 1 = 9, then (9 + 2 - 3) // 2 + 1 = 5; 30: 8, then 4.
    for size, grid in ((36, (5, 5)), (30, (4, 4))):
        model = micro("pvt_v2_micro_28", img_size=size).eval()
        capture = ClassAttention(model)
        capture.enabled = True
        x = torch.randn(2, 1, size, size)
        model(x)
        assert capture.grid == grid == true_grid(model, x)
        assert capture.attn.shape == (2, grid[0] * grid[1])
    with pytest.raises(ValueError, match=r"img_size the model was built for"):
        model(torch.randn(2, 1, 36, 36))  # built for 30: 5x5 tokens instead of 4x4


STRIDES = {  # pixels between tokens, and whether padded convolutions centre token i on pixel i * stride
    "vit_micro_patch4_28": ((4, 4), False),
    "deit_micro_distilled_patch4_28": ((4, 4), False),
    "cait_micro_patch4_28": ((4, 4), False),
    "xcit_micro_patch8_28": ((8, 8), True),
    "swin_micro_patch2_28": ((4, 4), False),
    "pvt_v2_micro_28": ((8, 8), True),
    "deit_nano_distilled_patch4_28": ((4, 4), False),
    "vit_tiny_patch4_28": ((4, 4), False),
}


@pytest.mark.parametrize("name", OWN_MODELS)
def test_token_stride_of_each_family(name: str) -> None:
    capture = ClassAttention(micro(name))
    assert (capture.stride, capture.centered) == STRIDES[name]


def test_box_to_grid_on_the_hierarchical_grids() -> None:
    swin = ClassAttention(micro("swin_micro_patch2_28"))
    pvt = ClassAttention(micro("pvt_v2_micro_28"))
    assert swin.grid == (7, 7) and pvt.grid == (4, 4)

    # 7x7 on 28 pixels: 4 pixels per token. "release" counts a token when its top-left pixel (4r, 4c) is pasted.
    release = box_mask((0, 14, 0, 14), (28, 28), swin.grid, "release", swin.stride, swin.centered).view(7, 7)
    expected = torch.zeros(7, 7)
    expected[:4, :4] = 1  # pixels 0, 4, 8, 12 < 14
    assert torch.equal(release, expected)
    area = box_mask((0, 14, 0, 14), (28, 28), swin.grid, "area", swin.stride, swin.centered).view(7, 7)
    expected = torch.zeros(7, 7)
    expected[:3, :3] = 1
    expected[3, :3] = expected[:3, 3] = 0.5  # pixels 12, 13 of 12..15
    expected[3, 3] = 0.25
    assert torch.allclose(area, expected)

    # 4x4 on 28 pixels, stride 8 (28 is no multiple of it): PVT-v2's padded convolutions centre token r on pixel
    # 8 r. "release" reads pixels 0, 8, 16, 24 (a plain resize of the pixel mask would read 0, 7, 14, 21);
    # "area" averages the cells 0-4, 4-12, 12-20, 20-28.
    def mask(box: tuple[int, int, int, int], how: str) -> torch.Tensor:
        return box_mask(box, (28, 28), pvt.grid, how, pvt.stride, pvt.centered).view(4, 4)

    expected = torch.zeros(4, 4)
    expected[:2, :2] = 1  # pixel 16 is not pasted, 8 is
    assert torch.equal(mask((0, 15, 0, 15), "release"), expected)
    assert torch.equal(mask((16, 28, 0, 28), "release")[:, 0], torch.tensor([0.0, 0, 1, 1]))
    assert torch.equal(mask((0, 8, 0, 28), "release")[:, 0], torch.tensor([1.0, 0, 0, 0]))
    expected = torch.zeros(4, 4)
    expected[:2, :2] = 1
    expected[2, :2] = expected[:2, 2] = 3 / 8  # pixels 12, 13, 14 of 12..19
    expected[2, 2] = 9 / 64
    assert torch.allclose(mask((0, 15, 0, 15), "area"), expected)
    assert mask((0, 28, 0, 28), "area").eq(1).all()
    with pytest.raises(ValueError, match="do not tile"):
        box_mask((0, 8, 0, 8), (28, 28), (4, 4), "area", (4, 4), True)


def stepper(name: str, method: str) -> Stepper:
    cfg = from_dict({"model": name, "method": method, "switch_prob": 1.0, "batch_size": 8, "device": "cpu"})
    model = micro(name)
    opt = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return Stepper(cfg, model, opt, 10, torch.device("cpu"), (28, 28))


@pytest.mark.parametrize("name", OWN_MODELS)
def test_one_transmix_training_step(name: str) -> None:
    step = stepper(name, "transmix")
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(8, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (8,), generator=gen)
    before = [p.detach().clone() for p in step.model.parameters()]
    out = step(x, y, gen)
    assert out.mode == "cutmix" and torch.isfinite(out.loss)
    assert out.lam is not None and out.lam.shape == (8,)
    assert not torch.allclose(out.lam, torch.full_like(out.lam, out.lam_area)), "the attention must move lam"
    attn_params = list(step.capture.module.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(step.model.parameters(), before, strict=True))
    assert all(p.grad is not None for p in attn_params), "the attended layer must train"


@pytest.mark.parametrize("name", HIERARCHICAL)
def test_baseline_and_transmix_train_the_same_architecture(name: str) -> None:
    deit, transmix = stepper(name, "deit"), stepper(name, "transmix")
    assert isinstance(deit.model, ClassAttentionHead) and isinstance(transmix.model, ClassAttentionHead)
    assert [type(m) for m in deit.model.modules()] == [type(m) for m in transmix.model.modules()]
    a, b = deit.model.state_dict(), transmix.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(transmix.capture.module, ClassAttn) and deit.capture is None


def test_unsupported_models_are_refused_with_the_fix() -> None:
    plain_swin = timm.create_model("swin_micro_patch2_28")  # timm's Swin without the class-attention head
    with pytest.raises(ValueError, match="ClassAttentionHead"):
        ClassAttention(plain_swin)
    no_class_attention = timm.create_model("xcit_micro_patch8_28", cls_attn_layers=0)
    with pytest.raises(ValueError, match="XCA"):
        ClassAttention(no_class_attention)


ABLATION_READS = [  # (attn_block, attn_blocks, attn_heads) of the ablation grid
    (-2, 1, "mean"),  # an earlier block
    (-1, 2, "mean"),  # mean of the last two
    (-1, 1, "max"),  # max over heads
]


@pytest.mark.parametrize("name", [n for n in OWN_MODELS if n not in HIERARCHICAL])  # those have one block
@pytest.mark.parametrize("read", ABLATION_READS)
def test_ablation_reads_equal_explicit_attention(name: str, read: tuple[int, int, str]) -> None:
    block, count, heads = read
    model = micro(name).eval()
    with torch.no_grad():  # peaked rows in every block read, so a wrong block or head rule shows
        for target in ClassAttention(model, -1, 2).targets:
            for layer in target.attn.children():
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.mul_(8.0)
    x = torch.randn(4, 1, 28, 28)

    hooked = ClassAttention(model, block, count, heads)
    hooked.enabled = True
    model(x)
    reference = copy.deepcopy(model)
    explicit = ExplicitClassAttention(reference, block, count, heads)
    explicit.enabled = True
    reference(x)
    assert torch.allclose(hooked.attn, explicit.attn, atol=1e-5, rtol=0)

    # By hand from single-block reads of the explicit matrices: the blocks' rows averaged.
    singles = []
    for index in range(block - count + 1, block + 1):
        one = copy.deepcopy(model)
        capture = ExplicitClassAttention(one, index, 1, heads)
        capture.enabled = True
        one(x)
        singles.append(capture.attn)
    assert torch.allclose(hooked.attn, torch.stack(singles).mean(0), atol=1e-6)
    default = ClassAttention(model)
    default.enabled = True
    model(x)
    assert not torch.allclose(hooked.attn, default.attn, atol=1e-4), "the ablation must read something else"
    if heads == "max":
        assert (hooked.attn.sum(1) > default.attn.sum(1)).all()  # the max over heads is not normalised


def test_reading_more_blocks_than_the_model_has_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"has 1 class-attention blocks .* attn_block=-2"):
        ClassAttention(micro("swin_micro_patch2_28"), -2)
    with pytest.raises(ValueError, match="attn_heads='median'"):
        ClassAttention(micro("vit_micro_patch4_28"), heads="median")
