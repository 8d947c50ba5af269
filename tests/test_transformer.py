"""Stage-2 cross-modal Transformer: sequence layout, causal shift, NULL conditions, losses, checkpoints."""

import json

import pytest
import torch
import torch.nn.functional as F

from armani.models.transformer import (
    CrossModalTransformer,
    TransformerConfig,
    TransformerLoss,
    soft_image_codes,
)


def tiny_config(**overrides) -> TransformerConfig:
    base = dict(text_vocab_size=20, text_len=5, sketch_codebook_size=10, sketch_len=4, partial_codebook_size=12,
                partial_len=4, image_codebook_size=16, image_len=9, width=32, layers=2, heads=4)
    return TransformerConfig(**{**base, **overrides})


def inputs(cfg: TransformerConfig, B: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, cfg.text_vocab_size, (B, cfg.text_len), generator=g)
    sketch = torch.randint(0, cfg.sketch_codebook_size, (B, cfg.sketch_len), generator=g)
    partial = torch.randint(0, cfg.partial_codebook_size, (B, cfg.partial_len), generator=g)
    shape = (B, cfg.image_len) + ((cfg.pq_groups,) if cfg.pq_groups > 1 else ())
    image = torch.randint(0, cfg.image_codebook_size, shape, generator=g)
    return text, sketch, partial, image


@pytest.fixture
def model():
    torch.manual_seed(0)
    return CrossModalTransformer(tiny_config()).eval()


def test_layout_and_output_shapes(model):
    cfg = model.config
    assert cfg.prefix_len == 5 + 4 + 4 + 3 and cfg.max_len == cfg.prefix_len + 9
    text, sketch, partial, image = inputs(cfg)
    assert model(text, sketch, partial, image).shape == (2, 9, 16)
    # a prefix of n image tokens predicts tokens 0..n
    assert model(text, sketch, partial, image[:, :3]).shape == (2, 4, 16)
    assert model(text, sketch, partial, image[:, :0]).shape == (2, 1, 16)


def test_causal_shift_is_exact(model):
    """Changing image token t never changes the logits at positions <= t, and does change t+1."""
    text, sketch, partial, image = inputs(model.config)
    with torch.no_grad():
        base = model(text, sketch, partial, image)
        for t in (0, 4, 7):
            changed = image.clone()
            changed[:, t] = (changed[:, t] + 1) % model.config.image_codebook_size
            out = model(text, sketch, partial, changed)
            assert torch.equal(out[:, : t + 1], base[:, : t + 1]), t
            assert not torch.allclose(out[:, t + 1], base[:, t + 1]), t
        # the last image token is never an input
        changed = image.clone()
        changed[:, -1] = (changed[:, -1] + 1) % 16
        assert torch.equal(model(text, sketch, partial, changed), base)
        # token 0 is predicted from the conditions (the last SEP): they matter
        other_text = (text + 1) % model.config.text_vocab_size
        assert not torch.allclose(model(other_text, sketch, partial, image)[:, 0], base[:, 0])


def test_bidirectional_sees_both_sides():
    torch.manual_seed(0)
    model = CrossModalTransformer(tiny_config(causal=False)).eval()
    text, sketch, partial, image = inputs(model.config)
    with torch.no_grad():
        base = model(text, sketch, partial, image)
        changed = image.clone()
        changed[:, 5] = model.config.mask_id
        out = model(text, sketch, partial, changed)
    assert out.shape == (2, 9, 16)
    assert not torch.allclose(out[:, 0], base[:, 0])  # an earlier position reacts to a later token


