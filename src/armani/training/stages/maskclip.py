"""Stage 1a: MaskCLIP word-part alignment (Sec. 3.2, Eq. 3-8)."""

from __future__ import annotations

from functools import cached_property

import torch

from armani.models.maskclip import MaskCLIP
from armani.training.engine import StepOutput, register_stage
from armani.training.stages.base import GarmentStage, part_probs_for


@register_stage
class MaskCLIPStage(GarmentStage):
    """Trains on ground-truth part masks; rows without one get the trained segmenter's."""

    name = "maskclip"
    eval_pairs = 1000  # the retrieval task's size

    @cached_property
    def needs_segmenter(self) -> bool:
        return self.cfg.data.source != "procedural"  # procedural data always has exact masks

    def build_models(self):
        model = MaskCLIP(self.config.maskclip)
        if self.config.maskclip.pretrained_text:
            model.load_pretrained_text(self.config.maskclip.pretrained_text, self.tokenizer)
        return {"maskclip": model}

    def build_frozen(self):
        if not self.needs_segmenter:
            return {}
        from armani.models.segmenter import Segmenter

        return {"segmenter": Segmenter.from_pretrained(self.artefact_dir("segmenter"))}

    def training_step(self, batch, step):
        probs = part_probs_for(batch, self.frozen.get("segmenter"))
        out = self.models["maskclip"](batch["image"], probs, batch["text_ids"])
        self.optimize(out.loss)
        return StepOutput(out.loss.item(), {"loss_m": out.loss_m.item(), "loss_t": out.loss_t.item(),
                                            "logit_scale": out.logit_scale.item()})

    @torch.no_grad()
    def evaluate(self, loader):
        from armani.alignment import pointing_game
        from armani.retrieval import recall_at_k

        model = self.unwrap("maskclip")
        images, masks, captions, ids = [], [], [], []
        for batch in loader:
            keep = batch["has_mask"]
            images.append(batch["image"][keep].cpu())
            masks.append(batch["mask"][keep].cpu())
            ids.append(batch["text_ids"][keep].cpu())
            captions.extend(c for c, k in zip(batch["caption"], keep.tolist()) if k)
            if sum(len(x) for x in images) >= self.eval_pairs:
                break
        images, masks, ids = torch.cat(images)[: self.eval_pairs], torch.cat(masks)[: self.eval_pairs], torch.cat(ids)[: self.eval_pairs]
        captions = captions[: self.eval_pairs]
        pg = pointing_game(model, self.tokenizer, images, masks, captions)
        recall = recall_at_k(model, images, masks, ids)
        metrics = {"pointing_accuracy": pg["accuracy"], "pointing_chance": pg["chance"]}
        metrics.update({f"pointing/{k}": v["accuracy"] for k, v in pg["per_part"].items()})
        metrics.update({f"recall/{k}": v for k, v in recall.items()})
        return metrics

    def export(self, out_dir):
        self.unwrap("maskclip").save_pretrained(out_dir)
        self.export_common(out_dir)
