"""Moving a stage-2 transformer onto a new image codebook: co-located codes re-point its image
embedding and head, and a renumbered codebook is followed exactly."""

import pytest
import torch
from test_transformer import inputs, tiny_config

from armani.models.transformer import CrossModalTransformer
from armani.training.codebook_transplant import colocation_counts, mutual_information, transplant


def test_a_renumbered_codebook_gets_the_same_predictions_renumbered():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = CrossModalTransformer(cfg).eval()
    text, sketch, partial, old_ids = inputs(cfg, B=64)
    perm = torch.randperm(cfg.image_codebook_size)  # new code perm[i] is old code i
    new_ids = perm[old_ids]
    counts = colocation_counts(old_ids, new_ids, cfg.image_codebook_size, cfg.image_codebook_size)
    moved = transplant(model, counts).eval()
    with torch.no_grad():
        before = model(text, sketch, partial, old_ids)
        after = moved(text, sketch, partial, new_ids)
    torch.testing.assert_close(after[..., perm], before, rtol=1e-5, atol=1e-5)
    assert mutual_information(counts)["mutual_information"] == pytest.approx(
        mutual_information(counts)["entropy_new"], abs=1e-5)  # a renumbering loses nothing
    # the trunk is copied, not re-drawn
    torch.testing.assert_close(moved.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight, rtol=0, atol=0)


def test_a_finer_codebook_gets_count_weighted_rows_and_its_own_size(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = CrossModalTransformer(cfg)
    old = torch.tensor([[0, 0, 0, 1]])
    new = torch.tensor([[5, 5, 7, 5]])  # new 5: old 0 twice, old 1 once; new 7: old 0; the rest unseen
    counts = colocation_counts(old, new, cfg.image_codebook_size, 40)
    moved = transplant(model, counts)
    assert moved.config.image_codebook_size == 40
    emb, head = model.image_emb.weight.detach(), model.head.weight.detach()
    new_emb, new_head = moved.image_emb.weight.detach(), moved.head.weight.detach()
    assert new_emb.shape == (41, cfg.width) and new_head.shape == (40, cfg.width)
    torch.testing.assert_close(new_emb[5], (2 * emb[0] + emb[1]) / 3)
    torch.testing.assert_close(new_head[7], head[0])
    torch.testing.assert_close(new_head[0], (3 * head[0] + head[1]) / 4)  # unseen: overall frequency
    torch.testing.assert_close(new_emb[40], emb[cfg.image_codebook_size])  # the [MASK] row
    moved.save_pretrained(tmp_path / "moved")
    assert CrossModalTransformer.from_pretrained(tmp_path / "moved").config.image_codebook_size == 40


def test_grids_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="same images on the same grid"):
        colocation_counts(torch.zeros(2, 9, dtype=torch.long), torch.zeros(2, 16, dtype=torch.long), 16, 16)


def test_the_command_tokenizes_training_rows_with_both_codebooks(tiny_run, tmp_path):
    import json

    from armani.training.codebook_transplant import main

    # the run's own codebook as the "new" one: every id kept, so nothing is lost
    assert main(["--checkpoint", str(tiny_run), "--vqgan", str(tiny_run / "vqgan" / "final"), "--rows", "16",
                 "--out", str(tmp_path / "moved")]) == 0
    report = json.loads((tmp_path / "moved" / "transplant.json").read_text())
    assert report["ids_unchanged"] == 1.0 and report["rows"] == 16
    assert report["mutual_information"] == pytest.approx(report["entropy_new"], abs=1e-5)
    moved = CrossModalTransformer.from_pretrained(tmp_path / "moved")
    base = CrossModalTransformer.from_pretrained(tiny_run / "transformer" / "final")
    seen = [int(i) for i in range(base.config.image_codebook_size)
            if torch.equal(moved.head.weight[i], base.head.weight[i])]
    assert len(seen) == report["new_codes_seen"]  # a code seen at its own cells keeps its row
