"""The part segmenter M: learns drawn shapes (tiny parts included), losses, IoU, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from armani.models.segmenter import Segmenter, SegmenterConfig, mean_iou
from armani.parts import PART_ID

SIZE = 32


def drawn_batch(num: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Garment-like drawings: a body block, a sleeve, a collar and 2x2 px buttons.

    Each part has its own colour so the task is learnable from pixels in a few steps.
    """
    rng = np.random.default_rng(seed)
    colors = {"body": (0.2, 0.2, 0.8), "sleeve": (0.8, 0.2, 0.2), "collar": (0.2, 0.8, 0.2), "button": (0.9, 0.9, 0.1)}
    masks = np.zeros((num, SIZE, SIZE), dtype=np.int64)
    for k in range(num):
        top, left = rng.integers(2, 6), rng.integers(8, 12)
        masks[k, top : top + 22, left : left + 14] = PART_ID["body"]
        masks[k, top + 2 : top + 10, left - 6 : left] = PART_ID["sleeve"]
        masks[k, top : top + 3, left + 4 : left + 10] = PART_ID["collar"]
        for j in range(3):
            y = top + 5 + 5 * j
            masks[k, y : y + 2, left + 6 : left + 8] = PART_ID["button"]
    image = -np.ones((num, 3, SIZE, SIZE), dtype=np.float32)
    for name, rgb in colors.items():
        sel = masks == PART_ID[name]
        for c in range(3):
            image[:, c][sel] = 2 * rgb[c] - 1
    image += 0.05 * rng.standard_normal(image.shape).astype(np.float32)
    return torch.from_numpy(image), torch.from_numpy(masks)


def tiny() -> Segmenter:
    return Segmenter(SegmenterConfig(base_channels=16, channel_mults=(1, 2), groups=4))


def test_overfits_drawn_shapes_including_buttons():
    torch.manual_seed(0)
    model = tiny()
    image, mask = drawn_batch()
    before = mean_iou(model.predict(image), mask)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        out = model.loss(image, mask)
        first = first if first is not None else out
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = mean_iou(model.predict(image), mask)
    assert out.loss.item() < 0.3 * first.loss.item()
    assert out.ce.item() < first.ce.item() and out.dice.item() < first.dice.item()
    assert after["mean"] > 0.8 and after["mean"] > before["mean"] + 0.3, (before, after)
    assert after["button"] > 0.6, after  # 2x2 px parts are learnt


def test_outputs_and_probs():
    torch.manual_seed(1)
    model = tiny()
    image, _ = drawn_batch(2)
    logits = model(image)
    assert logits.shape == (2, 15, SIZE, SIZE)
    probs = model.probs(image)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, SIZE, SIZE))
    assert torch.equal(model.predict(image), logits.argmax(1))
    feats = model.features(image)
    assert [f.shape[1:] for f in feats] == [(16, SIZE, SIZE), (32, SIZE // 2, SIZE // 2)]
    image = image.clone().requires_grad_(True)
    model.probs(image)[:, 7].sum().backward()  # soft output carries gradients to the image
    assert image.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="divisible"):
        model(torch.zeros(1, 3, 31, 31))


def test_loss_weights_rare_parts():
    """With weighted CE, mislabelling the tiny buttons costs more than with plain CE."""
    torch.manual_seed(2)
    model = tiny()
    image, mask = drawn_batch(2)
    with torch.no_grad():
        plain = torch.nn.functional.cross_entropy(model(image), mask)
        out = model.loss(image, mask)
    assert torch.isfinite(out.loss) and 0 <= float(out.dice) <= 1
    assert abs(float(out.loss - out.ce - out.dice)) < 1e-5
    assert abs(float(out.ce) - float(plain)) > 1e-4  # the weights do something


def test_mean_iou_by_hand():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2, :2] = PART_ID["pocket"]  # 4 px
    pred = torch.zeros_like(target)
    pred[0, :2, :1] = PART_ID["pocket"]  # 2 px, both right
    pred[0, 3, 3] = PART_ID["logo"]  # a false positive
    iou = mean_iou(pred, target)
    assert iou["pocket"] == pytest.approx(2 / 4)
    assert iou["background"] == pytest.approx(11 / 14)
    assert iou["logo"] == 0.0 and "sleeve" not in iou  # absent from both: left out
    assert iou["mean"] == pytest.approx((0.5 + 11 / 14 + 0.0) / 3)


def test_save_load_roundtrip_and_errors(tmp_path):
    torch.manual_seed(3)
    model = tiny().eval()
    image, _ = drawn_batch(2)
    model.save_pretrained(tmp_path / "s")
    loaded = Segmenter.from_pretrained(tmp_path / "s").eval()
    assert loaded.config == model.config
    assert torch.equal(model(image), loaded(image))
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    (tmp_path / "s" / "config.json").write_text(json.dumps({**cfg, "base_channels": 8}))
    with pytest.raises(ValueError, match="do not match"):
        Segmenter.from_pretrained(tmp_path / "s")
    (tmp_path / "s" / "model.safetensors").write_bytes(b"not a tensor file")
    (tmp_path / "s" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="corrupt"):
        Segmenter.from_pretrained(tmp_path / "s")
    with pytest.raises(FileNotFoundError):
        Segmenter.from_pretrained(tmp_path / "missing")
