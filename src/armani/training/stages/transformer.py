"""Stage 2: the cross-modal transformer (Sec. 3.4, Eq. 12-14).

The frozen stage-1 tokenizers turn every training row into token ids once, before the
loop (``RUN/transformer/tokens-<split>.safetensors``): image tokens through the
cross-modal codebook (fused with the caption's words, Eq. 9), sketch tokens, and
partial-image tokens of one random crop per row (the dataset's epoch-0 draw; 20k rows give
20k different crops), or of ``transformer.condition_views`` draws per row that the epochs
take in turn. Re-encoding every batch would cost more than the transformer step on a CPU.
The loop then only reads ids. The semantic loss (Eq. 14) decodes the predicted code
distributions softly and scores them with the frozen segmenter and MaskCLIP.
"""

from __future__ import annotations

import shutil
from functools import cached_property
from pathlib import Path

import torch
from tqdm.auto import tqdm

from armani.models.checkpoint import replace_atomically
from armani.models.cross_modal_encoding import encode_cross_modal
from armani.models.losses import semantic_loss
from armani.models.transformer import CrossModalTransformer
from armani.models.vqgan import VQGAN
from armani.sampling import garment_token_mask
from armani.training.engine import ForwardAs, StepOutput, register_stage
from armani.training.stages.base import GarmentStage, part_probs_for
from armani.training.stages.tokenizers import encode_conditions

# Rows per saved part while tokenizing (see TransformerStage._tokenize): about 2-3 minutes of
# default-size rows on this 2-core CPU, so a killed run loses at most that.
TOKENIZE_PART_ROWS = 4096

TOKEN_KEYS = ("text_ids", "image_ids", "sketch_ids", "partial_ids", "index", "garment_tokens")


def garment_background_ce(batches) -> dict[str, float]:
    """Mean CE over garment and over background tokens, from ``(per-token CE (B, N), garment
    mask (B, N) bool)`` pairs: ``{"ce_garment", "ce_background"}`` (a part with no token is left out)."""
    sums = {"garment": [0.0, 0], "background": [0.0, 0]}
    for per_token, garment in batches:
        for name, where in (("garment", garment), ("background", ~garment)):
            sums[name][0] += per_token[where].sum().item()
            sums[name][1] += int(where.sum())
    return {f"ce_{name}": total / count for name, (total, count) in sums.items() if count}