def test_absent_condition_equals_dropped_condition(model):
    """An absent condition and a dropped one are the same NULL segment."""
    text, sketch, partial, image = inputs(model.config)
    with torch.no_grad():
        absent = model(text, None, partial, image)
        dropped = model(text, sketch, partial, image, drop={"sketch": True})
        row_drop = model(text, sketch, partial, image, drop={"sketch": torch.tensor([True, False])})
        full = model(text, sketch, partial, image)
    torch.testing.assert_close(absent, dropped, rtol=0, atol=1e-6)
    torch.testing.assert_close(row_drop[0], absent[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(row_drop[1], full[1], rtol=0, atol=1e-6)
    assert not torch.allclose(absent, full)
    with pytest.raises(ValueError, match="unknown conditions"):
        model(text, sketch, partial, image, drop={"colour": True})


def test_short_text_is_right_padded(model):
    text, sketch, partial, image = inputs(model.config)
    short = text[:, :3]
    padded = torch.cat([short, torch.zeros(2, 2, dtype=torch.long)], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(short, sketch, partial, image), model(padded, sketch, partial, image))
    with pytest.raises(ValueError, match="length"):
        model(text, sketch[:, :2], partial, image)


def test_product_quantised_tokens():
    torch.manual_seed(0)
    cfg = tiny_config(pq_groups=3, causal=False)
    model = CrossModalTransformer(cfg).eval()
    text, sketch, partial, image = inputs(cfg)
    assert image.shape == (2, 9, 3)
    with torch.no_grad():
        logits = model(text, sketch, partial, image)
        assert logits.shape == (2, 9, 3, 16)
        # the input embedding is the sum of the G sub-code embeddings
        emb = model.embed_image(image[:, :2]) - model._position_terms(cfg.prefix_len, 2)
        K1 = cfg.image_codebook_size + 1
        expected = sum(model.image_emb.weight[image[:, :2, g] + g * K1] for g in range(3))
        torch.testing.assert_close(emb, expected)
    loss = model.train().loss(text, sketch, partial, image, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss.total) and 0 <= loss.accuracy <= 1


def test_causal_loss_is_next_token_cross_entropy(model):
    text, sketch, partial, image = inputs(model.config)
    out = model.loss(text, sketch, partial, image, drop={})
    assert isinstance(out, TransformerLoss)
    logits = model(text, sketch, partial, image)
    torch.testing.assert_close(out.ce, F.cross_entropy(logits.reshape(-1, 16), image.reshape(-1)))
    assert out.semantic.item() == 0 and torch.equal(out.total, out.ce)
    expected_acc = (logits.argmax(-1) == image).float().mean()
    torch.testing.assert_close(out.accuracy, expected_acc)


def test_condition_dropout_is_seeded_and_has_the_configured_rate(model):
    model.train()
    a = model.sample_condition_drop(4000, torch.Generator().manual_seed(3))
    b = model.sample_condition_drop(4000, torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert abs(a["text"].float().mean().item() - 0.1) < 0.02
    assert abs(a["sketch"].float().mean().item() - 0.5) < 0.03
    text, sketch, partial, image = inputs(model.config, B=8)
    torch.manual_seed(0)
    l1 = model.loss(text, sketch, partial, image, generator=torch.Generator().manual_seed(1)).ce
    l2 = model.loss(text, sketch, partial, image, generator=torch.Generator().manual_seed(1)).ce
    assert torch.equal(l1, l2)


def test_bidirectional_loss_scores_only_masked_positions():
    torch.manual_seed(0)
    model = CrossModalTransformer(tiny_config(causal=False))
    mask = model.sample_training_mask(64, torch.Generator().manual_seed(0))
    assert mask.shape == (64, 9) and mask.any(1).all()
    assert 0.2 < mask.float().mean() < 0.9  # a mix of ratios, not all or nothing
    text, sketch, partial, image = inputs(model.config)
    out = model.loss(text, sketch, partial, image, generator=torch.Generator().manual_seed(5), drop={})
    scored = model.sample_training_mask(2, torch.Generator().manual_seed(5))
    masked = torch.where(scored, torch.full_like(image, model.config.mask_id), image)
    logits = model(text, sketch, partial, masked)
    torch.testing.assert_close(out.ce, F.cross_entropy(logits[scored], image[scored]))


def test_grid_positions_give_a_sketch_cell_the_code_of_the_image_cells_under_it():
    from armani.models.transformer import grid_position_weights

    cfg = tiny_config(image_len=16, sketch_len=4, partial_len=4, grid_positions=True)  # 4x4 image, 2x2 sketch
    rows, cols = grid_position_weights(cfg)
    sketch0, partial0, image0 = cfg.text_len + 1, cfg.text_len + cfg.sketch_len + 2, cfg.prefix_len
    assert rows[: cfg.text_len].abs().sum() == 0 and rows[cfg.text_len].abs().sum() == 0  # text, SEP
    torch.testing.assert_close(rows[sketch0 + 3], torch.tensor([0, 0, 0.5, 0.5]))  # sketch cell (1, 1)
    torch.testing.assert_close(cols[partial0 + 2], torch.tensor([0.5, 0.5, 0, 0]))  # partial cell (1, 0)
    torch.testing.assert_close(rows[image0 + 6], torch.tensor([0.0, 1, 0, 0]))  # image cell (1, 2)
    torch.testing.assert_close(cols[image0 + 6], torch.tensor([0.0, 0, 1, 0]))

    model = CrossModalTransformer(cfg)
    with torch.no_grad():
        model.grid_row_emb.weight.normal_()
        model.grid_col_emb.weight.normal_()
        model.pos_emb.weight.zero_()
        model.type_emb.weight.zero_()
    terms = model._position_terms(0, cfg.max_len)
    under = [image0 + k for k in (10, 11, 14, 15)]  # image cells (2..3, 2..3) under sketch cell (1, 1)
    torch.testing.assert_close(terms[sketch0 + 3], terms[under].mean(0))
    assert (terms[sketch0 + 3] - terms[image0]).norm() > 0.1  # another cell, another code
    with pytest.raises(ValueError, match="grid_positions"):
        tiny_config(image_len=9, sketch_len=4, grid_positions=True)  # 2x2 does not tile 3x3


def test_grid_positions_start_as_a_no_op_on_a_trained_model():
    """Switched on in a trained model (warm start, non-strict), the code is zero: same outputs."""
    torch.manual_seed(0)
    plain = CrossModalTransformer(tiny_config(image_len=16)).eval()
    grid = CrossModalTransformer(tiny_config(image_len=16, grid_positions=True)).eval()
    missing, unexpected = grid.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["grid_col_emb.weight", "grid_row_emb.weight"] and not unexpected
    text, sketch, partial, image = inputs(plain.config)
    torch.testing.assert_close(grid(text, sketch, partial, image), plain(text, sketch, partial, image))
    out = grid.loss(text, sketch, partial, image, drop={})
    out.ce.backward()
    assert grid.grid_row_emb.weight.grad.norm() > 0  # and it learns from there


def test_background_weight_is_a_weighted_mean_that_leaves_garment_tokens_at_full_weight():
    torch.manual_seed(0)
    cfg = tiny_config(background_weight=0.25)
    model = CrossModalTransformer(cfg).eval()
    text, sketch, partial, image = inputs(cfg)
    garment = torch.zeros(2, cfg.image_len, dtype=torch.bool)
    garment[:, :4] = True  # the first 4 tokens of each row cover the garment
    logits = model(text, sketch, partial, image)
    per_token = F.cross_entropy(logits.reshape(-1, cfg.image_codebook_size), image.reshape(-1), reduction="none")
    weight = torch.where(garment.reshape(-1), 1.0, 0.25)
    out = model.loss(text, sketch, partial, image, drop={}, garment_tokens=garment)
    torch.testing.assert_close(out.ce, (per_token * weight).sum() / weight.sum())
    plain = model.loss(text, sketch, partial, image, drop={}, garment_tokens=torch.ones_like(garment))
    torch.testing.assert_close(plain.ce, per_token.mean())  # every token garment: the plain mean
    with pytest.raises(ValueError, match="garment_tokens"):
        model.loss(text, sketch, partial, image, drop={})
    with pytest.raises(ValueError, match="background_weight"):
        tiny_config(background_weight=0.0)
    pq = CrossModalTransformer(tiny_config(background_weight=0.5, pq_groups=2, causal=False)).eval()
    _, _, _, pq_image = inputs(pq.config)
    assert torch.isfinite(pq.loss(text, sketch, partial, pq_image, drop={}, garment_tokens=garment).ce)


def test_token_losses_are_the_per_token_terms_of_the_loss():
    """Per-token CE (split into garment / background by validation and research/ce_split.py)
    averages to the loss's CE; the weighted loss is their weighted mean."""
    torch.manual_seed(0)
    cfg = tiny_config(background_weight=0.25)
    model = CrossModalTransformer(cfg).eval()
    text, sketch, partial, image = inputs(cfg)
    per_token = model.token_losses(text, sketch, partial, image)
    assert per_token.shape == (2, cfg.image_len) and (per_token > 0).all()
    garment = torch.zeros(2, cfg.image_len, dtype=torch.bool)
    garment[:, 2:5] = True
    torch.testing.assert_close(model.loss(text, sketch, partial, image, drop={},
                                          garment_tokens=torch.ones_like(garment)).ce, per_token.mean())
    weight = torch.where(garment, 1.0, 0.25)
    torch.testing.assert_close(model.loss(text, sketch, partial, image, drop={}, garment_tokens=garment).ce,
                               (per_token * weight).sum() / weight.sum())
    with pytest.raises(ValueError, match="causal"):
        CrossModalTransformer(tiny_config(causal=False)).token_losses(text, sketch, partial, image)


def test_semantic_hook_adds_lambda_times_semantic_and_backpropagates():
    torch.manual_seed(0)
    model = CrossModalTransformer(tiny_config(semantic_loss=True))
    text, sketch, partial, image = inputs(model.config)
    seen = {}

    def semantic_fn(probs, rows):
        seen["probs"], seen["rows"] = probs, rows
        return 1 - probs[..., 3].mean()  # "make the image look like code 3"

    out = model.loss(text, sketch, partial, image, drop={}, semantic_fn=semantic_fn)
    assert seen["probs"].shape == (2, 9, 16) and seen["rows"].tolist() == [0, 1]
    torch.testing.assert_close(seen["probs"].sum(-1), torch.ones(2, 9))
    torch.testing.assert_close(out.total, out.ce + 2.0 * out.semantic)
    model.zero_grad()
    out.semantic.backward()
    grad = model.head.weight.grad
    assert grad is not None and grad[3].norm() > 0


def test_semantic_hook_skips_rows_whose_caption_was_dropped():
    """Eq. 14 needs the caption: a row trained without it gets cross entropy only."""
    torch.manual_seed(0)
    model = CrossModalTransformer(tiny_config(semantic_loss=True))
    text, sketch, partial, image = inputs(model.config)
    calls = []

    def semantic_fn(probs, rows):
        calls.append(rows.tolist())
        return probs[..., 3].mean()

    full = model.loss(text, sketch, partial, image, drop={}, semantic_fn=semantic_fn)
    one = model.loss(text, sketch, partial, image, drop={"text": torch.tensor([True, False])}, semantic_fn=semantic_fn)
    assert calls == [[0, 1], [1]]
    logits = model(text, sketch, partial, image, drop={"text": torch.tensor([True, False])})
    torch.testing.assert_close(one.semantic, model.soft_image_codes(logits[1:])[..., 3].mean())
    none = model.loss(text, sketch, partial, image, drop={"text": True}, semantic_fn=semantic_fn)
    assert len(calls) == 2 and none.semantic == 0 and torch.equal(none.total, none.ce)
    assert full.semantic != one.semantic


def test_soft_image_codes():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)
    soft = soft_image_codes(logits, tau=0.5)
    torch.testing.assert_close(soft, torch.softmax(logits / 0.5, -1))
    hard = soft_image_codes(logits, hard=True)
    assert torch.equal(hard.sum(-1), torch.ones(2, 5)) and set(hard.unique().tolist()) <= {0.0, 1.0}
    (hard * torch.arange(7.0)).sum().backward()  # straight-through: a gradient reaches the logits
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_param_groups_cover_every_parameter_once(model):
    groups = model.param_groups(0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    decay = {id(p) for p in groups[0]["params"]}
    assert id(model.head.weight) in decay and id(model.blocks[0].attn.qkv.weight) in decay
    assert id(model.text_emb.weight) not in decay and id(model.blocks[0].ln1.weight) not in decay
    assert id(model.blocks[0].attn.qkv.bias) not in decay
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0


def test_gpt2_init_scales_residual_projections(model):
    assert abs(model.blocks[0].mlp[0].weight.std().item() - 0.02) < 0.003
    assert abs(model.blocks[0].attn.proj.weight.std().item() - 0.02 / 2) < 0.002  # 1/sqrt(2*2 layers)
    assert model.blocks[0].attn.qkv.bias.abs().max() == 0


def test_save_and_load_roundtrip(tmp_path, model):
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = CrossModalTransformer.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    text, sketch, partial, image = inputs(model.config)
    with torch.no_grad():
        assert torch.equal(loaded(text, sketch, partial, image), model(text, sketch, partial, image))


def test_corrupt_or_mismatched_checkpoint_gives_clear_errors(tmp_path, model):
    model.save_pretrained(tmp_path / "ok")
    # corrupt weights
    corrupt = tmp_path / "corrupt"
    model.save_pretrained(corrupt)
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        CrossModalTransformer.from_pretrained(corrupt)
    # weights of another size
    other = tmp_path / "other"
    model.save_pretrained(other)
    config = json.loads((other / "config.json").read_text())
    config["width"] = 64
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        CrossModalTransformer.from_pretrained(other)
    # unknown key, wrong model type, missing files
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "colour": 1}))
    with pytest.raises(ValueError, match="unknown TransformerConfig keys"):
        CrossModalTransformer.from_pretrained(other)
    (other / "config.json").write_text(json.dumps({**config, "model_type": "vqgan"}))
    with pytest.raises(ValueError, match="config"):
        CrossModalTransformer.from_pretrained(other)
    with pytest.raises(FileNotFoundError):
        CrossModalTransformer.from_pretrained(tmp_path / "nowhere")


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(width=30)
    with pytest.raises(ValueError, match="unknown conditions"):
        tiny_config(cond_drop_prob={"colour": 0.5})
    paper = TransformerConfig.paper()
    assert (paper.width, paper.layers, paper.heads) == (1024, 16, 16)


def test_an_override_of_one_condition_dropout_keeps_the_others():
    from armani.config import load_config
    from armani.configuration import ConfigError

    default = load_config("default").transformer.cond_drop_prob
    cfg = load_config("default", ["transformer.cond_drop_prob.partial=0.2"]).transformer
    assert cfg.cond_drop_prob == {**default, "partial": 0.2} and default["sketch"] == 0.5  # not reset to 0
    with pytest.raises(ValueError, match="unknown conditions"):
        load_config("default", ["transformer.cond_drop_prob.colour=0.2"])
    with pytest.raises(ConfigError, match="expected a number"):
        load_config("default", ["transformer.cond_drop_prob.partial=lots"])
