"""Stage 0: the garment part segmenter (the paper's mask prediction network M)."""

from __future__ import annotations

import torch

from armani.models.segmenter import Segmenter, mean_iou
from armani.training.engine import ForwardAs, StepOutput, register_stage
from armani.training.stages.base import GarmentStage


@register_stage
class SegmenterStage(GarmentStage):
    name = "segmenter"

    def build_models(self):
        return {"segmenter": ForwardAs(Segmenter(self.config.segmenter), "loss")}

    def training_step(self, batch, step):
        keep = batch["has_mask"]
        if not bool(keep.any()):
            raise ValueError("the segmenter needs ground-truth part masks; this batch has none")
        parts = self.models["segmenter"](batch["image"][keep], batch["mask"][keep])
        self.optimize(parts.loss)
        return StepOutput(parts.loss.item(), {"ce": parts.ce.item(), "dice": parts.dice.item()})

    @torch.no_grad()
    def evaluate(self, loader):
        model = self.unwrap("segmenter")
        preds, targets = [], []
        for batch in loader:
            keep = batch["has_mask"]
            preds.append(model.predict(batch["image"][keep]).cpu())
            targets.append(batch["mask"][keep].cpu())
        iou = mean_iou(torch.cat(preds), torch.cat(targets))
        return {"mean_iou": iou.pop("mean"), **{f"iou/{k}": v for k, v in iou.items()}}

    def export(self, out_dir):
        self.unwrap("segmenter").save_pretrained(out_dir)
        self.export_common(out_dir)
