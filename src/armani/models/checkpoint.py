"""Saving and loading model components: a folder with ``config.json`` and ``model.safetensors``.

Every component in :mod:`armani.models` (segmenter, MaskCLIP, the VQGANs and the cross-modal
Transformer) is a ``torch.nn.Module`` built from a dataclass ``config``. They all persist the
same way, through :class:`PretrainedMixin`:

- ``config.json`` holds the config's fields (``json.dumps(..., indent=2)``), preceded by a
  ``"model_type"`` tag for classes that declare one;
- ``model.safetensors`` holds the state dict (parameters and persistent buffers). Only
  safetensors is read or written here: nothing is unpickled.

Loading is strict. Whatever is wrong with a folder (missing, a corrupt or truncated file, an
unknown config key, tensors missing, unexpected or of another shape) raises one
:class:`CheckpointError` whose message reads ``"<folder>: <what is wrong>; <what to do>"``.
A missing folder or file raises :class:`CheckpointNotFound`, which is also a
``FileNotFoundError`` for callers that catch that.

Weights may be stored in bf16 (``storage_dtype="bfloat16"``, half the bytes); loading casts
floating tensors back to the dtype of the freshly built model (float32).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_LISTED = 8  # tensor names quoted per kind of mismatch in an error message


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded: missing, corrupt, or not matching its config."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """The checkpoint folder, its ``config.json`` or its ``model.safetensors`` does not exist."""


def _message(path: Path, problem: str, remedy: str) -> str:
    return f"{path}: {problem}; {remedy}"


# -- writing -----------------------------------------------------------------------------
def storage_dtype_of(storage_dtype: str) -> torch.dtype:
    """``"float32"``/``"bfloat16"`` -> the torch dtype floating tensors are stored in."""
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
    return STORAGE_DTYPES[storage_dtype]


def replace_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Write ``target`` through a temporary file in the same folder, then rename it over
    ``target``: a reader sees the old file or the new one, never half of one."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_checkpoint(
    path: str | Path,
    config_data: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    storage_dtype: str = "float32",
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``config_data`` to ``path/config.json`` and ``state`` to ``path/model.safetensors``.

    Floating tensors are stored in ``storage_dtype``; other tensors (ids, flags) as they are.
    The weights are renamed into place before the config, so an interrupted save never leaves
    a new config next to old weights.
    """
    dtype = storage_dtype_of(storage_dtype)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: (t.detach().to("cpu", dtype) if t.is_floating_point() else t.detach().cpu()).contiguous()
        for name, t in state.items()
    }
    text = json.dumps(dict(config_data), indent=2)
    replace_atomically(path / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata=dict(metadata or {})))
    replace_atomically(path / CONFIG_NAME, lambda tmp: tmp.write_text(text))
    return path


