"""train.py end to end on the tiny config: every stage, a real SIGKILL + --resume, and 2 DDP processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "src" / "armani" / "train.py"
VENV_BIN = Path(sys.executable).parent


def _env() -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("procedural")


def _train(out: Path, data_dir: Path, stage: str, *args: str, resume: bool = False, **popen) -> subprocess.Popen:
    """``args``: overrides and extra flags, passed after the standard ones."""
    cmd = [sys.executable, str(TRAIN), "--config", "tiny", "--stage", stage, "--output", str(out),
           f"data.cache_dir={data_dir}", *args] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_all_stages_export_loadable_artefacts(tmp_path, data_dir):
    from armani.models.maskclip import MaskCLIP
    from armani.models.segmenter import Segmenter
    from armani.models.transformer import CrossModalTransformer
    from armani.models.vqgan import VQGAN
    from armani.text import GarmentTokenizer

    _finish(_train(tmp_path, data_dir, "all"))
    loaders = {"segmenter": Segmenter, "maskclip": MaskCLIP, "vqgan": VQGAN, "sketch_tokenizer": VQGAN,
               "partial_tokenizer": VQGAN, "transformer": CrossModalTransformer}
    for stage, cls in loaders.items():
        final = tmp_path / stage / "final"
        report = json.loads((final / "training_report.json").read_text())
        assert report["steps"] == 6 and report["samples_seen"] == 48
        cls.from_pretrained(final)
        assert GarmentTokenizer.from_pretrained(final).vocab_size > 100
    # A second 'all' finds every stage finished and trains nothing.
    out = _finish(_train(tmp_path, data_dir, "all"))
    assert out.count("already finished") == 6


def test_bad_override_is_one_clear_error(tmp_path, data_dir):
    proc = _train(tmp_path, data_dir, "segmenter", "segmenter.base_chanels=8")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "unknown key 'segmenter.base_chanels'" in out and "Traceback" not in out


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, data_dir):
    steps = ["train.segmenter.max_steps=60", "train.segmenter.checkpoint_every=5", "train.segmenter.log_every=5"]
    _finish(_train(tmp_path / "ref", data_dir, "segmenter", *steps))
    ref = load_file(str(tmp_path / "ref" / "segmenter" / "final" / "model.safetensors"))

    run = tmp_path / "killed"
    proc = _train(run, data_dir, "segmenter", *steps, start_new_session=True)
    ckpts = run / "segmenter" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill as soon as the second checkpoint is complete
        done = sorted(ckpts.glob("step_*/trainer_state.json")) if ckpts.is_dir() else []
        if len(done) >= 2:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "segmenter" / "final").exists(), "the run finished before the kill: make it longer"
    state = json.loads(sorted(ckpts.glob("step_*/trainer_state.json"))[-1].read_text())
    assert 0 < state["global_step"] < 60 and state["batches_in_epoch"] > 0  # killed mid-epoch

    out = _finish(_train(run, data_dir, "segmenter", *steps, resume=True))
    assert f"resumed from step {state['global_step']}" in out or "resumed from step" in out
    got = load_file(str(run / "segmenter" / "final" / "model.safetensors"))
    assert got.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=f"{k} differs after resume")


@pytest.mark.slow
def test_two_ddp_processes_share_parameters_and_split_data(tmp_path, data_dir):
    # Make the tiny dataset once in this process so the two ranks do not race to create it.
    _finish(_train(tmp_path / "warm", data_dir, "segmenter", "train.segmenter.max_steps=1"))
    env = _env() | {"ACCELERATE_USE_CPU": "1"}
    cmd = [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", str(TRAIN),
           "--config", "tiny", "--stage", "segmenter,maskclip", "--output", str(tmp_path / "ddp"),
           f"data.cache_dir={data_dir}", "train.audit=true"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for stage in ("segmenter", "maskclip"):
        ranks = [json.loads((tmp_path / "ddp" / stage / f"audit-rank{r}.json").read_text()) for r in (0, 1)]
        assert [r["world_size"] for r in ranks] == [2, 2]
        assert ranks[0]["param_sha256"] == ranks[1]["param_sha256"], f"{stage}: ranks diverged"
        rows0, rows1 = set(ranks[0]["rows"]), set(ranks[1]["rows"])
        assert len(rows0) == len(ranks[0]["rows"]) == 48 and not rows0 & rows1, f"{stage}: ranks saw the same rows"
        report = json.loads((tmp_path / "ddp" / stage / "final" / "training_report.json").read_text())
        assert report["num_processes"] == 2 and report["samples_seen"] == 96


@pytest.mark.slow
def test_two_ddp_processes_fit_a_time_budget_together(tmp_path, data_dir):
    """train.segmenter.max_minutes with two ranks: both take rank 0's decisions (when to fit, how
    many steps), so they stop at the same step with equal parameters instead of one rank waiting
    for the other at a collective."""
    _finish(_train(tmp_path / "warm", data_dir, "segmenter", "train.segmenter.max_steps=1"))
    env = _env() | {"ACCELERATE_USE_CPU": "1"}
    cmd = [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", str(TRAIN),
           "--config", "tiny", "--stage", "segmenter", "--output", str(tmp_path / "ddp"), f"data.cache_dir={data_dir}",
           "train.audit=true", "train.segmenter.max_steps=2000", "train.segmenter.max_minutes=0.05",
           "train.segmenter.log_every=5"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ranks = [json.loads((tmp_path / "ddp" / "segmenter" / f"audit-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] < 2000
    assert ranks[0]["param_sha256"] == ranks[1]["param_sha256"]
    assert "-minute budget" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_variants_reuse_shared_stages(tmp_path, tiny_run):
    from armani.pipeline import ArmaniPipeline

    data = tiny_run / "data"
    out = _finish(_train(tmp_path / "no_sem2", data, "all", "--variant", "no_sem2", "--reuse", str(tiny_run)))
    # Only the transformer differs from the ARMANI run: everything else is copied, not retrained.
    for stage in ("segmenter", "maskclip", "vqgan", "sketch_tokenizer", "partial_tokenizer"):
        assert f"[{stage}] reused" in out
    assert "[transformer] reused" not in out
    assert (tmp_path / "no_sem2" / "transformer" / "final" / "DONE").is_file()

    out = _finish(_train(tmp_path / "m6", data, "all", "--variant", "m6", "--reuse", str(tiny_run)))
    assert "[vqgan] reused" not in out and "[maskclip] reused" in out
    pipe = ArmaniPipeline.from_run(tmp_path / "m6", sampler="nar")
    assert pipe.vqgan.num_groups == 4 and not pipe.transformer.config.causal
    result = pipe(text="red coat with a belt", num_images=2, seed=0)
    assert result.ids.shape == (2, pipe.vqgan.num_tokens, 4) and len(result.images) == 2


@pytest.mark.slow
def test_reuse_from_a_saved_pipeline_keeps_stage_reports(tmp_path, tiny_run):
    """A checkpoint assembled with ``python -m armani.assemble --run`` seeds a new run: its stage-1
    parts are copied (with their training reports) and only what changed is trained."""
    ckpt = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, "-m", "armani.assemble", "--run", str(tiny_run), "--out", str(ckpt)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (ckpt / "segmenter" / "training_report.json").is_file()
    out = _finish(_train(tmp_path / "again", tiny_run / "data", "segmenter,maskclip", "maskclip.text_attention_radius=1",
                         "--reuse", str(ckpt)))
    assert "[segmenter] reused" in out and "[maskclip] reused" not in out  # the MaskCLIP config changed
    final = tmp_path / "again" / "segmenter" / "final"
    assert (final / "DONE").is_file() and (final / "training_report.json").is_file()
    assert (tmp_path / "again" / "maskclip" / "final" / "DONE").is_file()


@pytest.mark.slow
def test_background_weight_trains_on_the_garment_masks_stored_with_the_tokens(tmp_path, tiny_run):
    """transformer.background_weight (issue 14, lead 6): tokenizing stores which image tokens
    cover the garment (corners are studio background, the centre is garment); a token file
    from before that is a clear error."""
    from safetensors.torch import save_file

    run = tmp_path / "bg"
    _finish(_train(run, tiny_run / "data", "transformer", "--reuse", str(tiny_run), "transformer.background_weight=0.3"))
    tokens = load_file(str(run / "transformer" / "tokens-train.safetensors"))
    garment = tokens["garment_tokens"].bool()
    assert garment.shape == tokens["image_ids"].shape[:2] and 0.1 < garment.float().mean() < 0.9
    side = int(garment.shape[1] ** 0.5)
    centre = (side // 2) * side + side // 2
    assert garment[:, 0].float().mean() < 0.2 and garment[:, centre].float().mean() > 0.8
    assert json.loads((run / "transformer" / "final" / "config.json").read_text())["background_weight"] == 0.3
    # validation splits its plain CE into the garment's tokens and the background's
    metrics = json.loads((run / "transformer" / "final" / "training_report.json").read_text())["metrics"]
    share = garment.float().mean().item()  # about the val share too: same generator, same sizes
    assert metrics["ce_garment"] > 0 and metrics["ce_background"] > 0
    assert abs(share * metrics["ce_garment"] + (1 - share) * metrics["ce_background"] - metrics["ce"]) < 0.25 * metrics["ce"]

    old = tmp_path / "old"
    (old / "transformer").mkdir(parents=True)
    save_file({k: v for k, v in tokens.items() if k != "garment_tokens"}, str(old / "transformer" / "tokens-train.safetensors"))
    proc = _train(old, tiny_run / "data", "transformer", "--reuse", str(tiny_run), "transformer.background_weight=0.3")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "delete it to tokenize again" in out


@pytest.mark.slow
def test_stage_two_reads_more_procedural_rows_without_retraining_stage_one(tmp_path, tiny_run):
    """train.transformer.num_train: stage 2 tokenizes more rows than data.num_train (96 in tiny)
    while the stage-1 parts stay reusable; its first rows are the stage-1 rows; a token file of
    another row count is refused, not silently trained on."""
    run = tmp_path / "rows"
    out = _finish(_train(run, tiny_run / "data", "transformer", "--reuse", str(tiny_run),
                         "train.transformer.num_train=128"))
    assert "[vqgan] reused" in out and "[sketch_tokenizer] reused" in out
    tokens = load_file(str(run / "transformer" / "tokens-train.safetensors"))
    base = load_file(str(tiny_run / "transformer" / "tokens-train.safetensors"))
    assert len(base["index"]) == 96 and len(tokens["index"]) == 128
    assert torch.equal(tokens["image_ids"][:96], base["image_ids"]) and torch.equal(tokens["text_ids"][:96], base["text_ids"])
    assert not torch.equal(tokens["image_ids"][96:], base["image_ids"][:32])  # new garments, not repeats
    report = json.loads((run / "transformer" / "final" / "training_report.json").read_text())
    assert "train.transformer.num_train=128" in report["command"]

    other = tmp_path / "other" / "transformer"
    other.mkdir(parents=True)
    (other / "tokens-train.safetensors").write_bytes((run / "transformer" / "tokens-train.safetensors").read_bytes())
    proc = _train(other.parent, tiny_run / "data", "transformer", "--reuse", str(tiny_run))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "holds 128 rows" in out and "delete it to tokenize again" in out


@pytest.mark.slow
def test_stage_two_can_train_on_only_rows_it_has_not_seen(tmp_path, tiny_run):
    """train.transformer.first_row: stage 2 draws and tokenizes only rows first_row..N-1 (a
    continued run reads only new garments), the stage-1 parts stay reusable, and its token file
    is refused by a run that asks for other rows."""
    from armani.data.synthetic import generate_row
    from armani.text import GarmentTokenizer

    run = tmp_path / "window"
    out = _finish(_train(run, tiny_run / "data", "transformer", "--reuse", str(tiny_run),
                         "train.transformer.num_train=128", "train.transformer.first_row=96"))
    assert "[vqgan] reused" in out and "[sketch_tokenizer] reused" in out
    tokens = load_file(str(run / "transformer" / "tokens-train.safetensors"))
    assert len(tokens["index"]) == 32  # rows 96..127 only
    tok = GarmentTokenizer.from_pretrained(run / "tokenizer")
    for j in (0, 31):  # row j of the file is the generator's row 96 + j
        caption = generate_row(96 + j, 32, seed=0)["caption"]
        assert torch.equal(tokens["text_ids"][j], tok([caption], warn=False).ids[0])
    base = load_file(str(tiny_run / "transformer" / "tokens-train.safetensors"))
    assert not torch.equal(tokens["text_ids"], base["text_ids"][:32])

    other = tmp_path / "other" / "transformer"
    other.mkdir(parents=True)
    (other / "tokens-train.safetensors").write_bytes((run / "transformer" / "tokens-train.safetensors").read_bytes())
    proc = _train(other.parent, tiny_run / "data", "transformer", "--reuse", str(tiny_run),
                  "train.transformer.num_train=128", "train.transformer.first_row=64")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "first_row" in out and "delete it to tokenize again" in out
    proc = _train(tmp_path / "bad", tiny_run / "data", "transformer", "--reuse", str(tiny_run),
                  "train.transformer.first_row=96")  # tiny reads 96 rows: nothing left
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "first_row must be below the 96 rows" in out


@pytest.mark.slow
def test_condition_views_give_each_epoch_its_own_sketch_and_partial_draw(tmp_path, tiny_run):
    """transformer.condition_views / drawn_sketch_prob: the training file holds V draws of every
    row's sketch and partial crop (the dataset's epochs 0..V-1, some sketches drawn by hand),
    the same image and text tokens for all of them; validation keeps one Canny draw; a file
    tokenized with another recipe is a clear error, not silently reused."""
    from safetensors import safe_open

    from armani.training.stages.transformer import TokenDataset

    run = tmp_path / "views"
    _finish(_train(run, tiny_run / "data", "transformer", "--reuse", str(tiny_run),
                   "transformer.condition_views=3", "transformer.drawn_sketch_prob=0.5"))
    path = run / "transformer" / "tokens-train.safetensors"
    tokens = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"condition_views": "3", "drawn_sketch_prob": "0.5"}
    n = len(tokens["index"])
    sketch, partial = tokens["sketch_ids"], tokens["partial_ids"]
    assert sketch.shape[:2] == (n, 3) and partial.shape[:2] == (n, 3) and tokens["image_ids"].shape[0] == n
    # the crops (and so the partial tokens) differ between draws for nearly every row
    assert (partial[:, 0] != partial[:, 1]).any(1).float().mean() > 0.8
    assert (partial[:, 1] != partial[:, 2]).any(1).float().mean() > 0.8
    # about half of the sketches are drawn by hand in each draw, so many rows' sketch tokens change
    assert (sketch[:, 0] != sketch[:, 1]).any(1).float().mean() > 0.2
    # the engine's set_epoch picks the draw; other tensors are the same in every epoch
    ds = TokenDataset(tokens)
    ds.set_epoch(4)  # 4 mod 3 = draw 1
    row = ds[5]
    assert torch.equal(row["partial_ids"], partial[5, 1]) and torch.equal(row["sketch_ids"], sketch[5, 1])
    assert torch.equal(row["image_ids"], tokens["image_ids"][5])
    val = load_file(str(run / "transformer" / "tokens-val.safetensors"))
    assert val["partial_ids"].dim() == 2  # one draw, Canny sketches
    # Drawn in two DataLoader processes (train.transformer.num_workers), every draw is the same:
    # each row's sketch and crop come from its own (index, epoch) seed, not from a worker's state.
    workers = tmp_path / "workers"
    _finish(_train(workers, tiny_run / "data", "transformer", "--reuse", str(tiny_run), "train.transformer.max_steps=1",
                   "transformer.condition_views=3", "transformer.drawn_sketch_prob=0.5",
                   "train.transformer.num_workers=2"))
    again = load_file(str(workers / "transformer" / "tokens-train.safetensors"))
    assert all(torch.equal(again[k], tokens[k]) for k in tokens)

    other = tmp_path / "other" / "transformer"
    other.mkdir(parents=True)
    (other / path.name).write_bytes(path.read_bytes())
    proc = _train(other.parent, tiny_run / "data", "transformer", "--reuse", str(tiny_run),
                  "transformer.condition_views=2", "transformer.drawn_sketch_prob=0.5")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "delete it to tokenize again" in out


@pytest.mark.slow
def test_a_killed_tokenize_resumes_at_its_last_saved_part(tmp_path, tiny_run, monkeypatch):
    """Tokenizing saves its rows part by part: a run killed half-way reads only the rows of the
    parts it had not finished, and the joined file equals one tokenized in a single go."""
    from accelerate import Accelerator

    from armani.config import load_config
    from armani.training.stages import transformer as stage_module
    from armani.training.stages.base import GarmentStage

    cfg = load_config(str(tiny_run / "config.yaml"))
    stage = stage_module.TransformerStage(cfg, tiny_run)  # reads the run's stage-1 artefacts only
    stage.accelerator = Accelerator(cpu=True)
    rows = GarmentStage.train_dataset(stage)
    recipe = {"condition_views": "2", "drawn_sketch_prob": "0.5"}

    class Rows(torch.utils.data.Dataset):
        """The training rows, counting which are read; reading row ``fail_at`` kills the run."""

        def __init__(self, fail_at=None, n=None):
            self.read, self.fail_at, self.n = [], fail_at, n or len(rows)

        def __len__(self):
            return self.n

        def set_epoch(self, epoch):
            rows.set_epoch(epoch)

        @property
        def drawn_sketch_prob(self):
            return rows.drawn_sketch_prob

        @drawn_sketch_prob.setter
        def drawn_sketch_prob(self, value):
            rows.drawn_sketch_prob = value

        def __getitem__(self, i):
            if i == self.fail_at:
                raise KeyboardInterrupt("killed")
            self.read.append(i)
            return rows[i]

    whole = tmp_path / "whole" / "tokens-train.safetensors"
    stage._tokenize(Rows(), "train", whole, recipe)  # 96 rows x 2 draws in one part each
    assert not whole.with_name("tokens-train.parts").exists()

    monkeypatch.setattr(stage_module, "TOKENIZE_PART_ROWS", 40)  # parts of rows 0-40, 40-80, 80-96
    path = tmp_path / "killed" / "tokens-train.safetensors"
    with pytest.raises(KeyboardInterrupt):
        stage._tokenize(Rows(fail_at=50), "train", path, recipe)  # dies in the first draw's second part
    assert not path.exists() and len(list(path.with_name("tokens-train.parts").glob("*.safetensors"))) == 1
    again = Rows()
    stage._tokenize(again, "train", path, recipe)
    assert sorted(again.read) == sorted([*range(40, 96), *range(96)])  # draw 0 from row 40 on, then draw 1
    assert not path.with_name("tokens-train.parts").exists()
    a, b = load_file(str(whole)), load_file(str(path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["sketch_ids"].shape[:2] == (96, 2)

    # a part made with another recipe is refused, not mixed in
    monkeypatch.setattr(stage_module, "TOKENIZE_PART_ROWS", 40)
    other = tmp_path / "other" / "tokens-train.safetensors"
    with pytest.raises(KeyboardInterrupt):
        stage._tokenize(Rows(fail_at=50), "train", other, recipe)
    with pytest.raises(ValueError, match="delete .*tokens-train.parts"):
        stage._tokenize(Rows(), "train", other, {"condition_views": "2", "drawn_sketch_prob": "0.0"})

    # more rows asked of the same split (train.transformer.num_train raised): the first 60 are
    # taken from the shorter file, only the 36 new rows are tokenized
    grown = tmp_path / "grown" / "tokens-train.safetensors"
    stage._tokenize(Rows(n=60), "train", grown, recipe)
    more = Rows()
    assert stage._grow(grown, more, recipe) and stage._grow(grown, Rows(n=60), recipe) is False
    stage._tokenize(more, "train", grown, recipe)
    assert sorted(more.read) == sorted([*range(60, 96)] * 2)
    b = load_file(str(grown))
    assert all(torch.equal(a[k], b[k]) for k in a)
