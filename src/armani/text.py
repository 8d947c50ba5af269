"""Text tokenization: CLIP's byte-pair encoding (shipped inside open_clip, so it works offline),
with word bookkeeping for word-part heatmaps and an optional compact vocabulary.

Why a compact vocabulary: CLIP's BPE has 49,408 entries, so every text embedding table
costs 49,408 x width parameters even though garment captions use a few hundred of them.
The small checkpoints shipped in the repo keep only the BPE ids seen in the training
corpus (plus PAD/SOT/EOT/UNK); the paper-scale config keeps the full vocabulary, which is
what pretrained open_clip text weights expect. Either way the tokenization itself is
open_clip's; only the id numbering differs.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from open_clip.tokenizer import SimpleTokenizer

_BPE: SimpleTokenizer | None = None


def _bpe() -> SimpleTokenizer:
    """One shared open_clip BPE (its vocabulary file ships with the package)."""
    global _BPE
    if _BPE is None:
        _BPE = SimpleTokenizer()
    return _BPE


@dataclass
class TokenizedText:
    """A tokenized batch.

    ids:      (B, L) int64 token ids, PAD after EOT.
    word_ids: (B, L) int64 index of the word each token belongs to, -1 for SOT/EOT/PAD.
    words:    per sample, the words in order (``words[b][word_ids[b, t]]`` is token t's word).
    truncated: per sample, whether tokens were dropped to fit the context length.
    """

    ids: torch.Tensor
    word_ids: torch.Tensor
    words: list[list[str]]
    truncated: list[bool]

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, L) bool, True for SOT, content tokens and EOT."""
        return self.ids != 0  # PAD is always id 0

    @property
    def content_mask(self) -> torch.Tensor:
        """(B, L) bool, True only for word tokens (the ones MaskCLIP compares with parts)."""
        return self.word_ids >= 0


class GarmentTokenizer:
    """CLIP BPE tokenizer with a fixed context length and an optional compact vocabulary.

    Ids: PAD is always 0. With ``vocab=None`` the ids are open_clip's own (SOT 49406, EOT
    49407); with a compact ``vocab`` (a list of kept BPE ids) they are 0 PAD, 1 SOT, 2 EOT,
    3 UNK, then 4 + position in ``vocab``. BPE ids outside the vocabulary become UNK.
    """

    PAD, SOT, EOT, UNK = 0, 1, 2, 3
    NUM_SPECIAL = 4

    def __init__(self, context_length: int = 32, vocab: Sequence[int] | None = None):
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3 (SOT, one word, EOT), got {context_length}")
        self.context_length = int(context_length)
        self.vocab = None if vocab is None else [int(v) for v in vocab]
        bpe = _bpe()
        self._bpe_sot = bpe.encoder["<start_of_text>"]
        self._bpe_eot = bpe.encoder["<end_of_text>"]
        if self.vocab is None:
            self._to_compact = None
            self.sot_id, self.eot_id, self.unk_id = self._bpe_sot, self._bpe_eot, None
            self.vocab_size = len(bpe.encoder)
        else:
            self._to_compact = {b: i + self.NUM_SPECIAL for i, b in enumerate(self.vocab)}
            self.sot_id, self.eot_id, self.unk_id = self.SOT, self.EOT, self.UNK
            self.vocab_size = self.NUM_SPECIAL + len(self.vocab)
        self.pad_id = 0

    # -- words and BPE ------------------------------------------------------------------
    @staticmethod
    def clean(text: str) -> str:
        """open_clip's own cleaning (ftfy, html unescape, whitespace, lower case)."""
        from open_clip.tokenizer import basic_clean, whitespace_clean

        return whitespace_clean(basic_clean(text)).lower()

    def _words_and_bpe(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """Split cleaned text into BPE tokens; return the words and (bpe_id, word_index) pairs.

        A word is one BPE pre-token (open_clip's regex split), so "long-sleeved" is three
        words: "long", "-", "sleeved". Sub-word pieces of one word share its index.
        """
        import regex

        bpe = _bpe()
        words: list[str] = []
        pieces: list[tuple[int, int]] = []
        for token in regex.findall(bpe.pat, self.clean(text)):
            token_bytes = "".join(bpe.byte_encoder[b] for b in token.encode("utf-8"))
            ids = [bpe.encoder[p] for p in bpe.bpe(token_bytes).split(" ")]
            words.append(token)
            pieces.extend((i, len(words) - 1) for i in ids)
        return words, pieces

    def words(self, text: str) -> list[str]:
        return self._words_and_bpe(text)[0]

    def _map(self, bpe_id: int) -> int:
        if self._to_compact is None:
            return bpe_id
        return self._to_compact.get(bpe_id, self.UNK)

    # -- batch encoding -----------------------------------------------------------------
    def __call__(self, texts: str | Iterable[str], warn: bool = True) -> TokenizedText:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        L = self.context_length
        ids = torch.zeros(len(texts), L, dtype=torch.long)
        word_ids = torch.full((len(texts), L), -1, dtype=torch.long)
        all_words: list[list[str]] = []
        truncated: list[bool] = []
        for b, text in enumerate(texts):
            words, pieces = self._words_and_bpe(text)
            cut = len(pieces) > L - 2
            if cut:
                pieces = pieces[: L - 2]
                words = words[: pieces[-1][1] + 1] if pieces else []
                if warn:
                    warnings.warn(
                        f"text has more than {L - 2} tokens and was truncated to fit the "
                        f"context length: {text[:60]!r}...",
                        stacklevel=2,
                    )
            row = [self.sot_id] + [self._map(p) for p, _ in pieces] + [self.eot_id]
            ids[b, : len(row)] = torch.tensor(row)
            if pieces:
                word_ids[b, 1 : 1 + len(pieces)] = torch.tensor([w for _, w in pieces])
            all_words.append(words)
            truncated.append(cut)
        return TokenizedText(ids=ids, word_ids=word_ids, words=all_words, truncated=truncated)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Ids back to text; specials and padding are dropped, unknown ids show as '<unk>'."""
        bpe = _bpe()
        inverse = None if self.vocab is None else {i + self.NUM_SPECIAL: b for i, b in enumerate(self.vocab)}
        words, piece = [], []
        for i in ids.tolist() if isinstance(ids, torch.Tensor) else ids:
            if i in (self.pad_id, self.sot_id, self.eot_id):
                continue
            if inverse is not None and i not in inverse:
                words.append("<unk>")
                continue
            token = bpe.decoder[i if inverse is None else inverse[i]]
            piece.append(token)
            if token.endswith("</w>"):
                text = "".join(piece).removesuffix("</w>")
                words.append(bytearray(bpe.byte_decoder[c] for c in text).decode("utf-8", errors="replace"))
                piece = []
        return " ".join(words)

    # -- vocabulary building and persistence --------------------------------------------
    @classmethod
    def from_corpus(cls, texts: Iterable[str], context_length: int = 32) -> "GarmentTokenizer":
        """A compact-vocabulary tokenizer holding every BPE id used in ``texts``."""
        probe = cls(context_length=context_length)
        seen: set[int] = set()
        for text in texts:
            seen.update(p for p, _ in probe._words_and_bpe(text)[1])
        return cls(context_length=context_length, vocab=sorted(seen))

    def to_dict(self) -> dict:
        return {"context_length": self.context_length, "vocab": self.vocab}

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "tokenizer.json").write_text(json.dumps(self.to_dict()))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "GarmentTokenizer":
        file = Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path}")
        try:
            data = json.loads(file.read_text())
            return cls(context_length=data["context_length"], vocab=data.get("vocab"))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{file} is not a valid GarmentTokenizer file: {err}") from err
