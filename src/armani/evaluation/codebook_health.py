"""Codebook health: how many codes are used, how evenly, and which words each code absorbed.

A VQ codebook can silently collapse to a handful of codes; these numbers catch it.
``perplexity`` is ``exp(entropy)`` of the empirical code distribution: the number of
equally-used codes that would give the same entropy (1 = collapse, ``codebook_size`` =
perfectly even use). For the cross-modal codebook, :func:`words_per_code` shows what the
fusion of Eq. 9 taught each code, e.g. ``code 417 <- button (12), buttons (5), five (2)``.

With product quantisation, ids ``(B, N, G)`` index G different sub-codebooks; pass one
group at a time (``ids[..., g]``) to get per-group statistics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

WordsTable = dict[int, list[tuple[str, int]]]


@dataclass
class CodebookStats:
    usage_fraction: float  # used / codebook_size
    used: int  # codes seen at least once
    dead: int  # codes never seen
    perplexity: float  # exp(entropy) of the code frequencies
    counts: torch.Tensor  # (codebook_size,) int64 occurrences of each code


def codebook_stats(ids: torch.Tensor, codebook_size: int) -> CodebookStats:
    """Statistics of token ids of any shape, all drawn from one codebook of ``codebook_size``."""
    flat = torch.as_tensor(ids).reshape(-1).long().cpu()
    if flat.numel() == 0:
        raise ValueError("codebook_stats needs at least one id")
    if flat.min() < 0 or flat.max() >= codebook_size:
        raise ValueError(f"ids must lie in [0, {codebook_size}), got [{int(flat.min())}, {int(flat.max())}]")
    counts = torch.bincount(flat, minlength=codebook_size)  # (K,)
    probs = counts.double() / counts.sum()
    nonzero = probs[probs > 0]
    entropy = float(-(nonzero * nonzero.log()).sum())
    used = int((counts > 0).sum())
    return CodebookStats(
        usage_fraction=used / codebook_size,
        used=used,
        dead=codebook_size - used,
        perplexity=float(torch.tensor(entropy).exp()),
        counts=counts,
    )


def token_words(word_ids: torch.Tensor, words: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per sample, the word at each token position (None for SOT/EOT/PAD).

    ``word_ids`` (B, L) and ``words`` come from :class:`armani.text.TokenizedText`; the
    result is what :func:`words_per_code` needs when ``word_index`` holds token positions.
    """
    return [[words[b][w] if w >= 0 else None for w in row] for b, row in enumerate(word_ids.tolist())]


def words_per_code(
    code_ids: torch.Tensor,
    word_index: torch.Tensor,
    words: Sequence[Sequence[str | None]],
    top: int = 3,
) -> WordsTable:
    """Which words were fused into each code: ``{code: [(word, count), ...]}``, top ``top``.

    code_ids (B, N): the code of each cell; word_index (B, N): the index, into ``words[b]``,
    of the word fused into that cell (-1 = none; see :func:`token_words`). Words are counted
    per cell; ties are broken alphabetically; codes that never met a word are left out.
    """
    if code_ids.shape != word_index.shape or code_ids.ndim != 2:
        raise ValueError(
            f"code_ids and word_index must both be (B, N), got {tuple(code_ids.shape)} and {tuple(word_index.shape)}"
        )
    if len(words) != code_ids.shape[0]:
        raise ValueError(f"words has {len(words)} samples, code_ids has {code_ids.shape[0]}")
    counters: dict[int, Counter] = {}
    for b, (codes, indices) in enumerate(zip(code_ids.tolist(), word_index.tolist())):
        for code, index in zip(codes, indices):
            if index < 0:
                continue
            word = words[b][index]
            if word is None:
                continue
            counters.setdefault(code, Counter())[word] += 1
    return {
        code: sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:top]
        for code, counter in sorted(counters.items())
    }


