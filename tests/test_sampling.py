"""Samplers: cached AR == uncached reference, guidance, condition subsets, part editing, mask-predict."""

import itertools

import pytest
import torch
from reference_sampling import filter_logits, reference_sample_autoregressive

from armani.models.transformer import CrossModalTransformer, TransformerConfig
from armani.sampling import (
    choose_tokens,
    remask_count,
    sample_autoregressive,
    sample_mask_predict,
    token_mask_from_part_mask,
)
from armani.sampling.fast_path import PackedLinear, model_for_sampling, packing_works
from armani.sampling.tokens import guide

FP32 = dict(dtype="float32")


def tiny_config(**overrides) -> TransformerConfig:
    base = dict(text_vocab_size=20, text_len=5, sketch_codebook_size=10, sketch_len=4, partial_codebook_size=12,
                partial_len=4, image_codebook_size=32, image_len=16, width=32, layers=2, heads=4)
    return TransformerConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    model = CrossModalTransformer(tiny_config()).eval()
    # larger logits than at init, so sampling settings and conditions visibly matter
    with torch.no_grad():
        model.head.weight.mul_(40)
        for table in (model.text_emb, model.sketch_emb, model.partial_emb):
            table.weight.mul_(50)
    return model


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(1)
    model = CrossModalTransformer(tiny_config(causal=False)).eval()
    with torch.no_grad():
        model.head.weight.mul_(40)
        for table in (model.text_emb, model.sketch_emb, model.partial_emb):
            table.weight.mul_(50)
    return model


def conditions(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        text_ids=torch.randint(0, cfg.text_vocab_size, (cfg.text_len,), generator=g),
        sketch_ids=torch.randint(0, cfg.sketch_codebook_size, (cfg.sketch_len,), generator=g),
        partial_ids=torch.randint(0, cfg.partial_codebook_size, (cfg.partial_len,), generator=g),
    )


