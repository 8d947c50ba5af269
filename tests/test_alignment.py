"""Word-part heatmaps, the pointing game and MaskCLIP retrieval.

Most checks use an *oracle* MaskCLIP whose part token of a patch is the (normalised) part
content of the patch and whose word token is the one-hot of the part the word names, so
the right answers are known in advance; the rest use a small random MaskCLIP.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from armani.alignment import HeatmapResult, plot_heatmaps, pointing_game, word_part_heatmaps
from armani.models.maskclip import MaskCLIP, MaskCLIPConfig
from armani.models.segmenter import Segmenter, SegmenterConfig
from armani.parts import NUM_PARTS, PART_ID, PART_WORDS
from armani.retrieval import MaskCLIPIndex, recall_at_k
from armani.text import GarmentTokenizer

SIZE, GRID = 32, 8


class OracleMaskCLIP(MaskCLIP):
    """Part token = normalised non-background part mass of the patch; word token = its part."""

    def __init__(self, tokenizer: GarmentTokenizer):
        super().__init__(MaskCLIPConfig.from_tokenizer(
            tokenizer, image_size=SIZE, grid=GRID, vision_width=8, vision_layers=1, vision_heads=1,
            text_width=8, text_layers=1, text_heads=1, embed_dim=NUM_PARTS))
        table = torch.full((tokenizer.vocab_size,), PART_ID["body"], dtype=torch.long)  # other words: body
        for word, part in PART_WORDS.items():
            ids = tokenizer(word).ids[0]
            table[ids[(ids != tokenizer.pad_id) & (ids != tokenizer.sot_id) & (ids != tokenizer.eot_id)]] = PART_ID[part]
        self.register_buffer("table", table, persistent=False)

    def encode_parts(self, image, part_probs):
        mass = F.avg_pool2d(part_probs, self.config.patch_size).flatten(2).transpose(1, 2).clone()  # (B, N, 15)
        mass[..., 0] = 0.0
        mass[..., PART_ID["body"]] *= 0.1  # a patch holding a part is about that part
        return F.normalize(mass + 1e-6, dim=-1), self.patch_valid(part_probs)

    def encode_text(self, text_ids):
        return F.one_hot(self.table[text_ids], NUM_PARTS).float(), self.word_valid(text_ids)


def garment(parts: dict[str, tuple[int, int, int, int]]) -> torch.Tensor:
    """(32, 32) int64 mask: a body with the given parts at (y0, y1, x0, x1)."""
    mask = np.zeros((SIZE, SIZE), dtype=np.int64)
    mask[4:28, 6:26] = PART_ID["body"]
    for part, (y0, y1, x0, x1) in parts.items():
        mask[y0:y1, x0:x1] = PART_ID[part]
    return torch.from_numpy(mask)


@pytest.fixture(scope="module")
def tokenizer():
    return GarmentTokenizer(context_length=20)


def test_heatmaps_one_per_word_and_point_at_parts(tokenizer):
    oracle = OracleMaskCLIP(tokenizer)
    mask = garment({"pocket": (20, 24, 8, 12), "collar": (4, 7, 12, 20), "button": (12, 14, 16, 18)})
    image = torch.zeros(3, SIZE, SIZE)
    text = "a long-sleeved top with buttoned cuffs, a pocket and a collar"
    result = word_part_heatmaps(oracle, tokenizer, image, text, part_probs=mask)
    assert isinstance(result, HeatmapResult)
    words = tokenizer(text).words[0]
    assert result.words == words and len(words) < int(tokenizer(text).content_mask.sum())  # pieces merged
    assert result.heatmaps.shape == (len(words), GRID, GRID) and len(result.pointed_part) == len(words)
    point = dict(zip(words, result.pointed_part))
    assert point["pocket"] == "pocket" and point["collar"] == "collar" and point["buttoned"] == "button"
    r, c = divmod(int(result.best_patch[words.index("pocket")]), GRID)
    assert mask[r * 4 : r * 4 + 4, c * 4 : c * 4 + 4].eq(PART_ID["pocket"]).any()
    assert result.best_score[words.index("pocket")] > 0.9
    assert torch.equal(result.part_mask, mask)
    assert not result.patch_valid[:, 0].any() and result.patch_valid[2:6, 2:6].all()
    # a multi-piece word's heatmap is the max over its pieces
    ids, wid = tokenizer(text).ids, tokenizer(text).word_ids[0]
    raw = oracle.word_part_similarity(image[None], F.one_hot(mask, NUM_PARTS).permute(2, 0, 1)[None].float(), ids)[0]
    k = words.index("buttoned")
    torch.testing.assert_close(result.heatmaps[k], raw[wid == k].amax(0))


def test_heatmaps_from_segmenter_and_pil(tokenizer):
    torch.manual_seed(0)
    model = MaskCLIP(MaskCLIPConfig.from_tokenizer(
        tokenizer, image_size=SIZE, grid=GRID, vision_width=16, vision_layers=1, vision_heads=2,
        text_width=16, text_layers=1, text_heads=2, embed_dim=8))
    seg = Segmenter(SegmenterConfig(base_channels=8, channel_mults=(1, 2), groups=4))
    pil = Image.fromarray((np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8))
    result = word_part_heatmaps(model, tokenizer, pil, "a hooded coat", segmenter=seg)
    assert result.words == ["a", "hooded", "coat"] and result.heatmaps.shape == (3, GRID, GRID)
    assert result.part_mask.shape == (SIZE, SIZE)
    with pytest.raises(ValueError, match="segmenter"):
        word_part_heatmaps(model, tokenizer, pil, "a coat")
    fig = plot_heatmaps(result, pil)
    assert len(fig.axes) == 3 + 1
    assert [ax.get_title() for ax in fig.axes][-1] == "part mask"
    assert fig.axes[1].get_title().startswith("hooded -> ")


def test_plot_heatmaps_panels(tokenizer):
    oracle = OracleMaskCLIP(tokenizer)
    mask = garment({"pocket": (20, 24, 8, 12)})
    image = torch.rand(3, SIZE, SIZE) * 2 - 1
    result = word_part_heatmaps(oracle, tokenizer, image, "a top with a pocket", part_probs=mask)
    fig = plot_heatmaps(result, image, max_cols=3)
    assert len(fig.axes) == len(result.words) + 1 == 6
    assert fig.axes[4].get_title().startswith("pocket -> pocket")
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend == ["background", "body", "pocket"]
    fig.canvas.draw()  # renders without error


def test_pointing_game_oracle_and_fixed_pointer(tokenizer):
    masks = torch.stack([
        garment({"pocket": (20, 24, 8, 12), "collar": (4, 7, 12, 20)}),
        garment({"sleeve": (8, 20, 20, 26), "button": (12, 14, 12, 14)}),
        garment({"belt": (16, 18, 6, 26)}),
    ])
    images = torch.zeros(3, 3, SIZE, SIZE)
    captions = ["a top with a pocket and a collar", "long sleeves and five buttons", "a belted dress with a hood"]
    oracle = OracleMaskCLIP(tokenizer)
    res = pointing_game(oracle, tokenizer, images, masks, captions, batch_size=2)
    # "hood" is not in the third mask, so it is not counted
    assert res["count"] == 5 and res["hits"] == 5 and res["accuracy"] == 1.0
    assert set(res["per_part"]) == {"pocket", "collar", "sleeve", "button", "belt"}
    assert 0 < res["chance"] < 1

    class FirstValidPatch(OracleMaskCLIP):
        """Every word points at the first valid patch (row 1, col 1: body only, or the collar)."""

        def encode_parts(self, image, part_probs):
            tokens, valid = super().encode_parts(image, part_probs)
            return torch.zeros_like(tokens), valid

    res = pointing_game(FirstValidPatch(tokenizer), tokenizer, images, masks, captions)
    # ties -> argmax picks the first valid patch, (1, 1), which touches no part here
    assert res["hits"] == 0 and res["count"] == 5


def test_retrieval_search_and_recall(tokenizer):
    oracle = OracleMaskCLIP(tokenizer)
    masks = torch.stack([
        garment({"pocket": (20, 24, 8, 12)}),
        garment({"belt": (16, 18, 6, 26)}),
        garment({"hood": (4, 8, 10, 22)}),
        garment({"zipper": (8, 26, 15, 17)}),
    ])
    images = torch.zeros(4, 3, SIZE, SIZE)
    rows = [{"image": images[i], "mask": masks[i]} for i in range(4)]
    index = MaskCLIPIndex.build(oracle, rows, batch_size=3, tokenizer=tokenizer)
    assert len(index) == 4 and index.part_tokens.dtype == torch.float16
    hits = index.search("a coat with a hood", k=2)
    assert hits[0][0] == 2 and hits[0][1] > hits[1][1]
    assert index.search(tokenizer("a belted dress").ids[0], k=1)[0][0] == 1
    captions = ["with a pocket", "with a belt", "with a hood", "with a zip"]
    rec = recall_at_k(oracle, images, masks, tokenizer(captions).ids, ks=(1, 2))
    assert rec == {"image_to_text@1": 1.0, "image_to_text@2": 1.0, "text_to_image@1": 1.0, "text_to_image@2": 1.0}
    # swapping two captions breaks exactly those pairs
    swapped = tokenizer([captions[1], captions[0], captions[2], captions[3]]).ids
    assert recall_at_k(oracle, images, masks, swapped, ks=(1,))["text_to_image@1"] == 0.5


def test_recall_matches_similarity_ranks(tokenizer):
    """On a random MaskCLIP, Recall@K agrees with ranks computed from model.similarity directly."""
    torch.manual_seed(1)
    model = MaskCLIP(MaskCLIPConfig.from_tokenizer(
        tokenizer, image_size=SIZE, grid=GRID, vision_width=16, vision_layers=1, vision_heads=2,
        text_width=16, text_layers=1, text_heads=2, embed_dim=8)).eval()
    n = 10
    images = torch.rand(n, 3, SIZE, SIZE) * 2 - 1
    probs = torch.softmax(torch.randn(n, NUM_PARTS, SIZE, SIZE), dim=1)
    ids = tokenizer([f"a top with {k} buttons and a pocket" for k in range(n)]).ids
    rec = recall_at_k(model, images, probs, ids, ks=(1, 3), batch_size=4)
    with torch.no_grad():
        out = model(images, probs, ids)
    for name, s in (("image_to_text", out.sim_m), ("text_to_image", out.sim_t.T)):
        rank = torch.tensor([(s[i] >= s[i, i]).sum() - 1 for i in range(n)])
        for k in (1, 3):
            assert rec[f"{name}@{k}"] == pytest.approx(float((rank < k).float().mean()))
    index = MaskCLIPIndex.build(model, list(zip(images, probs.argmax(1))), batch_size=4)
    scores = index.scores(ids[:2])
    with torch.no_grad():
        sim_t = model(images, F.one_hot(probs.argmax(1), NUM_PARTS).permute(0, 3, 1, 2).float(), ids).sim_t
    torch.testing.assert_close(scores, sim_t.T[:2], atol=2e-3, rtol=0)