def codes_per_word(
    code_ids: torch.Tensor,
    word_index: torch.Tensor,
    words: Sequence[Sequence[str | None]],
    vocabulary: Iterable[str] | None = None,
    top: int = 3,
) -> dict[str, tuple[int, list[tuple[int, int]]]]:
    """The other way round from :func:`words_per_code`: for each word, how many cells it was
    fused into and its ``top`` codes, ``{word: (cells, [(code, count), ...])}``. Only words
    of ``vocabulary`` when given (e.g. the part words: "button -> code 417 in 23% of its
    cells"). Same inputs as :func:`words_per_code`."""
    keep = None if vocabulary is None else set(vocabulary)
    counters: dict[str, Counter] = {}
    for b, (codes, indices) in enumerate(zip(code_ids.tolist(), word_index.tolist())):
        for code, index in zip(codes, indices):
            word = words[b][index] if index >= 0 else None
            if word is None or (keep is not None and word.lower() not in keep):
                continue
            counters.setdefault(word.lower(), Counter())[code] += 1
    return {
        word: (sum(c.values()), sorted(c.items(), key=lambda item: (-item[1], item[0]))[:top])
        for word, c in sorted(counters.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    }


def format_codes_per_word(table: dict[str, tuple[int, list[tuple[int, int]]]]) -> str:
    """``| word | cells | codes (share of the word's cells) |``, most fused words first."""
    lines = ["| word | cells | codes (share of the word's cells) |", "|---|---:|---|"]
    for word, (cells, codes) in table.items():
        cell = ", ".join(f"{code} ({100 * count / cells:.0f}%)" for code, count in codes)
        lines.append(f"| {word} | {cells} | {cell} |")
    return "\n".join(lines)


def format_words_table(table: WordsTable, stats: CodebookStats | None = None, max_rows: int | None = 50) -> str:
    """A Markdown table, one row per code: ``| code | uses | words |``.

    Rows are ordered by how often the code is used (``stats``), else by how many words it met.
    """
    def uses(code: int) -> int:
        return int(stats.counts[code]) if stats is not None else sum(c for _, c in table[code])

    codes = sorted(table, key=lambda code: (-uses(code), code))
    if max_rows is not None:
        codes = codes[:max_rows]
    lines = ["| code | uses | words |", "|---:|---:|---|"]
    for code in codes:
        cell = ", ".join(f"{word} ({count})" for word, count in table[code])
        lines.append(f"| {code} | {uses(code)} | {cell} |")
    return "\n".join(lines)


def plot_codebook_health(stats: CodebookStats, words_table: WordsTable | None = None, top_codes: int = 12):
    """Sorted code-usage histogram (perplexity in the title), plus the top codes' words."""
    import matplotlib.pyplot as plt

    counts = stats.counts.sort(descending=True).values.numpy()
    ncols = 2 if words_table else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 3.5), squeeze=False)
    ax = axes[0, 0]
    ax.bar(range(len(counts)), counts, width=1.0, color="tab:blue")
    ax.set_yscale("symlog")
    ax.set_xlabel("codes, most used first")
    ax.set_ylabel("occurrences")
    ax.set_title(
        f"perplexity {stats.perplexity:.1f} of {len(counts)} | used {stats.used} "
        f"({100 * stats.usage_fraction:.0f}%) | dead {stats.dead}"
    )
    if words_table:
        text_ax = axes[0, 1]
        text_ax.axis("off")
        codes = sorted(words_table, key=lambda c: (-int(stats.counts[c]), c))[:top_codes]
        lines = [f"code {c} <- " + ", ".join(w for w, _ in words_table[c]) for c in codes]
        text_ax.text(0.0, 1.0, "\n".join(lines), va="top", family="monospace", fontsize=8)
        text_ax.set_title("words fused into the most used codes")
    fig.tight_layout()
    return fig


__all__ = [
    "CodebookStats",
    "codebook_stats",
    "format_words_table",
    "plot_codebook_health",
    "token_words",
    "words_per_code",
]
