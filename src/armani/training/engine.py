"""One training loop for every stage, built on Hugging Face Accelerate.

Accelerate owns device placement, DDP, mixed precision, gradient accumulation,
checkpointing (``save_state``/``load_state``) and tracking; this module owns what is the
same for every stage: the loop, exact resume, the progress bar, periodic evaluation and
the final export. What differs per stage (models, data, the loss and its optimisers)
lives in a :class:`Stage` subclass registered with :func:`register_stage`.

Exact resume: the sampler is seedable (its permutation depends on ``seed`` and the epoch
only), per-sample randomness depends on ``(seed, epoch, index)``, and the trainer state
(global step, epoch, batches done in the epoch) is saved beside Accelerate's model,
optimiser, scheduler and RNG states. A resumed run reloads all of it and skips the
batches of the current epoch already seen, so it replays exactly what an uninterrupted
run does.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from armani.config import OptimConfig  # re-exported: the stages import it from here

STAGES: dict[str, type["Stage"]] = {}


def register_stage(cls: type["Stage"]) -> type["Stage"]:
    """Class decorator: make a stage available to ``train.py --stage NAME``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    if cls.name in STAGES and STAGES[cls.name] is not cls:
        raise ValueError(f"stage {cls.name!r} registered twice")
    STAGES[cls.name] = cls
    return cls


@dataclass
class StepOutput:
    """What a training step reports: named scalars for the logs and progress bar."""

    loss: float
    parts: dict[str, float] = field(default_factory=dict)
    num_samples: int = 0


class Stage:
    """A trainable stage. Subclasses set ``name`` and ``optim_key``, build models and data,
    and implement :meth:`training_step`; the engine does everything else.

    ``self.models``/``self.optimizers``/``self.schedulers`` hold the *prepared* objects after
    :meth:`Trainer.setup`. Frozen helpers (e.g. the segmenter inside the semantic loss)
    are returned by :meth:`build_frozen` and only moved to the device.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()  # stages whose exported artefacts this one loads

    def __init__(self, cfg: Any, run_dir: Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.accelerator = None  # set by the Trainer
        self.models: dict[str, nn.Module] = {}
        self.frozen: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}

    # -- what a stage provides ----------------------------------------------------------
    @property
    def optim(self) -> OptimConfig:
        raise NotImplementedError

    def build_models(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def build_frozen(self) -> dict[str, nn.Module]:
        return {}

    def build_optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """Default: one AdamW over every trainable model, decay on matrices only."""
        params = [p for m in models.values() for p in m.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": self.optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return {"main": torch.optim.AdamW(groups, lr=self.optim.lr, betas=self.optim.betas)}

    def on_prepared(self) -> None:
        """Called once ``self.models`` etc. hold the prepared (device-placed, wrapped) objects."""

    def train_dataset(self) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def val_dataset(self) -> torch.utils.data.Dataset | None:
        return None

    def collate_fn(self) -> Callable | None:
        return None

    def training_step(self, batch: dict, step: int) -> StepOutput:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, float]:
        return {}

    def export(self, out_dir: Path) -> None:
        """Write the stage's artefacts (safetensors + JSON) for later stages and the pipeline."""
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------------------
    def optimize(self, loss: torch.Tensor, key: str = "main", models: tuple[str, ...] | None = None) -> None:
        """Backward + (on accumulation boundaries) clip, step, schedule, zero_grad."""
        acc = self.accelerator
        # Steps run under autocast (see Trainer.train); the backward pass should not.
        with torch.autocast(device_type=acc.device.type, enabled=False):
            acc.backward(loss)
        if acc.sync_gradients and self.optim.grad_clip > 0:
            params = [
                p
                for name, m in self.models.items()
                if models is None or name in models
                for p in m.parameters()
                if p.requires_grad
            ]
            acc.clip_grad_norm_(params, self.optim.grad_clip)
        opt = self.optimizers[key]
        opt.step()  # the prepared optimiser skips the step between accumulation boundaries
        # The scheduler is prepared with step_scheduler_with_optimizer=False (so DDP does not
        # step it once per process), and then Accelerate steps it on every call: only step it
        # on a boundary, so with grad_accum > 1 the schedule still counts optimiser steps.
        if key in self.schedulers and acc.sync_gradients:
            self.schedulers[key].step()
        opt.zero_grad(set_to_none=True)

    def unwrap(self, name: str) -> nn.Module:
        """The bare model behind ``self.models[name]`` (no DDP/compile wrapper, no adapter)."""
        return inner_model(self.accelerator.unwrap_model(self.models[name]))

    def stage_dir(self, name: str | None = None) -> Path:
        return self.run_dir / (name or self.name)

    def artefact_dir(self, stage: str) -> Path:
        """Where a finished stage exported its artefacts (``RUN/<stage>/final``)."""
        path = self.run_dir / stage / "final"
        if not (path / "DONE").is_file():
            raise FileNotFoundError(
                f"stage {self.name!r} needs the exported {stage!r} artefacts at {path}; "
                f"train it first: accelerate launch src/armani/train.py --stage {stage} "
                f"--output {self.run_dir}"
            )
        return path


