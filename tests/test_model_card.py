"""The model card's Reproduce section states the commands that really made a run."""

from __future__ import annotations

from armani.config import load_config
from armani.model_card import reproduce_lines


def test_reproduce_lists_real_commands_reuse_notes_and_warm_starts():
    cfg = load_config("default")
    reports = {
        "segmenter": {"note": "reconstructed from an earlier card"},
        "maskclip": {"command": "src/armani/train.py --config default --stage maskclip,vqgan --output runs/v2"},
        "vqgan": {"command": "src/armani/train.py --config default --stage maskclip,vqgan --output runs/v2"},
        "transformer": {"command": "src/armani/train.py --config default --stage transformer --output runs/v2",
                        "init_from": "checkpoints/armani/transformer"},
    }
    text = "\n".join(reproduce_lines(cfg, reports))
    assert text.count("python src/armani/train.py --config default --stage maskclip,vqgan") == 1  # deduplicated
    assert "--stage transformer" in text
    assert "segmenter (mask prediction network M): reconstructed from an earlier card." in text
    assert "warm-started from `checkpoints/armani/transformer`" in text
    assert "From scratch, the same budgets: `accelerate launch src/armani/train.py --config default --stage all" in text


def test_reproduce_without_recorded_commands_gives_the_default_command():
    text = "\n".join(reproduce_lines(load_config("tiny"), {"segmenter": {}}))
    assert "accelerate launch src/armani/train.py --config tiny --stage all --output runs/tiny" in text
    assert "Not every stage" not in text
