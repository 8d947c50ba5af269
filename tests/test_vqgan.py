"""Stage 1: the cross-modal VQGAN, its losses and the control-signal tokenizers."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from armani.models.losses import VQGANLoss, adaptive_gan_weight, semantic_loss
from armani.models.perceptual import VGG16_TAPS, build_perceptual
from armani.models.vqgan import VQGAN, CheckpointError, VQGANConfig

torch.set_num_threads(1)


def tiny_config(**overrides) -> VQGANConfig:
    """32 px, 8x8 tokens, small widths: fast on one CPU thread."""
    base = dict(
        image_size=32, base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attention=True,
        code_dim=16, codebook_size=32, kmeans_init=False, dead_code_threshold=0.0, fusion=False,
        fusion_dim=8, semantic_loss=False, perceptual="none", gan_start_step=2, disc_channels=8,
        disc_layers=2,
    )
    base.update(overrides)
    return VQGANConfig(**base)


def images(n: int = 4, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g) * 2 - 1


# -- stand-ins for the segmenter and MaskCLIP (the real ones are tested in their own files)
class StubSegmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Conv2d(8, 15, 1)

    def features(self, image):
        f1 = torch.relu(self.conv1(image))
        return [f1, torch.relu(self.conv2(f1))]

    def probs(self, image):
        return self.head(self.features(image)[0]).softmax(dim=1)


class StubMaskCLIP(nn.Module):
    """pair_similarity = cosine(pooled (image, part) features, pooled text embedding)."""

    def __init__(self, embed_dim: int = 8, vocab: int = 50):
        super().__init__()
        self.config = type("C", (), {"embed_dim": embed_dim})()
        self.image_proj = nn.Linear(3 + 15, embed_dim)
        self.text = nn.Embedding(vocab, embed_dim)

    def pair_similarity(self, image, part_probs, text_ids):
        pooled = torch.cat([image, part_probs], dim=1).mean(dim=(2, 3))  # (B, 18)
        return F.cosine_similarity(self.image_proj(pooled), self.text(text_ids).mean(dim=1), dim=-1)


# -- shapes and grid -----------------------------------------------------------------------
def test_shipped_grid_is_16x16_at_64px():
    config = VQGANConfig(image_size=64, channel_mult=(1, 2, 2), base_channels=8, code_dim=8,
                         codebook_size=16, fusion=False, kmeans_init=False)
    model = VQGAN(config).eval()
    assert (model.grid_size, model.num_tokens, model.codebook_size) == (16, 256, 16)
    out = model(images(2, 64))
    assert out.reconstruction.shape == (2, 3, 64, 64)
    assert out.ids.shape == (2, 256) and out.ids.dtype == torch.int64
    assert out.z_hat.shape == out.z_q.shape == (2, 256, 8)
    assert int(out.ids.min()) >= 0 and int(out.ids.max()) < 16
    with pytest.raises(ValueError, match="divisible"):
        VQGANConfig(image_size=30, channel_mult=(1, 2, 2))


def test_encode_decode_match_forward_and_quantised_vectors_are_codebook_rows():
    torch.manual_seed(0)
    model = VQGAN(tiny_config()).eval()
    x = images()
    out = model(x)
    ids = model.encode(x)
    assert torch.equal(ids, out.ids)
    assert torch.allclose(model.decode(ids), out.reconstruction, atol=1e-5)
    # each quantised vector is exactly the nearest codebook row
    assert torch.allclose(out.z_q, model.codebook[ids], atol=1e-6)
    nearest = torch.cdist(out.z_tilde.reshape(-1, 16), model.codebook).argmin(dim=-1)
    assert torch.equal(nearest, ids.reshape(-1))


def test_quantizer_learns_by_ema_not_by_gradient():
    torch.manual_seed(0)
    model = VQGAN(tiny_config(ema_decay=0.5)).train()
    assert all(p is not model.codebook for p in model.parameters())
    x = images(8)
    before = model.codebook.clone()
    model.encode(x)  # encode never updates the codebook, even in training mode
    assert torch.equal(model.codebook, before)
    out = model(x)
    after = model.codebook.clone()
    assert not torch.equal(after, before)
    # the used codes moved towards the mean of the vectors assigned to them
    flat_z, flat_ids = out.z_tilde.detach().reshape(-1, 16), out.ids.reshape(-1)
    for code in flat_ids.unique()[:5]:
        target = flat_z[flat_ids == code].mean(dim=0)
        assert (after[code] - target).norm() < (before[code] - target).norm()
    loss = out.reconstruction.square().mean() + out.commit_loss
    loss.backward()
    assert not model.codebook.requires_grad
    assert model.encoder.layers[0].weight.grad is not None  # straight-through reaches E


def test_product_quantisation_ids_and_decode():
    torch.manual_seed(0)
    model = VQGAN(tiny_config(quantizer="pq", pq_groups=4, codebook_size=8)).eval()
    x = images()
    out = model(x)
    assert out.ids.shape == (4, 64, 4)
    assert model.codebook.shape == (4, 8, 4)
    assert int(out.ids.max()) < 8
    # each group picks its own nearest sub-code
    z = out.z_tilde.reshape(4, 64, 4, 4)
    for g in range(4):
        nearest = torch.cdist(z[:, :, g].reshape(-1, 4), model.codebook[g]).argmin(-1)
        assert torch.equal(nearest, out.ids[:, :, g].reshape(-1))
    assert torch.allclose(model.decode(model.encode(x)), out.reconstruction, atol=1e-5)
    with pytest.raises(ValueError, match="ids must be"):
        model.decode(out.ids[..., 0])


# -- cross-modal fusion (Eq. 9) ------------------------------------------------------------
def test_fusion_averages_exactly_and_only_where_a_word_exists():
    torch.manual_seed(0)
    model = VQGAN(tiny_config(fusion=True, fusion_dim=8)).eval()
    x = images(2)
    words = torch.randn(2, 64, 8) * 20  # big words: fused cells must move to other codes
    word_index = torch.full((2, 64), -1)
    word_index[:, :32] = 3  # first half of the grid has a word
    plain = model(x)
    fused = model(x, words, word_index)
    z_hat = plain.z_hat
    expected = (z_hat + model.word_proj(words)) / 2
    assert torch.allclose(fused.z_tilde[:, :32], expected[:, :32], atol=1e-6)
    assert torch.equal(fused.z_tilde[:, 32:], z_hat[:, 32:])
    # quantised output unchanged where there is no word, changed where there is one
    assert torch.equal(fused.z_q[:, 32:], plain.z_q[:, 32:])
    assert torch.equal(fused.ids[:, 32:], plain.ids[:, 32:])
    assert not torch.equal(fused.ids[:, :32], plain.ids[:, :32])
    assert torch.equal(model.encode(x, words, word_index), fused.ids)
    with pytest.raises(ValueError, match="fusion_words"):
        model(x, torch.randn(2, 64, 5))


def test_fusion_off_ignores_words():
    torch.manual_seed(0)
    model = VQGAN(tiny_config(fusion=False)).eval()
    assert model.word_proj is None
    x = images(2)
    a, b = model(x), model(x, torch.randn(2, 64, 8) * 20, torch.zeros(2, 64, dtype=torch.long))
    assert torch.equal(a.ids, b.ids) and torch.equal(a.reconstruction, b.reconstruction)


# -- differentiable decoding ---------------------------------------------------------------
@pytest.mark.parametrize("quantizer", ["vq", "pq"])
def test_decode_soft_with_one_hot_equals_decode(quantizer):
    torch.manual_seed(0)
    model = VQGAN(tiny_config(quantizer=quantizer, pq_groups=2, codebook_size=16)).eval()
    ids = model.encode(images(2))
    probs = F.one_hot(ids, 16).float().requires_grad_(True)
    soft = model.decode_soft(probs)
    assert torch.allclose(soft, model.decode(ids), atol=1e-5)
    soft.mean().backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0
    # a 50/50 mixture decodes the mean of two codes (checked on the code vectors)
    if quantizer == "vq":
        mix = torch.zeros(1, 64, 16)
        mix[..., 0], mix[..., 1] = 0.5, 0.5
        halfway = ((model.codebook[0] + model.codebook[1]) / 2).expand(1, 64, -1).contiguous()
        assert torch.allclose(model.decode_soft(mix), model.decode_features(halfway), atol=1e-4)


# -- losses --------------------------------------------------------------------------------
def test_adaptive_weight_is_the_gradient_norm_ratio():
    w = nn.Parameter(torch.ones(3, 3))
    rec, gan = (2 * w).sum(), (3 * w).sum()
    weight = adaptive_gan_weight(rec, gan, w)
    assert weight.item() == pytest.approx(2 / 3, rel=1e-3)
    assert not weight.requires_grad


def test_gan_term_off_before_start_and_adaptive_weight_finite_after():
    torch.manual_seed(0)
    config = tiny_config(gan_start_step=5, disc_weight=0.8)
    model, loss_fn = VQGAN(config).train(), VQGANLoss(config)
    x = images()
    out = model(x)
    early = loss_fn(x, out, step=4, last_layer=model.last_layer_weight)
    assert early.gan.item() == 0 and early.disc_weight.item() == 0
    assert early.vqgan.item() == pytest.approx(early.l1.item() + early.commit.item(), rel=1e-6)
    assert early.total.item() == pytest.approx(0.9 * early.vqgan.item(), rel=1e-6)
    late = loss_fn(x, out, step=5, last_layer=model.last_layer_weight)
    assert torch.isfinite(late.disc_weight) and late.disc_weight.item() > 0
    assert late.gan.item() != 0
    assert late.vqgan.item() == pytest.approx(
        late.l1.item() + late.disc_weight.item() * late.gan.item() + late.commit.item(), rel=1e-5)
    late.total.backward()
    assert model.last_layer_weight.grad is not None
    assert set(late.as_dict()) >= {"total", "l1", "perceptual", "gan", "commit", "semantic", "disc_weight"}
    # the discriminator's hinge loss: idle before the start, (1 + 1)/2 = 1 for zero logits
    disc = loss_fn.discriminator_loss(x, out.reconstruction, step=4)
    assert disc.total.item() == 0
    for p in loss_fn.discriminator.parameters():
        nn.init.zeros_(p)
    disc = loss_fn.discriminator_loss(x, out.reconstruction, step=5)
    assert disc.total.item() == pytest.approx(1.0) and disc.real_logit.item() == 0


def test_semantic_loss_reaches_images_not_frozen_networks():
    torch.manual_seed(0)
    seg, clip = StubSegmenter(), StubMaskCLIP()
    x = images(3).requires_grad_(True)
    text_ids = torch.randint(1, 50, (3, 6))
    per_sample = semantic_loss(x, text_ids, seg, clip, reduction="none")
    with torch.no_grad():
        expected = 1 - clip.pair_similarity(x, seg.probs(x), text_ids)
    assert per_sample.shape == (3,) and torch.allclose(per_sample, expected)
    per_sample.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for net in (seg, clip):
        assert not net.training
        assert all(not p.requires_grad and p.grad is None for p in net.parameters())


def test_stage1_total_mixes_vq_and_semantic_losses_0_9_and_0_1():
    torch.manual_seed(0)
    config = tiny_config(semantic_loss=True, perceptual="segmenter", gan_start_step=100)
    seg, clip = StubSegmenter(), StubMaskCLIP()
    model, loss_fn = VQGAN(config).train(), VQGANLoss(config, segmenter=seg, maskclip=clip)
    loss_fn.train()
    assert not seg.training and not clip.training  # frozen networks stay in eval mode
    x, text_ids = images(2), torch.randint(1, 50, (2, 6))
    parts = loss_fn(x, model(x), step=0, last_layer=model.last_layer_weight, text_ids=text_ids)
    assert parts.perceptual.item() > 0 and 0 < parts.semantic.item() < 2
    assert parts.total.item() == pytest.approx(0.9 * parts.vqgan.item() + 0.1 * parts.semantic.item(), rel=1e-6)
    with pytest.raises(ValueError, match="text_ids"):
        loss_fn(x, model(x), step=0)
    with pytest.raises(ValueError, match="segmenter"):
        VQGANLoss(config)


def test_perceptual_distances_are_zero_for_identical_images(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    x, y = images(2), images(2, seed=1)
    seg_dist = build_perceptual(tiny_config(perceptual="segmenter"), StubSegmenter())
    assert torch.allclose(seg_dist(x, x), torch.zeros(2), atol=1e-6) and (seg_dist(x, y) > 0).all()
    # "lpips": a local safetensors file of torchvision vgg16 weights (random here; never downloaded)
    missing = tiny_config(perceptual="lpips", perceptual_weights=str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match="nope"):
        build_perceptual(missing)
    weights = tmp_path / "vgg16.safetensors"
    save_file({f"features.{k}": v for k, v in make_layers(cfgs["D"])[: VGG16_TAPS[-1] + 1].state_dict().items()},
              str(weights))
    vgg = build_perceptual(tiny_config(perceptual="lpips", perceptual_weights=str(weights)))
    d_same, d_diff = vgg(x, x), vgg(x, y)
    assert torch.allclose(d_same, torch.zeros(2), atol=1e-6) and (d_diff > 0).all()
    assert all(not p.requires_grad for p in vgg.parameters())
    sketch = images(2, channels=1)
    assert vgg(sketch, sketch).abs().max() < 1e-6  # 1-channel inputs are repeated to RGB


# -- training, persistence, control-signal tokenizers -------------------------------------
def test_tiny_vqgan_overfits_eight_images():
    torch.manual_seed(0)
    config = tiny_config(image_size=16, channel_mult=(1, 2), attention=False, ema_decay=0.8,
                         dead_code_threshold=1.0, gan_start_step=10**9)
    model, loss_fn = VQGAN(config).train(), VQGANLoss(config)
    # smooth, structured images (blurred noise) so 8x8 codes can represent them
    x = F.avg_pool2d(images(8, 16), 3, stride=1, padding=1).clamp(-1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    l1s = []
    for step in range(60):
        parts = loss_fn(x, model(x), step=step)
        opt.zero_grad()
        parts.total.backward()
        opt.step()
        l1s.append(parts.l1.item())
    final = sum(l1s[-5:]) / 5
    assert final < 0.5 * sum(l1s[:3]) / 3, l1s  # seen: 0.29 -> 0.06
    # and it reconstructs each image, not the batch's average image
    best_constant_image = (x - x.median(dim=0).values).abs().mean().item()  # 0.13
    assert final < 0.7 * best_constant_image, (final, best_constant_image)


def test_save_load_roundtrip_keeps_ema_codebook(tmp_path):
    torch.manual_seed(0)
    model = VQGAN(tiny_config(kmeans_init=True, dead_code_threshold=1.0, fusion=True)).train()
    x = images(4)
    for _ in range(3):  # k-means init + EMA updates change the codebook buffers
        model(x)
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = VQGAN.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    assert torch.equal(loaded.codebook, model.codebook)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    words = torch.randn(4, 64, 8)
    assert torch.equal(loaded.encode(x, words), model.encode(x, words))
    assert torch.equal(loaded.decode(loaded.encode(x)), model.decode(model.encode(x)))


def test_grown_decoder_starts_as_the_trained_one_and_its_new_blocks_learn(tmp_path):
    """decoder_refine_blocks: a decoder grown from a trained one (non-strict warm start, as
    ``train.vqgan.init_strict=false`` loads it) decodes exactly as before until it trains, and
    the new blocks receive gradient."""
    from armani.training.engine import warm_start

    torch.manual_seed(0)
    trained = VQGAN(tiny_config()).eval()
    trained.save_pretrained(tmp_path / "trained")
    grown = VQGAN(tiny_config(decoder_refine_blocks=2))
    skipped = warm_start({"vqgan": grown}, tmp_path / "trained", "vqgan", strict=False)["skipped"]
    assert skipped and all(name.startswith("decoder.refine.") for name in skipped)
    grown.eval()
    ids = trained.encode(images())
    assert torch.equal(grown.decode(ids), trained.decode(ids))
    grown.decode(ids).square().mean().backward()
    last = grown.decoder.refine[-1].body[-1].weight
    assert last.grad is not None and last.grad.abs().sum() > 0
    # without the option the decoder's parameter names are those of every earlier checkpoint
    assert not any(".refine." in name for name in trained.state_dict())
    with pytest.raises(ValueError, match="decoder_refine_blocks"):
        tiny_config(decoder_refine_blocks=-1)


def test_corrupt_or_mismatched_checkpoint_gives_one_clear_error(tmp_path):
    model = VQGAN(tiny_config())
    model.save_pretrained(tmp_path / "ok")
    with pytest.raises(CheckpointError, match="needs config.json"):
        VQGAN.from_pretrained(tmp_path / "missing")
    # mismatched config: another codebook size than the weights
    bad = tmp_path / "ok"
    data = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**data, "codebook_size": 64}))
    with pytest.raises(CheckpointError, match="another config"):
        VQGAN.from_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({**data, "codebok_size": 64}))
    with pytest.raises(CheckpointError, match="codebok_size"):
        VQGAN.from_pretrained(bad)
    # corrupt weights file
    (bad / "config.json").write_text(json.dumps(data))
    raw = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        VQGAN.from_pretrained(bad)


@pytest.mark.parametrize("in_channels", [1, 4])
def test_control_signal_tokenizers(in_channels):
    """Sketch (1 channel) and partial image (RGB + keep mask) tokenizers: same class."""
    torch.manual_seed(0)
    config = tiny_config(in_channels=in_channels, out_channels=in_channels, codebook_size=256,
                         channel_mult=(1, 2, 2, 2), fusion=False, semantic_loss=False)
    model, loss_fn = VQGAN(config).train(), VQGANLoss(config)
    assert (model.grid_size, model.codebook_size) == (4, 256)
    config64 = dataclasses.replace(config, image_size=64, base_channels=8, code_dim=8)
    assert VQGAN(config64).grid_size == 8  # the shipped 8x8 control grid at 64 px
    x = images(2, channels=in_channels)
    out = model(x)
    assert out.reconstruction.shape == x.shape and out.ids.shape == (2, 16)
    parts = loss_fn(x, out, step=10, last_layer=model.last_layer_weight)
    parts.total.backward()
    assert torch.isfinite(parts.total) and parts.gan.item() != 0
    model.eval()
    assert model.decode(model.encode(x)).shape == x.shape
    with pytest.raises(ValueError, match="out_channels=3"):
        VQGANLoss(dataclasses.replace(config, semantic_loss=True), StubSegmenter(), StubMaskCLIP())


def test_stage1_step_with_the_real_maskclip_and_segmenter():
    """Eq. 9-11 end to end with tiny real MaskCLIP / segmenter: words in, codes and words out."""
    from armani.evaluation.codebook_health import token_words, words_per_code
    from armani.models.maskclip import MaskCLIP, MaskCLIPConfig
    from armani.models.segmenter import Segmenter, SegmenterConfig
    from armani.text import GarmentTokenizer

    torch.manual_seed(0)
    captions = ["a red shirt with five buttons", "a blue hoodie with a zip and two pockets"]
    tok = GarmentTokenizer.from_corpus(captions, context_length=12)
    text = tok(captions)
    clip = MaskCLIP(MaskCLIPConfig.from_tokenizer(
        tok, image_size=32, grid=8, vision_width=16, vision_layers=1, vision_heads=2,
        text_width=16, text_layers=1, text_heads=2, embed_dim=8))
    seg = Segmenter(SegmenterConfig(base_channels=8, channel_mults=(1, 2), groups=4))
    config = tiny_config(fusion=True, fusion_dim=clip.config.embed_dim, semantic_loss=True,
                         perceptual="segmenter", gan_start_step=100)
    model, loss_fn = VQGAN(config).train(), VQGANLoss(config, segmenter=seg, maskclip=clip)
    x = images(2)
    with torch.no_grad():
        word_tokens, word_index = clip.best_words(x, seg.probs(x), text.ids)
    assert word_tokens.shape == (2, model.num_tokens, 8)
    out = model(x, word_tokens, word_index)
    parts = loss_fn(x, out, step=0, last_layer=model.last_layer_weight, text_ids=text.ids)
    parts.total.backward()
    assert parts.semantic.item() > 0 and parts.perceptual.item() > 0
    assert model.word_proj.weight.grad is not None and model.word_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in list(clip.parameters()) + list(seg.parameters()))
    table = words_per_code(out.ids, word_index, token_words(text.word_ids, text.words))
    fused_words = {w for row in table.values() for w, _ in row}
    assert fused_words and fused_words <= set(text.words[0]) | set(text.words[1])
