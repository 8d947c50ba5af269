"""Stage 1: the cross-modal codebook (Sec. 3.3, Eq. 9-11) and the control-signal tokenizers.

All three are the same VQGAN class trained by the same step: the image codebook
(``vqgan``, with MaskCLIP fusion and the semantic loss when its config says so), the
sketch codebook (``sketch_tokenizer``, Canny edges in and out) and the partial-image
codebook (``partial_tokenizer``, RGB + keep-mask in, the partial RGB out). The paper
learns "a codebook for each type of signal"; these are those codebooks.

The sketch codebook's validation also reports edge precision / recall / F1 with a 1 px
tolerance (:mod:`armani.evaluation.edges`), on the val rows' Canny maps (``edge_*``) and on
hand-drawn-style sketches of their part masks (``drawn_edge_*``): PSNR alone cannot tell a
blank page from a sketch. ``sketch_tokenizer.recon_loss=edges`` and
``sketch_tokenizer.drawn_sketch_prob`` switch on its edge loss and drawn-sketch training
(see ``armani.config.SKETCH_EDGES_OVERRIDES``).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from armani.data.transforms import partial_tokenizer_input
from armani.models.losses import VQGANLoss
from armani.models.vqgan import VQGAN
from armani.training.engine import StepOutput, register_stage
from armani.training.stages.base import GarmentStage, part_probs_for


class _VQStage(GarmentStage):
    config_key = ""  # which VQGANConfig of the run config

    @property
    def vq_config(self):
        return getattr(self.config, self.config_key)

    def inputs(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def targets(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    @cached_property
    def helpers(self) -> dict:
        """Frozen segmenter/MaskCLIP, loaded only when fusion, the semantic loss or the
        segmenter-feature perceptual loss need them."""
        c = self.vq_config
        out = {}
        if c.fusion or c.semantic_loss or c.perceptual == "segmenter":
            from armani.models.segmenter import Segmenter

            out["segmenter"] = Segmenter.from_pretrained(self.artefact_dir("segmenter"))
        if c.fusion or c.semantic_loss:
            from armani.models.maskclip import MaskCLIP

            out["maskclip"] = MaskCLIP.from_pretrained(self.artefact_dir("maskclip"))
        return out

    def build_frozen(self):
        return dict(self.helpers)

    def build_models(self):
        self.loss_fn = VQGANLoss(self.vq_config, self.helpers.get("segmenter"), self.helpers.get("maskclip"))
        return {"vqgan": VQGAN(self.vq_config), "disc": self.loss_fn.discriminator}

    def build_optimizers(self, models):
        o = self.optim
        return {
            "main": torch.optim.AdamW(models["vqgan"].parameters(), lr=o.lr, betas=(0.5, 0.9), weight_decay=0.0),
            "disc": torch.optim.AdamW(models["disc"].parameters(), lr=o.lr, betas=(0.5, 0.9), weight_decay=0.0),
        }

    def on_prepared(self):
        # The generator-side GAN term must run through the prepared (possibly DDP) discriminator.
        self.loss_fn.discriminator = self.models["disc"]
        self.loss_fn.to(self.accelerator.device)

    def fusion_words(self, batch: dict):
        if not self.vq_config.fusion:
            return None, None
        with torch.no_grad():
            probs = part_probs_for(batch, self.frozen.get("segmenter"))
            return self.frozen["maskclip"].best_words(batch["image"], probs, batch["text_ids"])

    def training_step(self, batch, step):
        x, target = self.inputs(batch), self.targets(batch)
        words, index = self.fusion_words(batch)
        out = self.models["vqgan"](x, words, index)
        parts = self.loss_fn(target, out, step, last_layer=self.unwrap("vqgan").last_layer_weight,
                             text_ids=batch["text_ids"])
        self.optimize(parts.total, "main", models=("vqgan",))
        logs = parts.as_dict()
        if self.loss_fn.gan_active(step):
            # The generator pass also left gradients on the discriminator: drop them first.
            self.optimizers["disc"].zero_grad(set_to_none=True)
            d = self.loss_fn.discriminator_loss(target, out.reconstruction, step)
            self.optimize(d.total, "disc", models=("disc",))
            logs.update({f"disc_{k}": v for k, v in d.as_dict().items()})
        return StepOutput(parts.total.item(), logs)

    @torch.no_grad()
    def evaluate(self, loader, max_batches: int = 16):
        from armani.evaluation.codebook_health import codebook_stats

        model = self.unwrap("vqgan")
        l1, psnr, ids = [], [], []
        counts: dict = {}  # prefix -> EdgeCounts (or anything with + and as_dict(prefix))
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            words, index = self.fusion_words(batch)
            codes = model.encode(self.inputs(batch), words, index)
            rec = model.decode(codes).clamp(-1, 1)
            target = self.targets(batch)
            l1.append((rec - target).abs().mean().item())
            mse = ((rec - target) / 2).pow(2).flatten(1).mean(1)  # images in [0, 1]
            psnr.append((10 * torch.log10(1.0 / mse.clamp(min=1e-10))).mean().item())
            ids.append(codes.cpu())
            for prefix, c in self.batch_counts(batch, model, rec, target).items():
                counts[prefix] = counts[prefix] + c if prefix in counts else c
        stats = codebook_stats(torch.cat(ids), model.codebook_size)
        metrics = {"l1": sum(l1) / len(l1), "psnr": sum(psnr) / len(psnr),
                   "codebook_usage": stats.usage_fraction, "perplexity": stats.perplexity,
                   "dead_codes": float(stats.dead)}
        for prefix, c in counts.items():
            metrics.update(c.as_dict(prefix))
        return metrics

    def batch_counts(self, batch: dict, model: VQGAN, rec: torch.Tensor, target: torch.Tensor) -> dict:
        """Extra validation counts of one batch, summed over batches by :meth:`evaluate`."""
        return {}

    def export(self, out_dir):
        self.unwrap("vqgan").save_pretrained(out_dir)
        self.export_common(out_dir)


@register_stage
class ImageCodebookStage(_VQStage):
    """The cross-modal codebook (``vqgan.fusion=off`` gives the DALL-E-style visual one)."""

    name = "vqgan"
    config_key = "vqgan"

    def inputs(self, batch):
        return batch["image"]

    def targets(self, batch):
        return batch["image"]


@register_stage
class SketchTokenizerStage(_VQStage):
    name = "sketch_tokenizer"
    config_key = "sketch_tokenizer"

    def train_dataset(self):
        ds = super().train_dataset()
        ds.drawn_sketch_prob = self.vq_config.drawn_sketch_prob  # drawn sketches for training only
        return ds

    def inputs(self, batch):
        return batch["sketch"]

    def targets(self, batch):
        return batch["sketch"]

    def batch_counts(self, batch, model, rec, target):
        """Edge precision / recall (1 px tolerance) on the Canny maps and on drawn sketches."""
        from armani.data.transforms import drawn_sketch_edges, sketch_tensor
        from armani.evaluation.edges import edge_counts

        out = {"edge_": edge_counts(rec, target, tolerance=1)}
        rows = [i for i in range(len(batch["index"])) if bool(batch["has_mask"][i])]
        if rows:
            drawn = torch.stack([
                sketch_tensor(drawn_sketch_edges(batch["mask"][i].cpu().numpy(), np.random.default_rng(
                    (self.cfg.train.seed, int(batch["index"][i]), 2)))) for i in rows
            ]).to(target.device)  # (R, 1, H, W), the same drawing of a row at every evaluation
            drawn_rec = model.decode(model.encode(drawn)).clamp(-1, 1)
            out["drawn_edge_"] = edge_counts(drawn_rec, drawn, tolerance=1)
        return out


@register_stage
class PartialTokenizerStage(_VQStage):
    name = "partial_tokenizer"
    config_key = "partial_tokenizer"

    def inputs(self, batch):
        return partial_tokenizer_input(batch["partial"], batch["keep_mask"])  # (B, 4, H, W)

    def targets(self, batch):
        return batch["partial"]


def encode_conditions(batch: dict, sketch: VQGAN, partial: VQGAN) -> tuple[torch.Tensor, torch.Tensor]:
    """Sketch and partial-image token ids of a batch (what stage 2 conditions on)."""
    return sketch.encode(batch["sketch"]), partial.encode(partial_tokenizer_input(batch["partial"], batch["keep_mask"]))
