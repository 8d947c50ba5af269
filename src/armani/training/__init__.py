"""Training: the Accelerate engine (``engine``) and one module per stage (``stages``)."""

from armani.training.engine import STAGES, OptimConfig, Stage, StepOutput, Trainer, register_stage

__all__ = ["STAGES", "OptimConfig", "Stage", "StepOutput", "Trainer", "register_stage"]