# The condition tokens that can hold several draws per row: (N, V, L) instead of (N, L).
VIEWED_KEYS = ("sketch_ids", "partial_ids")


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its convolution weights in channels-last layout (other tensors unchanged)."""
    return model.to(memory_format=torch.channels_last)


@torch.no_grad()
def encode_image_tokens(batch: dict, vqgan: VQGAN, helpers: dict) -> torch.Tensor:
    """A collated batch's images -> the image token ids stage 2 trains on (cross-modal: fused
    with the caption's MaskCLIP words and the part masks, the segmenter's where a row has none).
    ``helpers`` holds the segmenter and MaskCLIP a cross-modal codebook encodes with."""
    probs = part_probs_for(batch, helpers.get("segmenter")) if vqgan.config.fusion else None
    return encode_cross_modal(vqgan, batch["image"], batch["text_ids"], part_probs=probs,
                              maskclip=helpers.get("maskclip"))[0]


@torch.no_grad()
def tokenize_batch(batch: dict, vqgan: VQGAN, sketch: VQGAN, partial: VQGAN, helpers: dict,
                   image: bool = True) -> dict[str, torch.Tensor]:
    """One collated batch -> the token tensors stage 2 trains on: sketch and partial ids, and
    with ``image`` the image ids (cross-modal: fused with the caption's MaskCLIP words), text
    ids, row index and which image tokens cover the garment. ``helpers`` holds the segmenter
    and MaskCLIP a cross-modal codebook encodes with."""
    sketch_ids, partial_ids = encode_conditions(batch, sketch, partial)
    out = {"sketch_ids": sketch_ids, "partial_ids": partial_ids}
    if image:
        out["image_ids"] = encode_image_tokens(batch, vqgan, helpers)
        out["text_ids"], out["index"] = batch["text_ids"], batch["index"]
        # which image tokens cover a garment pixel (any part but background), for
        # transformer.background_weight; a row without a mask is all background
        out["garment_tokens"] = garment_token_mask(batch["mask"], vqgan.grid_size).to(torch.uint8)
    return out


def condition_views(tensors: dict[str, torch.Tensor]) -> int:
    """How many draws of the sketch / partial crop a token file holds per row (1: (N, L))."""
    return tensors["partial_ids"].shape[1] if tensors["partial_ids"].dim() == 3 else 1


def _part_path(parts_dir: Path, view: int, first: int, end: int) -> Path:
    """The saved part holding rows ``first..end-1`` of draw ``view`` while tokenizing."""
    return parts_dir / f"draw{view}-rows{first:08d}-{end:08d}.safetensors"


def _save_tokens(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """A token file or part: there whole or not at all."""
    from safetensors.torch import save_file

    replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


class TokenDataset(torch.utils.data.Dataset):
    """Rows of pre-computed token ids: a dict of equally long tensors. Sketch and partial ids
    of shape (N, V, L) hold V draws per row; epoch ``e`` (:meth:`set_epoch`, called by the
    engine before each epoch, also on resume) reads draw ``e mod V``."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        lengths = {len(v) for v in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"token tensors of unequal length: { {k: len(v) for k, v in tensors.items()} }")
        self.tensors = tensors
        self.views = condition_views(tensors)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.tensors["index"])

    def __getitem__(self, i):
        view = self.epoch % self.views
        return {k: v[i, view] if k in VIEWED_KEYS and v.dim() == 3 else v[i] for k, v in self.tensors.items()}