# -- reading -----------------------------------------------------------------------------
def read_config(path: str | Path, owner: str) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder saved by an ``owner`` (a class name)."""
    path = Path(path)
    needs = f"a saved {owner} folder needs {CONFIG_NAME} and {WEIGHTS_NAME}, as save_pretrained writes them"
    if not path.is_dir():
        raise CheckpointNotFound(_message(path, "no such folder", f"check the path ({needs})"))
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise CheckpointNotFound(_message(path, f"no {name}", f"is this a saved {owner} folder? {needs}"))
    try:
        data = json.loads((path / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            _message(path, f"{CONFIG_NAME} is not valid JSON ({err})",
                     "the file is corrupt or truncated; restore it or save the model again")
        ) from err
    if not isinstance(data, dict):
        raise CheckpointError(
            _message(path, f"{CONFIG_NAME} holds a JSON {type(data).__name__}, not an object of config fields",
                     "restore the config.json that save_pretrained wrote")
        )
    return data


def build_config(config_class: type, data: Mapping[str, Any], path: str | Path,
                 make: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """``config_class`` from a checkpoint's config fields; ``make`` builds it (default
    ``config_class(**data)``) once unknown keys have been ruled out."""
    name = config_class.__name__
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(config_class)})
    if unknown:
        raise CheckpointError(
            _message(Path(path), f"{CONFIG_NAME} is not a valid {name}: unknown {name} keys {unknown}",
                     "remove them, or load it with the version of the code that saved it")
        )
    try:
        return (make or (lambda d: config_class(**d)))(dict(data))
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            _message(Path(path), f"{CONFIG_NAME} is not a valid {name} ({err})",
                     "fix that value, or restore the config.json that save_pretrained wrote")
        ) from err


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``path/model.safetensors``, on the CPU."""
    path = Path(path)
    try:
        return load_file(str(path / WEIGHTS_NAME), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            _message(path, f"{WEIGHTS_NAME} cannot be read ({err})",
                     "the file is corrupt, truncated or not safetensors; save the model again")
        ) from err


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def _mismatches(expected: Mapping[str, torch.Tensor], stored: Mapping[str, torch.Tensor]) -> list[str]:
    """One phrase per kind of difference between the model's state dict and the stored one."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    shared = sorted(set(expected) & set(stored))
    shapes = [f"{k} {tuple(stored[k].shape)} vs {tuple(expected[k].shape)} in the model"
              for k in shared if stored[k].shape != expected[k].shape]
    # bf16 storage of a float32 model is fine; a float where a flag/id belongs is not.
    dtypes = [f"{k} {stored[k].dtype} vs {expected[k].dtype} in the model" for k in shared
              if stored[k].dtype != expected[k].dtype
              and not (stored[k].is_floating_point() and expected[k].is_floating_point())]
    found = [("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes), ("wrong dtype", dtypes)]
    return [f"{kind}: {_listed(names)}" for kind, names in found if names]


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Copy ``path/model.safetensors`` into ``model``: every tensor must be there with its shape."""
    path = Path(path)
    stored = read_weights(path)
    expected = model.state_dict()
    problems = _mismatches(expected, stored)
    if problems:
        raise CheckpointError(
            _message(path, f"{WEIGHTS_NAME} does not match {CONFIG_NAME} ({'; '.join(problems)})",
                     f"the weights do not match the model {CONFIG_NAME} builds, so they were saved with "
                     f"another config or {CONFIG_NAME} was edited; restore the {CONFIG_NAME} saved with them")
        )
    state = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in stored.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # names and shapes were checked; this is a last resort
        raise CheckpointError(
            _message(path, f"{WEIGHTS_NAME} could not be loaded into {type(model).__name__} ({err})",
                     "save the model again")
        ) from err