SETTINGS = [
    dict(top_k=1),  # greedy
    dict(temperature=0),  # greedy
    dict(temperature=1.0),
    dict(temperature=0.7, top_k=5),
    dict(temperature=1.3, top_p=0.8),
    dict(top_k=10, top_p=0.9, guidance_scale=3.0),
    dict(temperature=0.9, guidance_scale=2.0, guidance_conditions=("text",)),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_cached_sampler_equals_uncached_reference(gpt, settings):
    cond = conditions(gpt.config)
    cached = sample_autoregressive(gpt, **cond, num_images=3, generator=7, **settings, **FP32)
    reference = reference_sample_autoregressive(gpt, **cond, num_images=3, generator=7, **settings)
    assert cached.shape == (3, 16) and cached.dtype == torch.long
    assert torch.equal(cached, reference)


def test_cached_sampler_with_grid_positions_equals_uncached_reference():
    """The shared 2D position code reaches the KV-cache sampler and its bf16 fast path as well."""
    torch.manual_seed(2)
    model = CrossModalTransformer(tiny_config(grid_positions=True)).eval()
    with torch.no_grad():
        model.head.weight.mul_(40)
        model.grid_row_emb.weight.normal_(0, 1.0)  # trained-looking, not the zero start
        model.grid_col_emb.weight.normal_(0, 1.0)
    cond = conditions(model.config)
    cached = sample_autoregressive(model, **cond, num_images=3, generator=7, top_k=5, **FP32)
    reference = reference_sample_autoregressive(model, **cond, num_images=3, generator=7, top_k=5)
    assert torch.equal(cached, reference)
    fast = sample_autoregressive(model, **cond, num_images=3, generator=7, top_k=5, dtype="bfloat16")
    assert (fast == reference).float().mean() > 0.5


def test_seeding(gpt):
    cond = conditions(gpt.config)
    a = sample_autoregressive(gpt, **cond, num_images=4, generator=1, **FP32)
    b = sample_autoregressive(gpt, **cond, num_images=4, generator=torch.Generator().manual_seed(1), **FP32)
    c = sample_autoregressive(gpt, **cond, num_images=4, generator=2, **FP32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # images in one batch differ


def test_guidance_scale_one_is_exactly_no_guidance(gpt):
    cond = conditions(gpt.config)
    plain = sample_autoregressive(gpt, **cond, num_images=2, generator=3, **FP32)
    one = sample_autoregressive(gpt, **cond, num_images=2, generator=3, guidance_scale=1.0,
                                guidance_conditions=("text", "sketch"), **FP32)
    assert torch.equal(plain, one)
    # the guidance formula itself: scale 1 returns the conditional rows
    logits = torch.randn(4, 8)
    assert torch.equal(guide(logits, True, 1.0), logits[:2])
    torch.testing.assert_close(guide(logits, True, 3.0), logits[2:] + 3 * (logits[:2] - logits[2:]))


def test_guidance_changes_the_result(gpt):
    cond = conditions(gpt.config)
    plain = sample_autoregressive(gpt, **cond, num_images=2, generator=3, top_k=1, **FP32)
    guided = sample_autoregressive(gpt, **cond, num_images=2, generator=3, top_k=1, guidance_scale=4.0, **FP32)
    assert not torch.equal(plain, guided)


def test_every_condition_subset_runs_and_matters(gpt):
    cond = conditions(gpt.config)
    results, first = {}, {}
    for r in range(4):
        for subset in itertools.combinations(("text", "sketch", "partial"), r):
            given = {f"{n}_ids": cond[f"{n}_ids"] for n in subset}
            ids = sample_autoregressive(gpt, **given, num_images=2, generator=0, top_k=1, **FP32)
            assert ids.shape == (2, 16) and 0 <= ids.min() and ids.max() < 32
            results[subset] = ids
            with torch.no_grad():  # the prediction of token 0 from these conditions
                first[subset] = gpt(**{k: v[None] for k, v in given.items()}, image_ids=ids[:1, :0])[0, 0]
    assert len(results) == 8
    # every condition set leads to another prediction, and mostly to another greedy image
    assert all(not torch.allclose(first[a], first[b]) for a, b in itertools.combinations(first, 2))
    assert len({tuple(v[0].tolist()) for v in results.values()}) >= 4


def test_per_image_conditions_and_broadcast(gpt):
    cond = conditions(gpt.config)
    text = torch.stack([cond["text_ids"], (cond["text_ids"] + 3) % 20])
    both = sample_autoregressive(gpt, text_ids=text, num_images=2, generator=0, top_k=1, **FP32)
    first = sample_autoregressive(gpt, text_ids=text[0], num_images=2, generator=0, top_k=1, **FP32)
    assert torch.equal(both[0], first[0]) and torch.equal(first[0], first[1])
    assert not torch.equal(both[0], both[1])


def test_fixed_mask_keeps_everything_outside_the_edit(gpt):
    cond = conditions(gpt.config)
    original = sample_autoregressive(gpt, **cond, num_images=1, generator=5, **FP32)[0]
    part = torch.zeros(16, dtype=torch.bool)
    part[[5, 6, 9, 10]] = True  # a 2x2 part in the middle of the 4x4 grid
    edits = sample_autoregressive(gpt, **cond, num_images=6, generator=9, fixed_ids=original, fixed_mask=~part,
                                  temperature=1.5, **FP32)
    assert torch.equal(edits[:, ~part], original[~part].expand(6, -1))
    assert (edits[:, part] != original[part]).any()  # the part was regenerated
    reference = reference_sample_autoregressive(gpt, **cond, num_images=6, generator=9, fixed_ids=original,
                                                fixed_mask=~part, temperature=1.5)
    assert torch.equal(edits, reference)


def test_callback_streams_prefixes(gpt):
    cond = conditions(gpt.config)
    seen = []
    ids = sample_autoregressive(gpt, **cond, num_images=2, generator=0, callback=lambda s, x: seen.append((s, x)),
                                callback_every=5, **FP32)
    assert [s for s, _ in seen] == [5, 10, 15, 16]
    for step, so_far in seen:
        assert so_far.shape == (2, step) and torch.equal(so_far, ids[:, :step])


def test_bf16_sampler_runs_and_mostly_agrees(gpt):
    cond = conditions(gpt.config)
    low = sample_autoregressive(gpt, **cond, num_images=2, generator=0, top_k=1, dtype="bfloat16")
    high = sample_autoregressive(gpt, **cond, num_images=2, generator=0, top_k=1, **FP32)
    assert low.shape == (2, 16) and low.max() < 32
    assert (low[:, :4] == high[:, :4]).float().mean() >= 0.5  # before errors compound
    assert gpt.head.weight.dtype == torch.float32  # the caller's model is untouched
    # the bf16 copy is reused, and rebuilt once the weights change
    model = CrossModalTransformer(tiny_config())
    first = model_for_sampling(model, "bfloat16")
    assert model_for_sampling(model, "bfloat16") is first
    with torch.no_grad():
        model.head.weight.add_(1.0)
    second = model_for_sampling(model, "bfloat16")
    x = torch.randn(3, model.config.width).bfloat16()
    assert second is not first
    assert torch.equal(second.head(x), torch.nn.functional.linear(x, model.head.weight.bfloat16()))
    with pytest.raises(ValueError, match="dtype"):
        sample_autoregressive(gpt, **cond, dtype="float16")


def test_bf16_copy_prepacks_its_linear_layers_without_changing_results(gpt):
    if not packing_works():
        pytest.skip("this torch build lacks oneDNN's linear packing: plain layers are used")
    low = model_for_sampling(gpt, "bfloat16")
    packed = [m for m in low.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == 4 * gpt.config.layers + 1  # qkv, proj, mlp up/down per block; the head
    assert not any(type(m) is torch.nn.Linear for m in low.modules())
    x = torch.randn(2, 7, gpt.config.width).bfloat16()
    block = gpt.blocks[0].mlp[0]
    assert torch.equal(low.blocks[0].mlp[0](x), torch.nn.functional.linear(x, block.weight.bfloat16(),
                                                                            block.bias.bfloat16()))


def test_float32_packing_is_opt_in_and_matches_the_plain_model_up_to_rounding(gpt):
    if not packing_works(torch.float32):
        pytest.skip("this torch build lacks oneDNN's float32 linear packing: plain layers are used")
    assert model_for_sampling(gpt, "float32") is gpt  # off by default: exactness tests see the model itself
    fast = model_for_sampling(gpt, "float32", pack_float32=True)
    assert fast is not gpt and model_for_sampling(gpt, "float32", pack_float32=True) is fast  # cached
    assert model_for_sampling(gpt, "bfloat16") is not fast  # each precision has its own copy
    assert sum(isinstance(m, PackedLinear) for m in fast.modules()) == 4 * gpt.config.layers + 1
    assert all(p.dtype == torch.float32 for p in fast.parameters())
    cond = conditions(gpt.config)
    ids = torch.randint(0, gpt.config.image_codebook_size, (2, gpt.config.image_len))
    with torch.inference_mode():
        want = gpt(cond["text_ids"].expand(2, -1), cond["sketch_ids"].expand(2, -1), cond["partial_ids"].expand(2, -1),
                   ids)
        got = fast(cond["text_ids"].expand(2, -1), cond["sketch_ids"].expand(2, -1), cond["partial_ids"].expand(2, -1),
                   ids)
    assert got.std() > 0.1 and torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    # The sampler with it on draws (nearly always) the same tokens: greedy picks on these logits agree.
    plain = sample_autoregressive(gpt, **cond, num_images=2, generator=3, top_k=1, **FP32)
    packed = sample_autoregressive(gpt, **cond, num_images=2, generator=3, top_k=1, pack_float32=True, **FP32)
    assert (plain == packed).float().mean() >= 0.9
    assert gpt.head.weight.dtype == torch.float32 and type(gpt.blocks[0].mlp[0]) is torch.nn.Linear  # untouched


def test_sampler_restores_training_mode(gpt):
    gpt.train()
    sample_autoregressive(gpt, num_images=1, generator=0, **FP32)
    assert gpt.training
    gpt.eval()


def test_choose_tokens_respects_top_k_and_top_p():
    logits = torch.tensor([[5.0, 4.0, 3.0, -1.0, -2.0]]).expand(2000, -1)
    g = torch.Generator().manual_seed(0)
    tokens, probs = choose_tokens(logits, g, top_k=2)
    assert set(tokens.unique().tolist()) == {0, 1}
    expected = torch.softmax(torch.tensor([5.0, 4.0]), 0)
    assert abs((tokens == 0).float().mean().item() - expected[0].item()) < 0.04
    torch.testing.assert_close(probs[tokens == 1][0], expected[1])
    tokens, _ = choose_tokens(logits, g, top_p=0.5)  # token 0 alone holds > 0.5
    assert set(tokens.unique().tolist()) == {0}
    tokens, _ = choose_tokens(logits, g, temperature=100.0)  # nearly uniform
    assert len(tokens.unique()) == 5
    filtered = filter_logits(logits[:1], top_k=3)
    assert torch.isinf(filtered[0, 3:]).all() and torch.isfinite(filtered[0, :3]).all()


def test_token_mask_from_part_mask():
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[0:8, 24:32] = 6  # pocket: top-right 8x8 pixels
    mask[20:21, 0:1] = 7  # one button pixel
    tokens = token_mask_from_part_mask(mask, 6, grid=4)
    expected = torch.zeros(16, dtype=torch.bool)
    expected[3] = True
    assert torch.equal(tokens, expected)
    both = token_mask_from_part_mask(mask[None], [6, 7], grid=4)
    assert both.shape == (1, 16) and both[0, 3] and both[0, 8] and both.sum() == 2
    assert token_mask_from_part_mask(mask, 7, grid=4, min_coverage=0.5).sum() == 0


def test_remask_schedule_is_linear_from_start_to_end():
    assert [remask_count(100, i, 10) for i in range(9)] == [80, 72, 65, 57, 50, 42, 35, 27, 20]
    assert remask_count(torch.tensor([10, 0]), 8, 10).tolist() == [2, 0]


def test_mask_predict_returns_codes_only_and_is_seeded(bert):
    cond = conditions(bert.config)
    steps = []
    ids = sample_mask_predict(bert, **cond, num_images=3, generator=4, callback=lambda s, x: steps.append(s), **FP32)
    assert ids.shape == (3, 16) and ids.min() >= 0 and ids.max() < bert.config.image_codebook_size
    assert steps == list(range(1, 11))
    again = sample_mask_predict(bert, **cond, num_images=3, generator=4, **FP32)
    assert torch.equal(ids, again)
    for remask in ("multinomial", "confidence"):
        guided = sample_mask_predict(bert, **cond, num_images=2, generator=4, guidance_scale=3.0, top_k=4,
                                     remask=remask, **FP32)
        assert guided.max() < 32
    with pytest.raises(ValueError, match="bidirectional"):
        sample_mask_predict(CrossModalTransformer(tiny_config()), num_images=1)


def test_mask_predict_edits_only_the_editable_positions(bert):
    cond = conditions(bert.config)
    init = torch.randint(0, 32, (16,), generator=torch.Generator().manual_seed(0))
    editable = torch.zeros(16, dtype=torch.bool)
    editable[[0, 1, 4, 5]] = True
    out = sample_mask_predict(bert, **cond, num_images=4, generator=1, init_ids=init, editable_mask=editable,
                              temperature=1.5, **FP32)
    assert torch.equal(out[:, ~editable], init[~editable].expand(4, -1))
    assert (out[:, editable] != init[editable]).any()


def test_mask_predict_with_product_quantisation():
    torch.manual_seed(2)
    model = CrossModalTransformer(tiny_config(causal=False, pq_groups=4, image_codebook_size=8)).eval()
    init = torch.randint(0, 8, (16, 4), generator=torch.Generator().manual_seed(0))
    editable = torch.arange(16) >= 8
    out = sample_mask_predict(model, num_images=2, generator=0, steps=4, init_ids=init, editable_mask=editable,
                              **FP32)
    assert out.shape == (2, 16, 4) and out.max() < 8 and out.min() >= 0
    assert torch.equal(out[:, :8], init[:8].expand(2, -1, -1))


def _overfit(causal: bool) -> CrossModalTransformer:
    """Text "SOT k EOT" -> an image whose 9 tokens are all k (k in 0..5)."""
    torch.manual_seed(0)
    cfg = tiny_config(text_len=3, image_len=9, image_codebook_size=8, causal=causal,
                      cond_drop_prob={"text": 0.0, "sketch": 0.0, "partial": 0.0})
    model = CrossModalTransformer(cfg)
    k = torch.arange(6).repeat(2)  # (12,)
    text = torch.stack([torch.full_like(k, 1), k + 4, torch.full_like(k, 2)], 1)
    image = k[:, None].expand(-1, 9)
    opt = torch.optim.AdamW(model.param_groups(0.0), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss = model.loss(text_ids=text, image_ids=image, generator=g)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
    assert loss.accuracy > 0.95, loss
    return model.eval()


def test_tiny_gpt_overfits_and_samples_the_right_tokens():
    model = _overfit(causal=True)
    for k in range(6):
        text = torch.tensor([1, k + 4, 2])
        ids = sample_autoregressive(model, text_ids=text, num_images=2, generator=k, temperature=0.5, **FP32)
        assert torch.equal(ids, torch.full((2, 9), k)), (k, ids)


def test_tiny_bidirectional_model_overfits_and_mask_predict_finds_the_tokens():
    model = _overfit(causal=False)
    for k in range(6):
        text = torch.tensor([1, k + 4, 2])
        ids = sample_mask_predict(model, text_ids=text, num_images=2, generator=k, temperature=0.5, **FP32)
        assert torch.equal(ids, torch.full((2, 9), k)), (k, ids)


def test_choose_tokens_draws_in_proportion_and_never_picks_an_impossible_token():
    inf = float("inf")
    logits = torch.tensor([[-inf, 1.0, -inf, 0.0, 2.0, -inf]]).expand(20000, -1)
    g = torch.Generator().manual_seed(1)
    for top_k in (None, 3):  # full softmax, and the (unsorted) top-k slice
        tokens, probs = choose_tokens(logits, g, top_k=top_k)
        assert set(tokens.unique().tolist()) == {1, 3, 4}
        expected = torch.softmax(torch.tensor([1.0, 0.0, 2.0]), 0)
        freq = torch.stack([(tokens == i).float().mean() for i in (1, 3, 4)])
        torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)
        torch.testing.assert_close(probs[tokens == 4][0], expected[2])
