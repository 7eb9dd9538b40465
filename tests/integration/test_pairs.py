"""Fig. 1's pairs come from a real trained run and carry the numbers its training would have used."""

from __future__ import annotations

import pytest
import torch

from transmix.config.run import from_dict
from transmix.evaluation.pairs import run_pairs
from transmix.method.mixing import attention_lam, box_mask
from transmix.training.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(fashion_root, tmp_path_factory):
    cfg = from_dict(dict(data_dir=str(fashion_root), model="pvt_v2_micro_28", train_subset=256, val_subset=128,
                         epochs=1, batch_size=32, warmup_epochs=0, method="transmix", device="cpu"))  # fmt: skip
    out = tmp_path_factory.mktemp("pairs") / "run"
    train(cfg, out, progress=False)
    return out


def test_pairs_carry_the_training_rule(run_dir) -> None:
    pairs = run_pairs(run_dir, 6, seed=3, variant="raw")
    assert len(pairs) == 6
    for pair in pairs:
        yl, yh, xl, xh = pair.box
        assert pair.lam_area == pytest.approx(1 - (yh - yl) * (xh - xl) / 28**2)
        assert pair.attention.shape == (4, 4) and pair.attention.sum() == pytest.approx(1.0, abs=1e-5)
        # PVT-v2: stride 8 with centred tokens, as its training mapped the box
        mask = box_mask(pair.box, (28, 28), (4, 4), "release", (8, 8), True)
        assert pair.lam_attn == pytest.approx(float(attention_lam(pair.attention.view(1, -1), mask)[0]), abs=1e-6)
        assert torch.equal(pair.pasted, mask.view(4, 4))  # the grid box notebook 04 draws is the one the label read
        assert pair.lam_attn == pytest.approx(1 - float((pair.attention * pair.pasted).sum()), abs=1e-5)
        pasted = pair.mixed[yl:yh, xl:xh]
        assert pair.mixed.shape == (28, 28) and 0 <= float(pasted.min()) <= float(pasted.max()) <= 1
    again = run_pairs(run_dir, 6, seed=3, variant="raw")
    assert [p.box for p in again] == [p.box for p in pairs]
    assert torch.equal(again[0].attention, pairs[0].attention)
    assert {p.box for p in run_pairs(run_dir, 6, seed=4, variant="raw")} != {p.box for p in pairs}
    with pytest.raises(ValueError, match="variant='swa'"):
        run_pairs(run_dir, 1, variant="swa")
