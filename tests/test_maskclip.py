"""MaskCLIP: the loss against a slow reference, masking of invalid tokens, gradients, learning,
pretrained text loading and checkpoints."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from armani.models.maskclip import MaskCLIP, MaskCLIPConfig
from armani.parts import NUM_PARTS, PART_ID
from armani.text import GarmentTokenizer

CAPTIONS = [
    "a red top with a sleeve",
    "a blue top with a collar",
    "a green top with a hood",
    "a black top with a pocket",
    "a white top with a button",
    "a grey top with a zipper",
    "a pink top with a belt",
    "a brown top with a logo",
]
PARTS = ["sleeve", "collar", "hood", "pocket", "button", "zipper", "belt", "logo"]
SIZE, GRID = 32, 8  # 4 px patches


@pytest.fixture(scope="module")
def tokenizer():
    return GarmentTokenizer.from_corpus(CAPTIONS + ["an empty", ", and"], context_length=16)


def tiny_config(tokenizer, **kw) -> MaskCLIPConfig:
    sizes = dict(image_size=SIZE, grid=GRID, vision_width=32, vision_layers=2, vision_heads=2,
                 text_width=32, text_layers=2, text_heads=2, embed_dim=16)
    return MaskCLIPConfig.from_tokenizer(tokenizer, **{**sizes, **kw})


def one_hot(mask: torch.Tensor) -> torch.Tensor:
    return F.one_hot(mask, NUM_PARTS).permute(0, 3, 1, 2).float()


def reference_loss(part_tok, part_valid, word_tok, word_valid, scale):
    """Eq. 3-8 with python loops and explicit masks."""
    B = part_tok.shape[0]
    sim_m = torch.zeros(B, B, dtype=torch.float64)
    sim_t = torch.zeros(B, B, dtype=torch.float64)
    for p in range(B):
        for q in range(B):
            parts = [i for i in range(part_tok.shape[1]) if part_valid[p, i]]
            words = [j for j in range(word_tok.shape[1]) if word_valid[q, j]]
            if not parts or not words:
                continue
            dot = lambda i, j: float(part_tok[p, i].double() @ word_tok[q, j].double())  # noqa: E731
            sim_m[p, q] = sum(max(dot(i, j) for j in words) for i in parts) / len(parts)
            sim_t[p, q] = sum(max(dot(i, j) for i in parts) for j in words) / len(words)
    loss_m = loss_t = 0.0
    for k in range(B):
        loss_m -= float(torch.log_softmax(scale * sim_m[k, :], 0)[k])  # mask k against all texts
        loss_t -= float(torch.log_softmax(scale * sim_t[:, k], 0)[k])  # text k against all masks
    return sim_m, sim_t, 0.5 * (loss_m + loss_t) / B


def random_batch(tokenizer, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(4, 3, SIZE, SIZE, generator=g) * 2 - 1
    probs = torch.softmax(3 * torch.randn(4, NUM_PARTS, SIZE, SIZE, generator=g), dim=1)
    probs[:, :, :, :8] = 0.0  # two columns of background-only patches
    probs[:, 0, :, :8] = 1.0
    probs[2, :, :16] = 0.0  # sample 2: the whole top half is background
    probs[2, 0, :16] = 1.0
    texts = ["a red top with a sleeve", "a hood", "a black top with a pocket", "a logo"]  # varied padding
    return image, probs, tokenizer(texts).ids


def test_loss_matches_slow_reference(tokenizer):
    torch.manual_seed(0)
    model = MaskCLIP(tiny_config(tokenizer))
    image, probs, ids = random_batch(tokenizer)
    out = model(image, probs, ids)
    part_tok, part_valid = model.encode_parts(image, probs)
    word_tok, word_valid = model.encode_text(ids)
    assert (~part_valid).sum() >= 4 * 2 * GRID and part_valid.any(dim=1).all()
    assert (ids == 0).any() and not word_valid[:, 0].any()  # padding present, SOT excluded
    sim_m, sim_t, loss = reference_loss(part_tok.detach(), part_valid, word_tok.detach(), word_valid, float(out.logit_scale.detach()))
    torch.testing.assert_close(out.sim_m.double(), sim_m, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.sim_t.double(), sim_t, atol=1e-5, rtol=0)
    assert abs(float(out.loss.detach()) - loss) < 1e-5
    assert abs(float(out.loss.detach() - 0.5 * (out.loss_m + out.loss_t).detach())) < 1e-6
    # the directions differ: swapping them must give a different number on random data
    with torch.no_grad():
        swapped = 0.5 * (F.cross_entropy(out.logit_scale * out.sim_m.T, torch.arange(4))
                         + F.cross_entropy(out.logit_scale * out.sim_t, torch.arange(4)))
    assert abs(float(swapped) - loss) > 1e-4


@torch.no_grad()
def test_invalid_tokens_are_ignored(tokenizer):
    torch.manual_seed(1)
    model = MaskCLIP(tiny_config(tokenizer)).eval()
    image, probs, ids = random_batch(tokenizer)
    base = model(image, probs, ids)
    # 1) at the similarity level: garbage in invalid tokens changes nothing
    part_tok, part_valid = model.encode_parts(image, probs)
    word_tok, word_valid = model.encode_text(ids)
    noisy_parts = torch.where(part_valid[..., None], part_tok, torch.randn_like(part_tok))
    noisy_words = torch.where(word_valid[..., None], word_tok, torch.randn_like(word_tok))
    sim = model.similarity(noisy_parts, part_valid, noisy_words, word_valid)
    torch.testing.assert_close(sim[0], base.sim_m, atol=1e-6, rtol=0)
    torch.testing.assert_close(sim[1], base.sim_t, atol=1e-6, rtol=0)
    # 2) end to end: new pixels in background-only patches, a new PAD embedding
    image2 = image.clone()
    image2[:, :, :, :8] = torch.rand_like(image2[:, :, :, :8]) * 2 - 1
    with torch.no_grad():
        model.text_encoder.token_embedding.weight[tokenizer.pad_id].normal_()
    after = model(image2, probs, ids)
    assert abs(float(after.loss - base.loss)) < 1e-6
    # and a control: changing pixels of a part patch does change it
    image3 = image.clone()
    image3[:, :, :, 16:] = 0.0
    assert abs(float(model(image3, probs, ids).loss - base.loss)) > 1e-4


def test_no_nan_without_words_or_parts(tokenizer):
    torch.manual_seed(2)
    model = MaskCLIP(tiny_config(tokenizer))
    image, probs, _ = random_batch(tokenizer)
    ids = tokenizer(["a red top", "", "a hood", "a logo"]).ids  # sample 1: SOT EOT only
    probs = probs.clone()
    probs[3] = 0.0
    probs[3, 0] = 1.0  # sample 3: background only
    probs.requires_grad_(True)
    out = model(image, probs, ids)
    assert torch.isfinite(out.loss) and torch.isfinite(out.sim_m).all() and torch.isfinite(out.sim_t).all()
    assert out.sim_m[:, 1].abs().max().item() == 0.0 and out.sim_t[3].abs().max().item() == 0.0
    out.loss.backward()
    assert torch.isfinite(probs.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    tokens, index = model.best_words(image, probs, ids)
    assert (index[1] == -1).all() and (index[3] == -1).all() and tokens[3].abs().sum() == 0


def test_gradients_reach_part_probs_and_temperature(tokenizer):
    torch.manual_seed(3)
    model = MaskCLIP(tiny_config(tokenizer))
    image, probs, ids = random_batch(tokenizer)
    probs = probs.clone().requires_grad_(True)
    image = image.clone().requires_grad_(True)
    d = model.pair_similarity(image, probs, ids)
    assert d.shape == (4,) and (d.abs() <= 1 + 1e-6).all()
    out = model(image, probs, ids)
    torch.testing.assert_close(d, 0.5 * (out.sim_m.diagonal() + out.sim_t.diagonal()))
    (d.sum() + out.loss).backward()
    assert probs.grad.abs().sum() > 0 and image.grad.abs().sum() > 0
    assert model.logit_scale.requires_grad and model.logit_scale.grad.abs() > 0
    assert abs(float(out.logit_scale) - 1 / 0.07) < 1e-3
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.logit_scale_value()) == 100.0  # clamped like CLIP


def test_best_words_and_heatmap_grid(tokenizer):
    torch.manual_seed(4)
    model = MaskCLIP(tiny_config(tokenizer))
    image, probs, ids = random_batch(tokenizer)
    tokens, index = model.best_words(image, probs, ids)
    word_tok, word_valid = model.encode_text(ids)
    _, part_valid = model.encode_parts(image, probs)
    assert tokens.shape == (4, GRID * GRID, 16) and index.dtype == torch.int64
    assert ((index >= 0) == part_valid).all()
    b, n = torch.nonzero(index >= 0)[0].tolist()
    assert word_valid[b, index[b, n]]
    torch.testing.assert_close(tokens[b, n], word_tok[b, index[b, n]])
    heat = model.word_part_similarity(image, probs, ids)
    assert heat.shape == (4, ids.shape[1], GRID, GRID)
    # Eq. 9 on the heatmap: the chosen word has the largest similarity at that cell
    r, c = divmod(n, GRID)
    valid_words = heat[b, :, r, c].masked_fill(~word_valid[b], -2)
    assert int(valid_words.argmax()) == int(index[b, n])


def three_part_garments(num: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """num masks with a body and 3 distinct parts in 3 of 4 slots; captions name the 3 parts.

    Three parts per image (not one): with one part, an untrained model already "points" at
    it (the part patches are the outliers that win every max), and a trained one can match
    captions from global context alone, so pointing would not measure word-part alignment.
    """
    rng = np.random.default_rng(seed)
    masks = np.zeros((num, SIZE, SIZE), dtype=np.int64)
    slots = [(4, 8), (4, 20), (18, 8), (18, 20)]
    captions = []
    for k in range(num):
        masks[k, 4:28, 8:28] = PART_ID["body"]
        parts = [PARTS[i] for i in rng.choice(len(PARTS), 3, replace=False)]
        for part, slot in zip(parts, rng.permutation(4)[:3]):
            y, x = slots[slot][0] + rng.integers(0, 4), slots[slot][1] + rng.integers(0, 3)
            masks[k, y : y + 5, x : x + 5] = PART_ID[part]
        captions.append(f"a top with a {parts[0]}, a {parts[1]} and a {parts[2]}")
    return torch.from_numpy(masks), captions


def test_training_reduces_loss_and_learns_to_point(tokenizer):
    from armani.alignment import pointing_game

    torch.manual_seed(1)
    model = MaskCLIP(tiny_config(tokenizer, vision_layers=1))
    masks, captions = three_part_garments(32, seed=1)
    image = torch.zeros(len(masks), 3, SIZE, SIZE)  # no colour cue: only the mask tells parts apart
    probs, ids = one_hot(masks), tokenizer(captions).ids
    before = pointing_game(model, tokenizer, image, masks, captions)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        out = model(image, probs, ids)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss))
    assert losses[-1] < 0.2 * losses[0], losses[::25]
    after = pointing_game(model, tokenizer, image, masks, captions)
    assert after["count"] == 3 * len(masks) and set(after["per_part"]) <= set(PARTS)
    assert sum(v["count"] for v in after["per_part"].values()) == after["count"]
    assert 0.1 < after["chance"] < 0.2  # a 5x5 part touches ~4 of ~30 body patches
    # seen: 0.30 before, 0.82 after (chance 0.13)
    assert after["accuracy"] >= 0.6 and after["accuracy"] >= before["accuracy"] + 0.2, (before, after)


def test_save_load_roundtrip_and_errors(tokenizer, tmp_path):
    torch.manual_seed(6)
    model = MaskCLIP(tiny_config(tokenizer)).eval()
    image, probs, ids = random_batch(tokenizer)
    model.save_pretrained(tmp_path / "m")
    loaded = MaskCLIP.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    with torch.no_grad():
        a, b = model(image, probs, ids), loaded(image, probs, ids)
    assert torch.equal(a.sim_m, b.sim_m) and torch.equal(a.loss, b.loss)

    with pytest.raises(FileNotFoundError, match="config.json"):
        MaskCLIP.from_pretrained(tmp_path / "nothing")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MaskCLIP.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        MaskCLIP.from_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "embed_dim": 8}))
    with pytest.raises(ValueError, match="do not match"):
        MaskCLIP.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "not_a_field": 1}))
    with pytest.raises(ValueError, match="not a valid MaskCLIPConfig"):
        MaskCLIP.from_pretrained(tmp_path / "m")


def test_config_and_input_errors(tokenizer):
    with pytest.raises(ValueError, match="divide"):
        MaskCLIPConfig(image_size=30, grid=8)
    model = MaskCLIP(tiny_config(tokenizer))
    with pytest.raises(ValueError, match="vocabulary"):
        model.encode_text(torch.tensor([[1, 10_000, 2]]))
    with pytest.raises(ValueError, match="context_length"):
        model.encode_text(torch.ones(1, 40, dtype=torch.long))


def test_pretrained_text_compact_vocab(tokenizer, tmp_path):
    """Fake 'pretrained' open_clip text weights (full 49408 rows) load into a compact vocab."""
    torch.manual_seed(7)
    cfg = tiny_config(tokenizer)
    full = MaskCLIP(MaskCLIPConfig(**{**cfg.__dict__, "vocab_size": 49408, "context_length": 20,
                                      "sot_id": 49406, "eot_id": 49407}))
    state = {k: v.contiguous() for k, v in full.text_encoder.state_dict().items()}
    state["visual.conv1.weight"] = torch.zeros(1)  # other towers are skipped
    save_file(state, str(tmp_path / "clip.safetensors"))
    model = MaskCLIP(cfg)
    model.load_pretrained_text(str(tmp_path / "clip.safetensors"), tokenizer)
    emb, src = model.text_encoder.token_embedding.weight, full.text_encoder.token_embedding.weight
    bpe_id = tokenizer.vocab[5]
    assert torch.equal(emb[4 + 5], src[bpe_id]) and torch.equal(emb[1], src[49406]) and torch.equal(emb[2], src[49407])
    # the same caption gives the same word tokens under both numberings
    text = "a red top with a pocket"
    full_tok = GarmentTokenizer(context_length=tokenizer.context_length)
    a, _ = model.encode_text(tokenizer(text).ids)
    b, _ = full.encode_text(full_tok(text).ids)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert model.config.pretrained_text.endswith("clip.safetensors")

    wrong = MaskCLIP(tiny_config(tokenizer, text_width=16))
    with pytest.raises(ValueError, match="do not fit"):
        wrong.load_pretrained_text(str(tmp_path / "clip.safetensors"), tokenizer)


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="would try the network")
def test_pretrained_tag_offline_gives_one_clear_error(tokenizer):
    model = MaskCLIP(tiny_config(tokenizer))
    # offline: the download fails (RuntimeError); with cached weights: the sizes do not fit
    with pytest.raises((RuntimeError, ValueError), match="Offline|do not fit"):
        model.load_pretrained_text("ViT-B-32/openai", tokenizer)


def test_local_attention_radius_limits_what_a_part_token_sees():
    cfg = MaskCLIPConfig(image_size=32, grid=8, vision_width=32, vision_layers=2, vision_heads=2, text_width=32,
                         text_layers=1, text_heads=2, embed_dim=16, vocab_size=100, context_length=8, sot_id=1,
                         eot_id=2, attention_radius=1)
    torch.manual_seed(0)
    model = MaskCLIP(cfg).eval()
    probs = torch.zeros(1, NUM_PARTS, 32, 32)
    probs[:, 0] = 1
    probs[:, 1, :, :] = 1  # the whole image is garment: every patch is a valid key
    probs[:, 0] = 0
    img = torch.randn(1, 3, 32, 32)
    far = img.clone()
    far[..., 28:, 28:] += 3  # change only the bottom-right patch
    with torch.no_grad():
        a, _ = model.encode_parts(img, probs)
        b, _ = model.encode_parts(far, probs)
    changed = (a - b).abs().amax(-1).reshape(8, 8) > 1e-6
    # Two layers of radius-1 attention reach at most 2 cells away from the changed patch.
    assert changed[7, 7] and changed[5, 5] and not changed[:5].any() and not changed[:, :5].any()


def test_patch_only_attention_and_local_text_keep_tokens_local():
    cfg = MaskCLIPConfig(image_size=32, grid=8, vision_width=32, vision_layers=2, vision_heads=2, text_width=32,
                         text_layers=2, text_heads=2, embed_dim=16, vocab_size=100, context_length=8, sot_id=1,
                         eot_id=2, attention_radius=0, text_attention_radius=1)
    torch.manual_seed(0)
    model = MaskCLIP(cfg).eval()
    probs = torch.zeros(1, NUM_PARTS, 32, 32)
    probs[:, 1] = 1  # all garment: every patch is a valid key
    img = torch.randn(1, 3, 32, 32)
    far = img.clone()
    far[..., 28:, 28:] += 3  # change only the bottom-right patch
    ids = torch.tensor([[1, 10, 11, 12, 13, 14, 2, 0]])
    other = ids.clone()
    other[0, 1] = 20  # change the first word only
    with torch.no_grad():
        a, _ = model.encode_parts(img, probs)
        b, _ = model.encode_parts(far, probs)
        ta, _ = model.encode_text(ids)
        tb, _ = model.encode_text(other)
    changed = (a - b).abs().amax(-1).reshape(8, 8) > 1e-6
    assert changed[7, 7] and changed.sum() == 1  # radius 0: a patch token sees only its patch
    moved = (ta - tb).abs().amax(-1)[0] > 1e-6  # (L,)
    # Two layers of radius-1 causal attention: word 1 reaches positions 1, 2, 3 and no further.
    assert moved[1:4].all() and not moved[4:].any() and not moved[0]
    with pytest.raises(ValueError, match="text_attention_radius"):
        MaskCLIPConfig(text_attention_radius=-1)