# -- components ----------------------------------------------------------------------------
class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` built as ``cls(config)``.

    A class sets ``config_class`` (its dataclass config) and, optionally, ``model_type`` (a tag
    written first in ``config.json`` and required on loading). Hooks for what differs between
    components, each small and optional:

    - :meth:`config_to_dict` / :meth:`config_from_dict`: the config <-> JSON fields (default:
      the config's own ``to_dict``/``from_dict`` when it has them, else ``asdict``/``cls(**d)``);
    - :meth:`after_load`: runs once the weights are in (e.g. re-tie weights, refresh caches);
    - :meth:`checkpoint_metadata`: the string header stored in ``model.safetensors``.
    """

    config_class: ClassVar[type]
    model_type: ClassVar[str | None] = None
    config: Any

    # -- hooks ----------------------------------------------------------------------------
    def config_to_dict(self) -> dict[str, Any]:
        to_dict = getattr(self.config, "to_dict", None)
        return to_dict() if callable(to_dict) else dataclasses.asdict(self.config)

    @classmethod
    def config_from_dict(cls, data: dict[str, Any]) -> Any:
        from_dict = getattr(cls.config_class, "from_dict", None)
        return from_dict(data) if callable(from_dict) else cls.config_class(**data)

    def after_load(self) -> None:
        """Called by :meth:`from_pretrained` after the weights are loaded; nothing by default."""

    def checkpoint_metadata(self) -> dict[str, str]:
        meta = {"format": "pt", "model": f"armani.{type(self).__name__}"}
        return meta | ({"model_type": self.model_type} if self.model_type else {})

    # -- save / load ----------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, storage_dtype: str = "float32") -> Path:
        """Write ``config.json`` and ``model.safetensors`` into the folder ``path`` (created if
        needed; each file replaced atomically). ``storage_dtype="bfloat16"`` stores floating
        tensors in bf16. Returns the folder."""
        config_data = self.config_to_dict()
        if self.model_type:
            config_data = {"model_type": self.model_type, **config_data}
        return write_checkpoint(path, config_data, self.state_dict(), storage_dtype, self.checkpoint_metadata())

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Self:
        """Rebuild the model from ``config.json`` and load ``model.safetensors`` strictly; raises
        :class:`CheckpointError` (or :class:`CheckpointNotFound`) naming the folder and the problem."""
        path = Path(path)
        data = read_config(path, cls.__name__)
        if cls.model_type:
            found = data.pop("model_type", None)
            if found != cls.model_type:
                raise CheckpointError(
                    _message(path, f"{CONFIG_NAME} has model_type {found!r}, not {cls.model_type!r}",
                             f"is this a saved {cls.__name__} folder?")
                )
        model = cls(build_config(cls.config_class, data, path, cls.config_from_dict))
        load_weights(model, path)
        model.after_load()
        return model.to(map_location)


# -- averaging ----------------------------------------------------------------------------------
def average_checkpoints(folders: list[str | Path], out: str | Path, weights: list[float] | None = None,
                        storage_dtype: str = "float32") -> Path:
    """Write the weighted mean of several saved copies of one model to the folder ``out``.

    Averaging the weights of two points of one training lineage (a run and its continuation)
    is checkpoint averaging (as in stochastic weight averaging): the mean sits between the two
    in weight space and often generalises better than either. ``torch.optim.swa_utils``
    averages a live model while it trains; this averages saved folders after the fact, which is
    one weighted sum per tensor. Every folder must hold the same ``config.json`` (compared
    field by field) and the same tensor names and shapes; non-floating tensors (ids, flags)
    must be equal and are copied. ``weights`` default to equal and must sum to 1.
    The safetensors header (model class, format) is taken from the first folder.
    """
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise ValueError(f"averaging needs at least two checkpoint folders, got {len(folders)}")
    weights = [1.0 / len(folders)] * len(folders) if weights is None else [float(w) for w in weights]
    if len(weights) != len(folders):
        raise ValueError(f"{len(weights)} weights for {len(folders)} folders")
    if any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"weights must be non-negative and sum to 1, got {weights}")
    configs = [read_config(f, "model") for f in folders]
    for folder, config in zip(folders[1:], configs[1:]):
        differ = sorted(k for k in set(config) | set(configs[0]) if config.get(k) != configs[0].get(k))
        if differ:
            raise CheckpointError(_message(folder, f"{CONFIG_NAME} differs from {folders[0]}'s in {differ}",
                                           "only copies of one model (the same config) can be averaged"))
    states = [read_weights(f) for f in folders]
    for folder, state in zip(folders[1:], states[1:]):
        problems = _mismatches(states[0], state)
        if problems:
            raise CheckpointError(_message(folder, f"its tensors do not match {folders[0]}'s ({'; '.join(problems)})",
                                           "only copies of one model can be averaged"))
    mean: dict[str, torch.Tensor] = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            mean[name] = sum(w * s[name].float() for w, s in zip(weights, states))
        else:
            unequal = [str(f) for f, s in zip(folders[1:], states[1:]) if not torch.equal(s[name], first)]
            if unequal:
                raise CheckpointError(_message(Path(unequal[0]), f"the non-floating tensor {name} differs from "
                                               f"{folders[0]}'s", "ids and flags cannot be averaged"))
            mean[name] = first
    with safe_open(str(folders[0] / WEIGHTS_NAME), framework="pt") as f:
        metadata = f.metadata()
    return write_checkpoint(out, configs[0], mean, storage_dtype, metadata)


# -- plain functions, for modules that do not use the mixin ----------------------------------
def save_checkpoint(model: nn.Module, config: Any, path: str | Path, storage_dtype: str = "float32") -> Path:
    """Save ``model`` and its dataclass ``config`` as :class:`PretrainedMixin` does."""
    meta = {"format": "pt", "model": f"armani.{type(model).__name__}"}
    return write_checkpoint(path, dataclasses.asdict(config), model.state_dict(), storage_dtype, meta)


def load_checkpoint(model_cls: type, config_cls: type, path: str | Path,
                    map_location: str | torch.device = "cpu") -> Any:
    """``model_cls(config_cls(**config.json))`` with the weights of ``model.safetensors``, with
    the checks and errors of :meth:`PretrainedMixin.from_pretrained`."""
    path = Path(path)
    model = model_cls(build_config(config_cls, read_config(path, model_cls.__name__), path))
    load_weights(model, path)
    return model.to(map_location)


__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "CheckpointNotFound",
    "PretrainedMixin",
    "average_checkpoints",
    "build_config",
    "load_checkpoint",
    "load_weights",
    "read_config",
    "read_weights",
    "save_checkpoint",
    "write_checkpoint",
]
