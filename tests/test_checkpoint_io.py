"""The one save/load path of every model component (armani.models.checkpoint).

Round trips are checked tensor by tensor; every broken folder must raise CheckpointError with a
message that names the folder and says what is wrong.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import armani.models
from armani.models import checkpoint as ckpt
from armani.models.checkpoint import (
    CheckpointError,
    CheckpointNotFound,
    PretrainedMixin,
    load_checkpoint,
    save_checkpoint,
)
from armani.models.maskclip import MaskCLIP, MaskCLIPConfig
from armani.models.segmenter import Segmenter, SegmenterConfig
from armani.models.transformer import CrossModalTransformer, TransformerConfig
from armani.models.vqgan import VQGAN, VQGANConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "armani"
COMPONENTS = {"segmenter": Segmenter, "maskclip": MaskCLIP, "vqgan": VQGAN, "sketch_tokenizer": VQGAN,
              "partial_tokenizer": VQGAN, "transformer": CrossModalTransformer}


def tiny(kind: str) -> nn.Module:
    """A small, randomly initialised component of each kind (fast on one CPU thread)."""
    torch.manual_seed(0)
    if kind == "segmenter":
        return Segmenter(SegmenterConfig(base_channels=8, channel_mults=(1, 2), groups=4))
    if kind == "maskclip":
        return MaskCLIP(MaskCLIPConfig(image_size=16, grid=4, vision_width=16, vision_layers=1, vision_heads=2,
                                       text_width=16, text_layers=1, text_heads=2, vocab_size=30,
                                       context_length=8, embed_dim=8, pad_id=0, sot_id=28, eot_id=29))
    if kind == "vqgan":
        return VQGAN(VQGANConfig(image_size=16, base_channels=8, channel_mult=(1, 2), code_dim=8, codebook_size=16,
                                 kmeans_init=False, fusion=False, perceptual="none", disc_channels=8, disc_layers=1))
    if kind == "transformer":
        return CrossModalTransformer(TransformerConfig(
            text_vocab_size=20, text_len=5, sketch_codebook_size=10, sketch_len=4, partial_codebook_size=12,
            partial_len=4, image_codebook_size=16, image_len=9, width=16, layers=1, heads=2))
    raise KeyError(kind)


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["segmenter", "maskclip", "vqgan", "transformer"])
def test_float32_round_trip_is_exact(kind, tmp_path):
    model = tiny(kind)
    with torch.no_grad():  # make every tensor non-trivial (zero biases would hide a missed copy)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    folder = model.save_pretrained(tmp_path / kind)
    assert folder == tmp_path / kind
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]  # no temp files
    loaded = type(model).from_pretrained(folder)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert_same_state(model, loaded)
    stored = load_file(str(folder / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in stored.values() if v.is_floating_point())


@pytest.mark.parametrize("kind", ["transformer", "vqgan"])
def test_bfloat16_storage_rounds_once_and_loads_as_float32(kind, tmp_path):
    model = tiny(kind)
    model.save_pretrained(tmp_path / "bf16", storage_dtype="bfloat16")
    stored = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    state = model.state_dict()
    for name, value in stored.items():
        if state[name].is_floating_point():
            assert value.dtype == torch.bfloat16, name
        else:  # flags and ids are stored as they are (the VQGAN's codebook ``initted`` flag)
            assert value.dtype == state[name].dtype, name
    loaded = type(model).from_pretrained(tmp_path / "bf16")
    for name, value in loaded.state_dict().items():
        original = state[name]
        assert value.dtype == original.dtype, name
        expected = original.to(torch.bfloat16).to(original.dtype) if original.is_floating_point() else original
        assert torch.equal(value, expected), name
        if original.is_floating_point():  # within bf16 rounding: 8 mantissa bits
            torch.testing.assert_close(value, original, rtol=2**-8, atol=0)


def test_bad_storage_dtype_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="storage_dtype"):
        tiny("segmenter").save_pretrained(tmp_path / "x", storage_dtype="float16")
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_saving_replaces_files_atomically(tmp_path, monkeypatch):
    """An interrupted save leaves the previous checkpoint intact and no temporary files."""
    first = tiny("segmenter")
    first.save_pretrained(tmp_path / "s")
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}

    def half_written(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", half_written)
    second = tiny("segmenter")
    with torch.no_grad():
        second.head.bias.fill_(3.0)
    with pytest.raises(OSError, match="disk full"):
        second.save_pretrained(tmp_path / "s")
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before
    assert_same_state(first, Segmenter.from_pretrained(tmp_path / "s"))
    monkeypatch.undo()
    second.save_pretrained(tmp_path / "s")  # overwriting an existing checkpoint works
    assert_same_state(second, Segmenter.from_pretrained(tmp_path / "s"))


# -- broken folders ----------------------------------------------------------------------------
@pytest.fixture()
def saved(tmp_path) -> Path:
    return tiny("segmenter").save_pretrained(tmp_path / "seg")


def rewrite_weights(folder: Path, edit) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def load_error(folder: Path, cls=Segmenter) -> str:
    with pytest.raises(CheckpointError) as info:
        cls.from_pretrained(folder)
    message = str(info.value)
    assert message.startswith(f"{folder}: "), message  # "<path>: <what is wrong>; <what to do>"
    assert "; " in message[len(str(folder)) + 2:], message
    return message


def test_wrong_shape_tensor(saved):
    rewrite_weights(saved, lambda t: t.update({"head.weight": torch.zeros(3, 3)}))
    message = load_error(saved)
    assert "model.safetensors does not match config.json" in message
    assert "wrong shape: head.weight (3, 3)" in message and "another config" in message


def test_missing_tensor(saved):
    rewrite_weights(saved, lambda t: t.pop("head.bias"))
    message = load_error(saved)
    assert "missing: head.bias" in message and "unexpected" not in message


def test_extra_tensor(saved):
    rewrite_weights(saved, lambda t: t.update({"head.extra": torch.ones(2)}))
    message = load_error(saved)
    assert "unexpected: head.extra" in message and "missing" not in message


def test_flag_stored_as_float_is_a_mismatch(tmp_path):
    folder = tiny("vqgan").save_pretrained(tmp_path / "vq")
    flags = [k for k, v in load_file(str(folder / "model.safetensors")).items() if v.dtype == torch.bool]
    assert flags
    rewrite_weights(folder, lambda t: t.update({k: t[k].float() for k in flags}))
    assert f"wrong dtype: {flags[0]} torch.float32 vs torch.bool" in load_error(folder, VQGAN)


def test_corrupt_config_json(saved):
    (saved / "config.json").write_text('{"in_channels": 3, "num_parts"')
    assert "config.json is not valid JSON" in load_error(saved)
    (saved / "config.json").write_text("[1, 2]")
    assert "config.json holds a JSON list" in load_error(saved)


def test_unknown_or_invalid_config_values(saved):
    data = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**data, "colour": "red"}))
    assert "unknown SegmenterConfig keys ['colour']" in load_error(saved)
    (saved / "config.json").write_text(json.dumps({**data, "groups": 5}))  # its __post_init__ refuses it
    assert "config.json is not a valid SegmenterConfig (groups 5 must divide" in load_error(saved)


def test_truncated_weights(saved):
    raw = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    message = load_error(saved)
    assert "model.safetensors cannot be read" in message and "truncated" in message


def test_missing_folder_and_files(tmp_path, saved):
    for folder, problem in [(tmp_path / "nowhere", "no such folder"), (saved, "no model.safetensors")]:
        if folder == saved:
            (saved / "model.safetensors").unlink()
        with pytest.raises(CheckpointNotFound) as info:
            Segmenter.from_pretrained(folder)
        assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, CheckpointError)
        assert str(info.value).startswith(f"{folder}: {problem}; ")
        assert "config.json and model.safetensors" in str(info.value)


def test_model_type_tag_is_checked(tmp_path):
    model = tiny("transformer")
    folder = model.save_pretrained(tmp_path / "t")
    data = json.loads((folder / "config.json").read_text())
    assert next(iter(data)) == "model_type" and data["model_type"] == CrossModalTransformer.model_type
    (folder / "config.json").write_text(json.dumps({**data, "model_type": "vqgan"}))
    assert "config.json has model_type 'vqgan', not 'armani-cross-modal-transformer'" in load_error(
        folder, CrossModalTransformer)
    # A segmenter folder is not a transformer folder either (and vice versa: unknown keys).
    seg = tiny("segmenter").save_pretrained(tmp_path / "s")
    assert "model_type None" in load_error(seg, CrossModalTransformer)
    (folder / "config.json").write_text(json.dumps(data))
    assert "unknown SegmenterConfig keys" in load_error(folder, Segmenter)


def test_plain_functions_share_the_checks(tmp_path):
    """save_checkpoint/load_checkpoint serve modules outside armani.models (same format, same errors)."""
    model = tiny("segmenter")
    save_checkpoint(model, model.config, tmp_path / "f")
    assert_same_state(model, load_checkpoint(Segmenter, SegmenterConfig, tmp_path / "f"))
    assert_same_state(model, Segmenter.from_pretrained(tmp_path / "f"))
    rewrite_weights(tmp_path / "f", lambda t: t.pop("head.bias"))
    with pytest.raises(CheckpointError, match="missing: head.bias"):
        load_checkpoint(Segmenter, SegmenterConfig, tmp_path / "f")


# -- every component uses it ---------------------------------------------------------------------
def model_classes() -> list[type]:
    """nn.Module classes defined in armani.models.* that can be saved or loaded."""
    found = []
    for info in pkgutil.iter_modules(armani.models.__path__):
        module = importlib.import_module(f"armani.models.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (cls.__module__ == module.__name__ and issubclass(cls, nn.Module)
                    and (hasattr(cls, "save_pretrained") or hasattr(cls, "from_pretrained"))):
                found.append(cls)
    return found


def test_every_component_uses_the_mixin_without_overriding_it():
    classes = model_classes()
    assert {Segmenter, MaskCLIP, VQGAN, CrossModalTransformer} <= set(classes)
    for cls in classes:
        assert issubclass(cls, PretrainedMixin), cls
        assert dataclasses.is_dataclass(cls.config_class), cls
        assert cls.save_pretrained is PretrainedMixin.save_pretrained, cls
        assert cls.from_pretrained.__func__ is PretrainedMixin.from_pretrained.__func__, cls
    from armani.models import vqgan

    assert vqgan.CheckpointError is CheckpointError  # still importable where older code looks


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="no shipped checkpoint")
def test_shipped_components_load_with_their_stored_weights():
    folders = sorted(p.parent for p in SHIPPED.glob("*/model.safetensors"))
    assert {f.name for f in folders} == set(COMPONENTS)
    for folder in folders:
        model = COMPONENTS[folder.name].from_pretrained(folder)
        stored = load_file(str(folder / "model.safetensors"))
        state = model.state_dict()
        assert state.keys() == stored.keys(), folder
        for name, value in stored.items():
            expected = value.float() if value.is_floating_point() else value
            assert state[name].dtype == expected.dtype and torch.equal(state[name], expected), (folder, name)


# -- averaging saved copies of one model ---------------------------------------------------------
def perturbed(kind: str, seed: int) -> nn.Module:
    """``tiny(kind)`` moved by seeded noise: one model at another point of its training."""
    model = tiny(kind)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


@pytest.mark.parametrize("kind", ["transformer", "vqgan"])
def test_averaged_checkpoint_holds_the_weighted_mean_and_loads(kind, tmp_path):
    a, b = perturbed(kind, 1), perturbed(kind, 2)
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b", storage_dtype="bfloat16")  # mixed storage, as a shipped + a run
    folder = ckpt.average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "mean", weights=[0.25, 0.75])
    mean = type(a).from_pretrained(folder)
    sa, sb = a.state_dict(), load_file(str(tmp_path / "b" / "model.safetensors"))
    moved = 0
    for name, value in mean.state_dict().items():
        if value.is_floating_point():
            expected = 0.25 * sa[name] + 0.75 * sb[name].float()
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
            moved += int(not torch.equal(value, sa[name]))
        else:  # the VQGAN's ``initted`` flag: copied, not averaged
            assert torch.equal(value, sa[name]), name
    assert moved > 0
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert f.metadata()["model"] == f"armani.{type(a).__name__}"


def test_averaging_refuses_other_models_and_bad_weights(tmp_path):
    perturbed("transformer", 1).save_pretrained(tmp_path / "a")
    perturbed("transformer", 2).save_pretrained(tmp_path / "b")
    # the same class with another config: its tensors have other shapes
    CrossModalTransformer(dataclasses.replace(tiny("transformer").config, width=32)).save_pretrained(tmp_path / "wide")
    with pytest.raises(CheckpointError, match=r"config.json differs .*\['width'\]"):
        ckpt.average_checkpoints([tmp_path / "a", tmp_path / "wide"], tmp_path / "out")
    with pytest.raises(ValueError, match="sum to 1"):
        ckpt.average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "out", weights=[0.5, 0.6])
    with pytest.raises(ValueError, match="at least two"):
        ckpt.average_checkpoints([tmp_path / "a"], tmp_path / "out")
    with pytest.raises(CheckpointNotFound):
        ckpt.average_checkpoints([tmp_path / "a", tmp_path / "missing"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written on refusal


def test_average_weights_cli_writes_over_an_input_and_records_its_sources(tmp_path):
    from armani.average_weights import main

    a, b = perturbed("transformer", 1), perturbed("transformer", 2)
    a.save_pretrained(tmp_path / "shipped", storage_dtype="bfloat16")
    b.save_pretrained(tmp_path / "run")
    (tmp_path / "run" / "training_report.json").write_text(json.dumps({"stage": "transformer", "steps": 30}))
    shipped_before = load_file(str(tmp_path / "shipped" / "model.safetensors"))
    assert main([str(tmp_path / "shipped"), str(tmp_path / "run"), "--out", str(tmp_path / "shipped"),
                 "--storage-dtype", "bfloat16"]) == 0
    stored = load_file(str(tmp_path / "shipped" / "model.safetensors"))
    sb = b.state_dict()
    for name, value in stored.items():
        assert value.dtype == torch.bfloat16
        expected = (0.5 * shipped_before[name].float() + 0.5 * sb[name]).to(torch.bfloat16)
        assert torch.equal(value, expected), name
    report = json.loads((tmp_path / "shipped" / "training_report.json").read_text())
    assert report["steps"] == 30
    assert report["averaged_from"] == [{"folder": str(tmp_path / "shipped"), "weight": 0.5},
                                       {"folder": str(tmp_path / "run"), "weight": 0.5}]
