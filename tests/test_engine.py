"""The Accelerate engine on a toy stage: it trains, logs, exports, and resumes exactly."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from armani.training.engine import OptimConfig, Stage, StepOutput, Trainer


class Indexed(torch.utils.data.Dataset):
    """x -> y = x @ w_true + noise that depends on (epoch, index), like our augmentations."""

    def __init__(self, n: int = 40):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(1000 * self.epoch + i)
        return {"x": self.x[i], "y": self.y[i] + 0.01 * torch.randn((), generator=g), "index": torch.tensor(i)}


@dataclass
class ToyConfig:
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        batch_size=4, lr=0.1, warmup_steps=2, max_steps=12, log_every=1, checkpoint_every=4, eval_every=0))


class ToyStage(Stage):
    name = "toy"
    crash_at: int | None = None
    seen: list[int] = []

    @property
    def optim(self):
        return self.cfg.optim

    def build_models(self):
        torch.manual_seed(0)
        return {"net": nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))}

    def train_dataset(self):
        return Indexed()

    def val_dataset(self):
        return Indexed(8)

    def training_step(self, batch, step):
        if self.crash_at is not None and step == self.crash_at:
            raise KeyboardInterrupt("simulated kill")
        type(self).seen.extend(batch["index"].tolist())
        pred = self.models["net"](batch["x"]).squeeze(-1)
        loss = nn.functional.mse_loss(pred, batch["y"])
        self.optimize(loss)
        return StepOutput(loss=loss.item(), parts={"mse": loss.item()})

    @torch.no_grad()
    def evaluate(self, loader):
        errs = [nn.functional.mse_loss(self.models["net"](b["x"]).squeeze(-1), b["y"]).item() for b in loader]
        return {"mse": sum(errs) / len(errs)}

    def export(self, out_dir):
        from safetensors.torch import save_file

        save_file(self.unwrap("net").state_dict(), str(out_dir / "model.safetensors"))


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def _run(tmp, crash_at=None, resume=False, config=None):
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    stage = ToyStage(config or ToyConfig(), tmp)
    stage.crash_at = crash_at
    trainer = Trainer(stage, seed=3, mixed_precision="no", tracker="none", resume=resume)
    try:
        trainer.train()
    except KeyboardInterrupt:
        pass
    return stage


def _final_weights(tmp):
    from safetensors.torch import load_file

    return load_file(str(tmp / "toy" / "final" / "model.safetensors"))


def test_trains_and_exports(tmp_path):
    ToyStage.seen = []
    _run(tmp_path)
    report = json.loads((tmp_path / "toy" / "final" / "training_report.json").read_text())
    assert report["steps"] == 12 and report["samples_seen"] == 48
    y = Indexed(8).y
    assert report["metrics"]["mse"] < 0.5 * float((y**2).mean())  # far better than predicting 0
    # 12 steps x 4 = 48 samples over a 40-row set: epoch 0 is a permutation of all rows.
    assert sorted(ToyStage.seen[:40]) == list(range(40))


def test_resume_is_exact(tmp_path):
    ToyStage.seen = []
    _run(tmp_path / "a")
    order_a, ref = list(ToyStage.seen), _final_weights(tmp_path / "a")

    ToyStage.seen = []
    _run(tmp_path / "b", crash_at=6)  # checkpoint at step 4, then killed during step 6
    assert not (tmp_path / "b" / "toy" / "final").exists()
    seen_before = list(ToyStage.seen)
    ToyStage.seen = []
    _run(tmp_path / "b", resume=True)
    # The resumed run replays steps 5..12 exactly: same batches, same parameters.
    assert seen_before[:16] == order_a[:16]
    assert ToyStage.seen == order_a[16:]
    got = _final_weights(tmp_path / "b")
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0)


def test_warm_start_loads_exported_weights_strictly(tmp_path):
    from safetensors.torch import save_file
    from torch import nn

    from armani.training.engine import ForwardAs, warm_start

    torch.manual_seed(0)
    source = nn.Linear(4, 3)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    target = ForwardAs(nn.Linear(4, 3), "forward")
    warm_start({"main": target, "discriminator": nn.Linear(2, 2)}, tmp_path, "demo")
    for k, v in source.state_dict().items():
        torch.testing.assert_close(target.model.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not fit the demo model"):
        warm_start({"main": nn.Linear(5, 3)}, tmp_path, "demo")
    with pytest.raises(FileNotFoundError, match="init_from for stage 'demo'"):
        warm_start({"main": nn.Linear(4, 3)}, tmp_path / "missing", "demo")


def test_warm_start_non_strict_loads_what_fits_and_reports_the_rest(tmp_path):
    from safetensors.torch import save_file
    from torch import nn

    from armani.training.engine import warm_start

    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2), nn.Linear(2, 2))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    target = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5))  # layer 1 resized, layer 2 gone
    fresh = target[1].weight.detach().clone()
    report = warm_start({"main": target}, tmp_path, "demo", strict=False)
    torch.testing.assert_close(target[0].weight, source[0].weight, rtol=0, atol=0)
    torch.testing.assert_close(target[1].weight, fresh, rtol=0, atol=0)
    assert report["loaded"] == 2
    assert report["skipped"] == ["1.bias", "1.weight", "(source only) 2.bias", "(source only) 2.weight"]
    with pytest.raises(ValueError, match="no tensor fits"):
        warm_start({"main": nn.Linear(7, 7)}, tmp_path, "demo", strict=False)


class CriticStage(ToyStage):
    """A toy stage with a second trained model, as the codebooks have a discriminator; the
    net is wrapped in ForwardAs, as the transformer is."""

    name = "critic"

    def build_models(self):
        from armani.training.engine import ForwardAs

        torch.manual_seed(0)
        return {"net": ForwardAs(nn.Linear(4, 1), "forward"), "critic": nn.Linear(1, 1)}

    def training_step(self, batch, step):
        pred = self.models["net"](batch["x"]).squeeze(-1)
        loss = nn.functional.mse_loss(pred, batch["y"]) + self.models["critic"](pred[:, None]).pow(2).mean()
        self.optimize(loss)
        return StepOutput(loss=loss.item(), parts={})


def test_warm_start_from_a_training_checkpoint_loads_every_model_with_a_fresh_schedule(tmp_path):
    from accelerate.state import AcceleratorState, GradientState

    from armani.training.engine import warm_start

    _run_stage = lambda stage: Trainer(stage, seed=3, mixed_precision="no", tracker="none").train()  # noqa: E731
    first = CriticStage(ToyConfig(), tmp_path / "a")
    _run_stage(first)
    ckpt = tmp_path / "a" / "critic" / "checkpoints" / "step_00000012"
    assert (ckpt / "trainer_state.json").is_file()
    trained = {name: {k: v.clone() for k, v in first.unwrap(name).state_dict().items()} for name in ("net", "critic")}

    fresh = CriticStage(ToyConfig(), tmp_path / "b").build_models()
    assert not torch.equal(fresh["critic"].weight, trained["critic"]["weight"])
    report = warm_start(fresh, ckpt, "critic")
    assert report == {"loaded": 4, "skipped": []}
    for name, module in (("net", fresh["net"].model), ("critic", fresh["critic"])):
        for k, v in module.state_dict().items():
            torch.testing.assert_close(v, trained[name][k], rtol=0, atol=0)

    # Through the engine: a new run warm-started from it counts its own steps from 0.
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    config = ToyConfig()
    config.optim.init_from, config.optim.max_steps = str(ckpt), 4
    assert _run_stage(CriticStage(config, tmp_path / "c")).global_step == 4
    (ckpt / "model_1.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model_1.safetensors for the stage's model 'critic'"):
        warm_start(CriticStage(ToyConfig(), tmp_path / "d").build_models(), ckpt, "critic")


def test_with_gradient_accumulation_the_schedule_counts_optimiser_steps(tmp_path):
    """grad_accum=2: 12 optimiser steps see 24 micro-batches, and the warmup-cosine schedule
    has advanced 12 times (it advanced 24 times, reaching its floor halfway, before the fix)."""
    ToyStage.seen = []
    config = ToyConfig(optim=OptimConfig(batch_size=4, lr=0.1, warmup_steps=2, max_steps=12, log_every=1,
                                         checkpoint_every=0, eval_every=0, grad_accum=2))
    stage = _run(tmp_path, config=config)
    report = json.loads((tmp_path / "toy" / "final" / "training_report.json").read_text())
    assert report["steps"] == 12 and report["samples_seen"] == 96
    scheduler = stage.schedulers["main"]
    assert scheduler.scheduler.last_epoch == 12


def test_freeze_keeps_the_codes_and_trains_the_decoder():
    """``train.vqgan.freeze=vqgan.encoder,vqgan.quantizer,vqgan.word_proj``: a training-mode
    step moves the decoder but leaves the encoder, the EMA codebook and so every token id as
    they were; without the freeze the same step moves the codebook."""
    from armani.config import load_config
    from armani.models.vqgan import VQGAN
    from armani.training.engine import freeze_parts

    def step(model, frozen):
        model.train()
        for m in frozen:
            m.eval()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        out = model(images)
        ((out.reconstruction - images).abs().mean() + out.commit_loss.sum()).backward()
        opt.step()

    cfg = load_config("tiny").vqgan
    torch.manual_seed(0)
    images = torch.rand(4, 3, cfg.image_size, cfg.image_size) * 2 - 1
    model = VQGAN(cfg)
    with torch.no_grad():
        model.eval()(images)  # k-means initialises the codebook once, as a trained model's is
    before = {k: v.clone() for k, v in model.state_dict().items()}
    codebook = model.quantizer.codebook.clone()
    ids = model.encode(images)
    unfrozen = VQGAN(cfg)
    unfrozen.load_state_dict(before)
    frozen = freeze_parts({"vqgan": model}, ["vqgan.encoder", "vqgan.quantizer", "vqgan.word_proj"])
    assert len(frozen) == 2 + (model.word_proj is not None)
    step(model, frozen)
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith(("encoder.", "quantizer.", "word_proj.")):
            assert torch.equal(after[k], v), k
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("decoder."))
    assert torch.equal(model.encode(images), ids)
    step(unfrozen, [])
    assert not torch.equal(unfrozen.quantizer.codebook, codebook)
    with pytest.raises(ValueError, match="not 'disc'"):
        freeze_parts({"vqgan": model}, ["disc.layers"])
    with pytest.raises(ValueError, match="has no 'encodr'"):
        freeze_parts({"vqgan": model}, ["vqgan.encodr"])


class SlowStage(ToyStage):
    """ToyStage whose steps take ``delay`` seconds (``slow_from``: twice that from this step on)."""

    delay = 0.02
    slow_from: int | None = None

    def training_step(self, batch, step):
        import time

        time.sleep(self.delay * (2 if self.slow_from is not None and step >= self.slow_from else 1))
        return super().training_step(batch, step)


def _run_slow(tmp, config, crash_at=None, resume=False, slow_from=None):
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    stage = SlowStage(config, tmp)
    stage.crash_at, stage.slow_from = crash_at, slow_from
    trainer = Trainer(stage, seed=3, mixed_precision="no", tracker="none", resume=resume)
    try:
        trainer.train()
    except KeyboardInterrupt:
        pass
    return stage, trainer


def _budget_config(minutes: float, **kw) -> ToyConfig:
    return ToyConfig(optim=OptimConfig(batch_size=4, lr=0.1, warmup_steps=2, max_steps=100_000, log_every=5,
                                       checkpoint_every=kw.pop("checkpoint_every", 0), eval_every=0,
                                       max_minutes=minutes, **kw))


def test_fit_steps_to_budget_fills_the_margin_and_stays_inside_the_bounds():
    from armani.training.engine import BUDGET_MARGIN, fit_steps_to_budget

    assert fit_steps_to_budget(25, 0.5, 100.0, 10_000) == 25 + int(BUDGET_MARGIN * 200)
    assert fit_steps_to_budget(25, 0.5, 100.0, 60) == 60  # max_steps stays the upper bound
    assert fit_steps_to_budget(25, 0.5, -3.0, 10_000) == 25  # over budget: stop now


def test_a_time_budget_ends_the_loop_in_time_with_the_schedule_stretched_to_it(tmp_path):
    """max_minutes=0.025 (1.5 s) at ~0.02 s a step: far fewer than max_steps, no later than the
    budget, and the cosine schedule reaches its floor at the fitted last step."""
    stage, trainer = _run_slow(tmp_path, _budget_config(0.025))
    report = json.loads((tmp_path / "toy" / "final" / "training_report.json").read_text())
    steps = report["steps"]
    assert 25 < steps < 75, steps  # at most 1.5 s / 0.02 s
    assert trainer.state.max_steps == steps == stage.optim.max_steps
    assert trainer.schedules[0].total == steps
    lr = stage.optimizers["main"].param_groups[0]["lr"]
    assert lr == pytest.approx(0.1 * 0.1)  # warm-up + cosine ended at 10% of the base rate
    assert report["train_seconds"] < 1.5 * 1.2


def test_a_time_budget_is_lowered_again_when_steps_get_slower(tmp_path):
    """Fitted at ~0.02 s a step; from step 30 each step takes twice as long, so the run ends
    with fewer steps than the first fit and still inside the budget."""
    stage, trainer = _run_slow(tmp_path / "a", _budget_config(0.03))
    even = trainer.state.max_steps
    stage, trainer = _run_slow(tmp_path / "b", _budget_config(0.03), slow_from=30)
    report = json.loads((tmp_path / "b" / "toy" / "final" / "training_report.json").read_text())
    assert report["steps"] < even - 10, (report["steps"], even)
    assert report["train_seconds"] < 1.8 * 1.2


def test_a_run_fitted_to_a_budget_resumes_with_the_fitted_length(tmp_path):
    _, first = _run_slow(tmp_path, _budget_config(0.05, checkpoint_every=5), crash_at=33)
    assert not (tmp_path / "toy" / "final").exists()
    fitted = first.state.max_steps
    assert fitted > 33
    stage, trainer = _run_slow(tmp_path, _budget_config(0.05, checkpoint_every=5), resume=True)
    report = json.loads((tmp_path / "toy" / "final" / "training_report.json").read_text())
    # Resumed from step 30 with the checkpoint's fitted length and schedule (lowered only if
    # the resumed steps ran slower than the budget allows).
    assert 33 < report["steps"] <= fitted
    assert trainer.schedules[0].total == report["steps"]


def test_steps_too_slow_for_25_in_the_budget_are_fitted_once_half_of_it_is_spent(tmp_path):
    """0.1 s a step and a 1.2 s budget: waiting for step 25 would overrun it twice over, so the
    fit comes at about step 6 and the run ends inside the budget."""
    SlowStage.delay = 0.1
    try:
        _run_slow(tmp_path, _budget_config(0.02))
    finally:
        SlowStage.delay = 0.02
    report = json.loads((tmp_path / "toy" / "final" / "training_report.json").read_text())
    assert 3 <= report["steps"] < 15, report["steps"]
    assert report["train_seconds"] < 1.2 * 1.3