@register_stage
class TransformerStage(GarmentStage):
    name = "transformer"

    # The frozen conv models run with channels-last weights: oneDNN's convolutions are faster in
    # that layout here (tokenizing 1.15x faster, research/bench_tokenizing.py; 3 of 196,608 ids
    # differ from the plain layout, near-ties of the nearest code).
    @cached_property
    def tokenizers(self) -> dict[str, VQGAN]:
        return {
            "vqgan": channels_last(VQGAN.from_pretrained(self.artefact_dir("vqgan")).eval()),
            "sketch": channels_last(VQGAN.from_pretrained(self.artefact_dir("sketch_tokenizer")).eval()),
            "partial": channels_last(VQGAN.from_pretrained(self.artefact_dir("partial_tokenizer")).eval()),
        }

    @cached_property
    def helpers(self) -> dict:
        c, out = self.config, {}
        if c.vqgan.fusion or c.transformer.semantic_loss or self.cfg.data.source != "procedural":
            from armani.models.maskclip import MaskCLIP
            from armani.models.segmenter import Segmenter

            out["segmenter"] = channels_last(Segmenter.from_pretrained(self.artefact_dir("segmenter")).eval())
            out["maskclip"] = channels_last(MaskCLIP.from_pretrained(self.artefact_dir("maskclip")).eval())
        return out

    # -- data: token ids, computed once ----------------------------------------------------
    @torch.no_grad()
    def tokenize_split(self, dataset, split: str) -> dict[str, torch.Tensor]:
        acc = self.accelerator
        path = self.stage_dir() / f"tokens-{split}.safetensors"
        tc = self.config.transformer
        train = split == "train"
        # what the condition tokens were drawn with, kept in the file's metadata
        recipe = {"condition_views": str(tc.condition_views if train else 1),
                  "drawn_sketch_prob": repr(float(tc.drawn_sketch_prob if train else 0.0))}
        if train and self.optim.first_row:  # a file of other rows is refused, not read as these
            recipe["first_row"] = str(int(self.optim.first_row))
        with acc.main_process_first():
            if not path.is_file() or self._grow(path, dataset, recipe):
                self._tokenize(dataset, split, path, recipe)
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            stored = f.metadata() or {}
        # a file from before the metadata was written holds one Canny view of rows from 0
        defaults = {"condition_views": "1", "drawn_sketch_prob": repr(0.0), "first_row": "0"}
        stored, wanted = {**defaults, **stored}, {**defaults, **recipe}
        if any(stored[k] != v for k, v in wanted.items()):
            raise ValueError(f"{path} holds tokens made with { {k: stored[k] for k in wanted} }, this run asks for "
                             f"{wanted}: delete it to tokenize again")
        tensors = load_file(str(path))
        if len(tensors["index"]) != len(dataset):
            raise ValueError(f"{path} holds {len(tensors['index'])} rows, this run's {split} split has "
                             f"{len(dataset)} (data.num_train / train.transformer.num_train changed?): "
                             "delete it to tokenize again")
        if "garment_tokens" not in tensors and tc.background_weight != 1.0:
            raise ValueError(f"{path} was tokenized before garment masks were stored with the tokens, and "
                             "transformer.background_weight needs them: delete it to tokenize again")
        return tensors

    def _grow(self, path: Path, dataset, recipe: dict[str, str]) -> bool:
        """Whether ``path`` holds the first rows of a procedural split that now has more
        (``train.transformer.num_train`` raised): then its rows become the first saved part of
        a new tokenizing (see :meth:`_tokenize`), which adds only the new rows. Procedural row
        ``i`` is the same garment and the same condition draws whatever the row count."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        if self.cfg.data.source != "procedural":
            return False
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}) != recipe or "garment_tokens" not in f.keys():
                return False  # refused with its reason by tokenize_split
            m = f.get_slice("index").get_shape()[0]
        if m >= len(dataset):
            return False
        tensors = load_file(str(path))
        if not torch.equal(tensors["index"], torch.arange(m)):
            return False
        views, n = int(recipe["condition_views"]), len(dataset)
        parts_dir = path.with_name(f"{path.stem}.parts")
        parts_dir.mkdir(parents=True, exist_ok=True)
        for view in range(views):
            part = _part_path(parts_dir, view, 0, m)
            if part.is_file():
                continue  # made by an earlier, killed attempt at the same growth
            _save_tokens(part, {k: v if k not in VIEWED_KEYS or views == 1 else v[:, view].contiguous()
                                for k, v in tensors.items() if view == 0 or k in VIEWED_KEYS},
                         {**recipe, "rows": str(n)})
        print(f"[{self.name}] {path.name} holds rows 0-{m - 1}; tokenizing rows {m}-{n - 1} to add to them", flush=True)
        return True

    def _tokenize(self, dataset, split: str, path: Path, recipe: dict[str, str]) -> None:
        """Write ``path``: text, image and garment-mask tokens once, and the sketch / partial
        tokens of each of ``recipe["condition_views"]`` draws (the dataset's epochs 0, 1, ...).

        The rows are tokenized in parts of :data:`TOKENIZE_PART_ROWS` rows, each saved as soon as
        it is done (``tokens-<split>.parts/``), so a killed run resumes at the part it was on
        instead of starting again (60,000 default-size rows take over half an hour here). The
        parts are joined into ``path`` at the end and removed."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        from armani.data.transforms import collate

        views, n = int(recipe["condition_views"]), len(dataset)
        if hasattr(dataset, "drawn_sketch_prob"):
            dataset.drawn_sketch_prob = float(recipe["drawn_sketch_prob"])
        elif float(recipe["drawn_sketch_prob"]) > 0:
            raise ValueError(f"transformer.drawn_sketch_prob needs a garment dataset, got {type(dataset).__name__}")
        if views > 1 and not hasattr(dataset, "set_epoch"):
            raise ValueError(f"transformer.condition_views > 1 needs a dataset with set_epoch, got {type(dataset).__name__}")
        # The frozen codebooks encode on the run's device (a GPU, where there is one); the
        # token files are kept on the CPU.
        device = self.accelerator.device
        vq, sk, pa = (self.tokenizers[k].to(device) for k in ("vqgan", "sketch", "partial"))
        helpers = {k: m.to(device) for k, m in self.helpers.items()}
        parts_dir = path.with_name(f"{path.stem}.parts")
        stamp = {**recipe, "rows": str(n)}  # what every part must have been made with
        parts: dict[tuple[int, tuple[int, int]], Path] = {}  # (draw, (first row, end row)) -> file
        for part in sorted(parts_dir.glob("draw*-rows*.safetensors")):
            with safe_open(str(part), framework="pt") as f:
                made_with = f.metadata() or {}
            if made_with != stamp:
                raise ValueError(f"{part} was tokenized with {made_with}, this run asks for {stamp}: "
                                 f"delete {parts_dir} to tokenize again")
            view, rows = part.stem[len("draw"):].split("-rows")
            parts[(int(view), tuple(int(r) for r in rows.split("-")))] = part
        done = set(parts)
        for view in range(views):
            covered = 0
            for a, b in sorted(span for v, span in done if v == view):
                if a != covered:
                    break  # a gap (or an overlap) ends the usable prefix
                covered = b
            for old in [key for key in done if key[0] == view and key[1][1] > covered]:
                done.discard(old)  # beyond a gap: made again with the rest
                parts.pop(old).unlink()
            for a in range(covered, n, TOKENIZE_PART_ROWS):
                b = min(n, a + TOKENIZE_PART_ROWS)
                parts[(view, (a, b))] = _part_path(parts_dir, view, a, b)
        spans = {view: sorted(span for v, span in parts if v == view) for view in range(views)}
        bar = tqdm(total=n * views, initial=sum(b - a for _, (a, b) in done), unit="row", desc=f"tokenizing {split}",
                   disable=not self.accelerator.is_local_main_process)
        if done:
            bar.write(f"[{self.name}] {split}: resuming the tokenizing, {len(done)} of {len(parts)} parts "
                      f"already in {parts_dir}")
        for (view, (a, b)), part in sorted(parts.items()):
            if (view, (a, b)) in done:
                continue
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(view)
            # Drawing the sketch and crop of each row is CPU work: with train.transformer.num_workers
            # it runs in that many processes while the codebooks encode (e.g. beside a GPU).
            loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(a, b)), batch_size=64,
                                                 shuffle=False, collate_fn=collate, num_workers=self.optim.num_workers)
            out: dict[str, list[torch.Tensor]] = {k: [] for k in TOKEN_KEYS}
            for batch in loader:
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                # text and image are the same in every draw: only draw 0 encodes them
                for k, v in tokenize_batch(batch, vq, sk, pa, helpers, image=not view).items():
                    out[k].append(v.cpu())
                bar.update(len(batch["index"]))
            parts_dir.mkdir(parents=True, exist_ok=True)
            _save_tokens(part, {k: torch.cat(v).contiguous() for k, v in out.items() if v}, stamp)
        bar.close()

        loaded = {key: load_file(str(part)) for key, part in parts.items()}
        tensors = {k: torch.cat([loaded[(0, span)][k] for span in spans[0]]).contiguous()
                   for k in TOKEN_KEYS if k not in VIEWED_KEYS}
        for k in VIEWED_KEYS:
            per_view = [torch.cat([loaded[(view, span)][k] for span in spans[view]]) for view in range(views)]
            tensors[k] = (per_view[0] if views == 1 else torch.stack(per_view, dim=1)).contiguous()
        _save_tokens(path, tensors, recipe)
        shutil.rmtree(parts_dir)

    def train_dataset(self):
        return TokenDataset(self.tokenize_split(super().train_dataset(), "train"))

    def val_dataset(self):
        val = super().val_dataset()
        return None if val is None else TokenDataset(self.tokenize_split(val, "val"))

    def collate_fn(self):
        return None  # default_collate stacks the id tensors

    # -- model and step -------------------------------------------------------------------
    def build_models(self):
        return {"transformer": ForwardAs(CrossModalTransformer(self.config.transformer), "loss")}

    def build_optimizers(self, models):
        model = models["transformer"].model
        o = self.optim
        return {"main": torch.optim.AdamW(model.param_groups(o.weight_decay), lr=o.lr, betas=o.betas)}

    def build_frozen(self):
        if not self.config.transformer.semantic_loss:
            return {}
        return {"vqgan": self.tokenizers["vqgan"], **self.helpers}

    def semantic_fn(self, text_ids: torch.Tensor):
        f = self.frozen
        k = self.cfg.train.semantic_samples or len(text_ids)

        def fn(probs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            # probs (R, N, K) of the captioned rows, rows (R,) their indices in the batch
            images = f["vqgan"].decode_soft(probs[:k])  # (k, 3, H, W), differentiable in probs
            return semantic_loss(images, text_ids[rows[:k]], f["segmenter"], f["maskclip"])

        return fn

    def training_step(self, batch, step):
        acc = self.accelerator
        gen = torch.Generator().manual_seed((self.cfg.train.seed * 1_000_003 + step) * 64 + acc.process_index)
        tc = self.config.transformer
        use_semantic = tc.semantic_loss and step >= tc.semantic_start_step
        semantic = self.semantic_fn(batch["text_ids"]) if use_semantic else None
        out = self.models["transformer"](
            batch["text_ids"], batch["sketch_ids"], batch["partial_ids"], batch["image_ids"],
            generator=gen, semantic_fn=semantic, garment_tokens=batch.get("garment_tokens"),
        )
        self.optimize(out.total)
        return StepOutput(out.total.item(), {"ce": out.ce.item(), "semantic": out.semantic.item(),
                                             "accuracy": out.accuracy.item()})

    @torch.no_grad()
    def evaluate(self, loader, max_batches: int = 16):
        """Validation CE and token accuracy with every condition given, and CE with none
        (``ce_unconditional``): their gap, ``ce_gain``, is how many nats per token the
        conditions are worth; a model that ignores its text shows a gain near 0."""
        model = self.unwrap("transformer")
        ce, acc, ce_none = [], [], []
        token_ce = []  # (per-token CE, garment mask) per batch: causal models score every token
        everything = dict.fromkeys(("text", "sketch", "partial"), True)
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            ids = (batch["text_ids"], batch["sketch_ids"], batch["partial_ids"], batch["image_ids"])
            # The plain mean over every token (all marked garment, so no background weighting):
            # validation CE stays comparable across transformer.background_weight settings.
            plain = torch.ones(batch["image_ids"].shape[:2], dtype=torch.bool)
            out = model.loss(*ids, drop={}, garment_tokens=plain)
            ce.append(out.ce.item())
            acc.append(out.accuracy.item())
            ce_none.append(model.loss(*ids, drop=everything, garment_tokens=plain).ce.item())
            if "garment_tokens" in batch and model.config.causal:
                token_ce.append((out.token_ce.view(plain.shape), batch["garment_tokens"].bool()))
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        out = {"ce": mean(ce), "accuracy": mean(acc), "ce_unconditional": mean(ce_none),
               "ce_gain": mean(ce_none) - mean(ce)}
        # where the CE is spent: on the garment's tokens and on the studio background's
        out.update(garment_background_ce(token_ce))
        return out

    def export(self, out_dir: Path):
        self.unwrap("transformer").save_pretrained(out_dir)
        self.export_common(out_dir)