class WarmupCosine:
    """Linear warm-up then cosine decay to 10% of the base learning rate, as a factor of step.

    An object rather than a closure: ``LambdaLR`` saves a callable object's attributes with
    its state, so a schedule whose ``total`` was fitted to a time budget resumes as fitted."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = int(warmup), int(total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / max(1, self.warmup)
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 10% of the base learning rate."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total))


# A time budget (``OptimConfig.max_minutes``) is fitted from the speed between these two
# optimiser steps: the first few steps pay one-off costs (allocator warm-up, kernel selection).
BUDGET_FIT_FROM, BUDGET_FIT_AT = 5, 25
# The share of the remaining budget the fitted steps may fill: evaluation, checkpoints and
# the speed's own spread take the rest.
BUDGET_MARGIN = 0.9


def fit_steps_to_budget(step: int, seconds_per_step: float, remaining_s: float, max_steps: int) -> int:
    """How many optimiser steps in all fit ``remaining_s`` more seconds at ``seconds_per_step``,
    having done ``step``; never more than ``max_steps`` nor fewer than ``step``."""
    more = int(BUDGET_MARGIN * max(0.0, remaining_s) / max(1e-9, seconds_per_step))
    return max(step, min(int(max_steps), step + more))


def resolve_mixed_precision(setting: str) -> str:
    """``auto`` = bf16 where the hardware runs it fast (CUDA with bf16, or a CPU with
    AVX-512 bf16 / AMX), else no mixed precision. Explicit values pass through."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "no"


@dataclass
class TrainerState:
    global_step: int = 0  # optimiser steps done
    epoch: int = 0
    batches_in_epoch: int = 0  # dataloader batches consumed in the current epoch
    samples_seen: int = 0
    elapsed_s: float = 0.0
    max_steps: int = 0  # the step count fitted to a time budget (0: the config's max_steps)


