"""Codebook health: usage, perplexity, dead codes, and the words each code absorbed."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

from armani.evaluation.codebook_health import (
    codebook_stats,
    format_words_table,
    plot_codebook_health,
    token_words,
    words_per_code,
)
from armani.text import GarmentTokenizer

matplotlib.use("Agg")


def test_stats_on_known_ids():
    # 4 codes used equally out of 8: perplexity 4, half the codebook dead
    stats = codebook_stats(torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]), codebook_size=8)
    assert (stats.used, stats.dead, stats.usage_fraction) == (4, 4, 0.5)
    assert stats.perplexity == pytest.approx(4.0)
    assert stats.counts.tolist() == [2, 2, 2, 2, 0, 0, 0, 0]
    # collapse: one code -> perplexity 1
    assert codebook_stats(torch.full((3, 5, 2), 6), 8).perplexity == pytest.approx(1.0)
    # uneven use: p = (3/4, 1/4) -> exp(H)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert codebook_stats(torch.tensor([5, 5, 5, 1]), 8).perplexity == pytest.approx(math.exp(h))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        codebook_stats(torch.tensor([8]), 8)


def test_words_per_code_on_a_hand_built_example():
    code_ids = torch.tensor([[417, 417, 417, 3], [417, 3, 9, 9]])
    word_index = torch.tensor([[0, 1, 0, 2], [1, -1, 0, 0]])
    words = [["button", "buttons", "collar"], ["five", "button"]]
    table = words_per_code(code_ids, word_index, words, top=3)
    # 417 met: button (sample 0 idx 0, twice), buttons (sample 0 idx 1), button (sample 1 idx 1)
    assert table == {
        3: [("collar", 1)],  # sample 1's cell with code 3 has no word
        9: [("five", 2)],
        417: [("button", 3), ("buttons", 1)],
    }
    assert words_per_code(code_ids, word_index, words, top=1)[417] == [("button", 3)]
    markdown = format_words_table(table)
    lines = markdown.splitlines()
    assert lines[0] == "| code | uses | words |"
    assert lines[2] == "| 417 | 4 | button (3), buttons (1) |"  # most words first
    stats = codebook_stats(code_ids, 512)
    assert format_words_table(table, stats).splitlines()[2].startswith("| 417 | 4 |")
    assert len(format_words_table(table, max_rows=1).splitlines()) == 3


def test_codes_per_word_is_the_reverse_view():
    from armani.evaluation.codebook_health import codes_per_word, format_codes_per_word

    code_ids = torch.tensor([[417, 417, 417, 3], [417, 3, 9, 9]])
    word_index = torch.tensor([[0, 1, 0, 2], [1, -1, 0, 0]])
    words = [["button", "Buttons", "collar"], ["five", "button"]]
    table = codes_per_word(code_ids, word_index, words)
    assert table == {"button": (3, [(417, 3)]), "five": (2, [(9, 2)]), "buttons": (1, [(417, 1)]),
                     "collar": (1, [(3, 1)])}
    only_parts = codes_per_word(code_ids, word_index, words, vocabulary={"button", "collar"})
    assert list(only_parts) == ["button", "collar"]
    lines = format_codes_per_word(only_parts).splitlines()
    assert lines[2] == "| button | 3 | 417 (100%) |"


def test_token_words_maps_token_positions_to_words():
    tok = GarmentTokenizer(context_length=12)
    text = tok(["five buttons and a collar"])
    per_token = token_words(text.word_ids, text.words)
    assert per_token[0][0] is None  # SOT
    assert per_token[0][1] == "five"
    present = [w for w in per_token[0] if w is not None]
    assert present == ["five", "buttons", "and", "a", "collar"]
    # MaskCLIP.best_words returns token positions; this is how they become words
    code_ids = torch.tensor([[7, 7, 2]])
    word_index = torch.tensor([[2, 2, 5]])  # tokens "buttons", "buttons", "collar"
    assert words_per_code(code_ids, word_index, per_token) == {2: [("collar", 1)], 7: [("buttons", 2)]}


def test_plot_has_sorted_histogram_and_perplexity_title():
    ids = torch.tensor([0] * 5 + [1] * 3 + [2])
    stats = codebook_stats(ids, 6)
    fig = plot_codebook_health(stats, {0: [("button", 2)], 1: [("pocket", 1)]})
    ax = fig.axes[0]
    assert f"perplexity {stats.perplexity:.1f}" in ax.get_title()
    heights = [p.get_height() for p in ax.patches]
    assert heights == [5, 3, 1, 0, 0, 0]
    assert "code 0 <- button" in fig.axes[1].texts[0].get_text()
    assert len(plot_codebook_health(stats).axes) == 1