class Trainer:
    """Runs one :class:`Stage` to ``optim.max_steps`` with checkpoints and exact resume."""

    def __init__(self, stage: Stage, *, seed: int = 0, mixed_precision: str = "auto", tracker: str = "tensorboard",
                 resume: bool = False, audit: bool = False):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

        self.stage = stage
        self.seed = seed
        self.resume = resume
        self.audit = audit  # write per-rank parameter digests and the rows each rank saw
        self.seen_rows: list[int] = []
        self.dir = stage.stage_dir()
        self.ckpt_dir = self.dir / "checkpoints"
        self.init_skipped: list[str] | None = None  # tensors a non-strict warm start left fresh
        optim = stage.optim
        self.accelerator = Accelerator(
            mixed_precision=resolve_mixed_precision(mixed_precision),
            gradient_accumulation_steps=optim.grad_accum,
            log_with=None if tracker == "none" else tracker,
            project_config=ProjectConfiguration(project_dir=str(self.dir), logging_dir=str(self.dir / "logs")),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed),
            step_scheduler_with_optimizer=False,
        )
        set_seed(seed, device_specific=False)
        stage.accelerator = self.accelerator
        self.state = TrainerState()

    # -- setup ----------------------------------------------------------------------------
    def setup(self) -> None:
        st, acc, optim = self.stage, self.accelerator, self.stage.optim
        models = st.build_models()
        if optim.init_from:
            self.init_skipped = warm_start(models, optim.init_from, st.name, strict=optim.init_strict)["skipped"]
        self.frozen_parts = freeze_parts(models, optim.freeze)
        frozen = st.build_frozen()
        optimizers = st.build_optimizers(models)
        schedulers = {k: warmup_cosine(o, optim.warmup_steps, optim.max_steps) for k, o in optimizers.items()}
        self.schedules = [f for s in schedulers.values() for f in s.lr_lambdas]  # their WarmupCosine
        self.train_ds = st.train_dataset()
        loader = torch.utils.data.DataLoader(
            self.train_ds,
            batch_size=optim.batch_size,
            shuffle=True,
            drop_last=True,
            collate_fn=st.collate_fn(),
            num_workers=optim.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )
        if len(loader) == 0:
            raise ValueError(
                f"stage {st.name!r}: the training set ({len(self.train_ds)} rows) is smaller than one batch "
                f"({optim.batch_size}); generate more data or lower the batch size"
            )
        val = st.val_dataset()
        names = list(models)
        prepared = acc.prepare(*models.values(), *optimizers.values(), *schedulers.values(), loader)
        n, k = len(models), len(optimizers)
        st.models = dict(zip(names, prepared[:n]))
        st.optimizers = dict(zip(optimizers, prepared[n : n + k]))
        st.schedulers = dict(zip(schedulers, prepared[n + k : n + 2 * k]))
        self.loader = prepared[-1]
        st.frozen = {name: m.to(acc.device).eval().requires_grad_(False) for name, m in frozen.items()}
        self.val_loader = None
        if val is not None and len(val) > 0:
            self.val_loader = acc.prepare(
                torch.utils.data.DataLoader(val, batch_size=optim.batch_size, shuffle=False, collate_fn=st.collate_fn())
            )
        st.on_prepared()
        if acc.is_main_process and acc.log_with:
            from armani.configuration import to_dict

            acc.init_trackers(st.name, config=_flat_hparams(to_dict(st.cfg)))

    # -- checkpoints ------------------------------------------------------------------------
    def _checkpoints(self) -> list[Path]:
        if not self.ckpt_dir.is_dir():
            return []
        done = [p for p in self.ckpt_dir.glob("step_*") if (p / "trainer_state.json").is_file()]
        return sorted(done, key=lambda p: int(p.name.split("_")[1]))

    def save_checkpoint(self) -> None:
        acc = self.accelerator
        path = self.ckpt_dir / f"step_{self.state.global_step:08d}"
        acc.wait_for_everyone()
        acc.save_state(str(path))
        if acc.is_main_process:
            # Written last: a checkpoint without it (killed mid-save) is ignored on resume.
            (path / "trainer_state.json").write_text(json.dumps(self.state.__dict__))
            for old in self._checkpoints()[: -self.stage.optim.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def load_latest(self) -> bool:
        ckpts = self._checkpoints()
        if not ckpts:
            return False
        latest = ckpts[-1]
        self.accelerator.load_state(str(latest))
        self.state = TrainerState(**json.loads((latest / "trainer_state.json").read_text()))
        return True

    # -- the loop ---------------------------------------------------------------------------
    def train(self) -> TrainerState:
        from tqdm.auto import tqdm

        st, acc, optim = self.stage, self.accelerator, self.stage.optim
        self.setup()
        if self.resume and self.load_latest():
            acc.print(f"[{st.name}] resumed from step {self.state.global_step} "
                      f"(epoch {self.state.epoch}, batch {self.state.batches_in_epoch})")
        elif (self.dir / "final" / "DONE").is_file() and not self.resume:
            acc.print(f"[{st.name}] note: {self.dir / 'final'} exists and will be overwritten")
        if self.state.max_steps:  # fitted to a time budget by an earlier process
            self._set_max_steps(self.state.max_steps)
        bar = tqdm(total=optim.max_steps, initial=self.state.global_step, desc=st.name,
                   disable=not acc.is_main_process, dynamic_ncols=True)
        t_start = time.perf_counter() - self.state.elapsed_s
        window_t, window_samples = time.perf_counter(), 0
        self._budget_marks = {}  # budget bookkeeping of this process: step -> perf_counter
        last: StepOutput | None = None
        while self.state.global_step < optim.max_steps:
            self.loader.set_epoch(self.state.epoch)
            if hasattr(self.train_ds, "set_epoch"):
                self.train_ds.set_epoch(self.state.epoch)
            loader = self.loader
            if self.state.batches_in_epoch:
                loader = acc.skip_first_batches(self.loader, self.state.batches_in_epoch)
            for batch in loader:
                for m in st.models.values():
                    m.train()
                for m in self.frozen_parts:
                    m.eval()
                # The whole step (losses, frozen helpers) under autocast, not only the
                # prepared models' forward, so mixed dtypes never meet outside it.
                with acc.accumulate(*st.models.values()), acc.autocast():
                    out = st.training_step(batch, self.state.global_step)
                self.state.batches_in_epoch += 1
                if self.audit and isinstance(batch, dict) and "index" in batch:
                    self.seen_rows.extend(batch["index"].tolist())
                n = out.num_samples or batch_size(batch)
                self.state.samples_seen += n * acc.num_processes
                window_samples += n * acc.num_processes
                last = out
                if not acc.sync_gradients:
                    continue
                self.state.global_step += 1
                step = self.state.global_step
                bar.update(1)
                if step % optim.log_every == 0 or step == optim.max_steps:
                    now = time.perf_counter()
                    rate = window_samples / max(1e-9, now - window_t)
                    window_t, window_samples = now, 0
                    logs = {"loss": out.loss, **out.parts, "samples_per_s": rate,
                            "lr": next(iter(st.optimizers.values())).param_groups[0]["lr"]}
                    acc.log({f"train/{k}": v for k, v in logs.items()}, step=step)
                    bar.set_postfix(loss=f"{out.loss:.4f}", **{"img/s": f"{rate:.1f}"})
                if self.val_loader is not None and optim.eval_every and step % optim.eval_every == 0:
                    self._evaluate(step)
                self.state.elapsed_s = time.perf_counter() - t_start
                if optim.max_minutes:
                    self._follow_budget(step)
                    bar.total = optim.max_steps
                if (optim.checkpoint_every and step % optim.checkpoint_every == 0) or step == optim.max_steps:
                    self.save_checkpoint()
                if step >= optim.max_steps:
                    break
            else:
                self.state.epoch += 1
                self.state.batches_in_epoch = 0
        bar.close()
        if self.audit:
            self._write_audit()
        metrics = self._evaluate(self.state.global_step) if self.val_loader is not None else {}
        self.state.elapsed_s = time.perf_counter() - t_start
        if acc.is_main_process:
            final = self.dir / "final"
            if final.exists():
                shutil.rmtree(final)
            final.mkdir(parents=True)
            st.export(final)
            report = {
                "stage": st.name,
                "steps": self.state.global_step,
                "samples_seen": self.state.samples_seen,
                "train_seconds": round(self.state.elapsed_s, 1),
                "samples_per_second": round(self.state.samples_seen / max(1e-9, self.state.elapsed_s), 2),
                "num_processes": acc.num_processes,
                "mixed_precision": acc.mixed_precision,
                "device": str(acc.device),
                "final_loss": None if last is None else last.loss,
                "metrics": metrics,
                # How this stage was trained, for the model card's "Reproduce" section.
                "command": " ".join(shlex.quote(a) for a in sys.argv),
                "init_from": optim.init_from,
                "init_skipped": self.init_skipped,
            }
            (final / "training_report.json").write_text(json.dumps(report, indent=2))
            (final / "DONE").write_text("ok\n")
        acc.wait_for_everyone()
        # Not end_training(): that also destroys the process group, which the next stage of
        # the same launch still needs. train.py tears it down after the last stage.
        for tracker in acc.trackers:
            tracker.finish()
        return self.state

    # -- a wall-clock budget -------------------------------------------------------------------
    def _set_max_steps(self, steps: int) -> None:
        self.stage.optim.max_steps = self.state.max_steps = int(steps)
        for schedule in self.schedules:
            schedule.total = int(steps)

    def _follow_budget(self, step: int) -> None:
        """Keep the loop inside ``optim.max_minutes``. Once this process has done
        ``BUDGET_FIT_AT`` steps (or spent half the budget, if sooner), ``max_steps`` is lowered
        to what the rest of the budget holds at the speed of its steps from ``BUDGET_FIT_FROM``
        on (the cosine schedule is stretched to match). After that, at every ``log_every``, it
        is lowered again whenever the recent speed says the run would overrun (e.g. once a
        discriminator joins). It is never raised. In DDP every rank takes the main process's
        decisions and figures, so all ranks fit at the same step and stop at the same step."""
        from accelerate.utils import broadcast_object_list

        optim, marks = self.stage.optim, self._budget_marks
        marks[step] = time.perf_counter()
        fitted, n = bool(self.state.max_steps), len(marks)  # n: this process's steps, this one included
        if not fitted:
            if n < BUDGET_FIT_AT:
                # Steps so slow that half the budget is gone before step 25: fit from what there
                # is. Clocks differ between ranks, so the main process decides for all of them.
                half_spent = [n >= 3 and self.state.elapsed_s >= 30 * optim.max_minutes]
                broadcast_object_list(half_spent)
                if not half_spent[0]:
                    return
            back = n - min(BUDGET_FIT_FROM, n // 2)  # the first steps' one-off costs left out
        elif step % optim.log_every == 0:
            back = optim.log_every
        else:
            return
        if step - back not in marks:
            return
        seconds_per_step = (marks[step] - marks[step - back]) / back
        remaining = optim.max_minutes * 60 - self.state.elapsed_s
        steps = [fit_steps_to_budget(step, seconds_per_step, remaining, optim.max_steps)]
        broadcast_object_list(steps)
        if not fitted or steps[0] < optim.max_steps:
            self.accelerator.print(
                f"[{self.stage.name}] {optim.max_minutes:g}-minute budget: {seconds_per_step:.3f} s/step with "
                f"{max(0.0, remaining):.0f} s left -> {steps[0]} steps in all")
            self._set_max_steps(steps[0])
        for old in [k for k in marks if k < step - max(BUDGET_FIT_AT, optim.log_every)]:
            del marks[old]

    def _write_audit(self) -> None:
        """``audit-rank<k>.json``: a digest of every parameter and the dataset rows this rank
        trained on. Ranks of a correct DDP run have equal digests and disjoint rows."""
        import hashlib

        acc = self.accelerator
        digest = hashlib.sha256()
        for name in sorted(self.stage.models):
            for key, tensor in sorted(self.stage.unwrap(name).state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        record = {"rank": acc.process_index, "world_size": acc.num_processes, "param_sha256": digest.hexdigest(),
                  "steps": self.state.global_step, "rows": self.seen_rows}
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"audit-rank{acc.process_index}.json").write_text(json.dumps(record))

    def _evaluate(self, step: int) -> dict[str, float]:
        st, acc = self.stage, self.accelerator
        for m in st.models.values():
            m.eval()
        metrics = st.evaluate(self.val_loader)
        if metrics:
            acc.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
            acc.print(f"[{st.name}] step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics


def warm_start(models: dict[str, nn.Module], folder: str | Path, stage: str, strict: bool = True) -> dict:
    """Load ``folder/model.safetensors`` into the stage's trained model.

    A stage trains one model (plus, for the codebooks, a discriminator); the first entry of
    ``models`` is the one whose weights are exported and loaded here, and the others start
    fresh. A training checkpoint (a ``step_N`` folder, which holds ``trainer_state.json``)
    also has ``model_1.safetensors``, ... for the others, in the same order (Accelerate's
    ``save_state`` names): then every model is loaded from it, with fresh optimisers and
    schedule. ``strict``: every tensor must exist with the same shape. Otherwise the tensors
    whose names and shapes match are loaded and the rest keep their fresh initialisation; the
    names skipped (absent here, absent there, or a different shape) are returned.
    """
    folder = Path(folder)
    if (folder / "trainer_state.json").is_file():
        out = {"loaded": 0, "skipped": []}
        for i, (name, module) in enumerate(models.items()):
            file = folder / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
            if not file.is_file():
                raise FileNotFoundError(f"init_from {folder}: a training checkpoint without {file.name} "
                                        f"for the stage's model {name!r}")
            # saved as prepared: a ForwardAs wrapper's tensors keep its "model." prefix
            one = _load_into(name, module, file, stage, strict)
            out["loaded"] += one["loaded"]
            out["skipped"] += [f"{name}: {k}" for k in one["skipped"]] if i else one["skipped"]
        return out
    path = folder / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"init_from for stage {stage!r}: {path} does not exist")
    name, module = next(iter(models.items()))
    return _load_into(name, getattr(module, "model", module), path, stage, strict)  # ForwardAs wraps what it exports


def _load_into(name: str, target: nn.Module, path: Path, stage: str, strict: bool) -> dict:
    """:func:`warm_start` for one model and one weight file."""
    from safetensors.torch import load_file

    source = load_file(str(path))
    if strict:
        try:
            target.load_state_dict(source, strict=True)
        except RuntimeError as err:
            raise ValueError(f"init_from {path} does not fit the {stage} model built from this config: {err}") from err
        print(f"[{stage}] {name} initialised from {path}")
        return {"loaded": len(source), "skipped": []}
    own = target.state_dict()
    fits = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not fits:
        raise ValueError(f"init_from {path}: no tensor fits the {stage} model built from this config")
    target.load_state_dict(fits, strict=False)
    skipped = sorted(set(own) - set(fits)) + sorted(f"(source only) {k}" for k in set(source) - set(own))
    print(f"[{stage}] {name} initialised from {path}: {len(fits)}/{len(own)} tensors loaded, "
          f"{len(skipped)} skipped: {', '.join(skipped[:12])}{' ...' if len(skipped) > 12 else ''}")
    return {"loaded": len(fits), "skipped": skipped}


def freeze_parts(models: dict[str, nn.Module], names: tuple[str, ...] | list[str]) -> list[nn.Module]:
    """Freeze the ``"model.submodule"`` parts named by ``train.<stage>.freeze``: no gradients
    (the optimiser skips parameters without one), and the trainer puts them back in eval mode
    after every ``train()`` so buffers updated in training mode (an EMA codebook, batch-norm
    statistics) stay as loaded. Returns the frozen modules."""
    frozen = []
    for full in names:
        head, _, rest = full.partition(".")
        if head not in models:
            raise ValueError(f"freeze {full!r}: the stage trains {sorted(models)}, not {head!r}")
        module = getattr(models[head], "model", models[head])  # ForwardAs wraps the module it exports
        part = module
        for attr in rest.split(".") if rest else []:
            if not hasattr(part, attr):
                raise ValueError(f"freeze {full!r}: {type(part).__name__} has no {attr!r}")
            part = getattr(part, attr)
        if part is None:  # an optional submodule this config does not build (e.g. word_proj)
            continue
        if not isinstance(part, nn.Module):
            raise ValueError(f"freeze {full!r} is not a module")
        part.requires_grad_(False).eval()
        frozen.append(part)
    if frozen:
        print(f"frozen: {', '.join(names)} ({sum(p.numel() for m in frozen for p in m.parameters()):,} parameters)")
    return frozen


def batch_size(batch: Any) -> int:
    """Rows in ``batch``: the first dimension of its first tensor (a dict's values or a sequence), else 0."""
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                return v.shape[0]
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0].shape[0]
    return 0


def _flat_hparams(d: dict, prefix: str = "") -> dict[str, Any]:
    """TensorBoard hparams take scalars only: flatten and stringify the rest."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_hparams(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


class ForwardAs(nn.Module):
    """Route ``forward`` to another method of a model (e.g. ``loss``).

    DistributedDataParallel only synchronises gradients for computations that go through
    the wrapped module's ``forward``; preparing ``ForwardAs(model, "loss")`` lets a stage
    call ``self.models[name](...)`` for a model whose training entry point is a method.
    """

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args, **kwargs):
        return getattr(self.model, self.method)(*args, **kwargs)


def inner_model(module: nn.Module) -> nn.Module:
    """Unwrap a :class:`ForwardAs` adapter (after Accelerate's own unwrap)."""
    return module.model if isinstance(module, ForwardAs) else module
