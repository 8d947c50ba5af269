"""A sampler is an object that holds its own settings, as a diffusers scheduler does.

Each sampler is a dataclass: its fields are its settings, :meth:`Sampler.to_dict` /
:func:`sampler_from_dict` store it in and restore it from a pipeline's ``pipeline.json``
(``{"type": "ar", "guidance_scale": 3.0, ...}``), and calling it samples token grids from a
transformer. A pipeline holds one as its default and takes another per call.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

SAMPLERS: dict[str, type["Sampler"]] = {}


@dataclasses.dataclass
class Sampler:
    """Base class: subclasses set ``type`` and implement ``__call__`` and :meth:`num_steps`."""

    type: ClassVar[str] = ""
    # The transformer kind it samples from: a causal (autoregressive) or bidirectional one.
    causal: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.type:
            SAMPLERS[cls.type] = cls

    def to_dict(self) -> dict[str, Any]:
        out = {"type": self.type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def with_options(self, **options: Any) -> "Sampler":
        """A copy with some settings changed; an unknown setting is a TypeError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no setting(s) {unknown}; its settings are {sorted(known)}")
        return dataclasses.replace(self, **options)

    def converted(self, kind: str) -> "Sampler":
        """A sampler of type ``kind`` that keeps every setting the two types share
        (guidance, temperature, top-k, precision); the others take their defaults."""
        if kind == self.type:
            return self
        if kind not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {kind!r}")
        target = SAMPLERS[kind]
        shared = {f.name for f in dataclasses.fields(target)} & {f.name for f in dataclasses.fields(self)}
        return target(**{name: getattr(self, name) for name in shared})

    def num_steps(self, image_len: int) -> int:
        """How many progress steps sampling a grid of ``image_len`` tokens takes."""
        raise NotImplementedError


def sampler_from_dict(data: dict[str, Any]) -> Sampler:
    """The inverse of :meth:`Sampler.to_dict`."""
    data = dict(data)
    kind = data.pop("type", None)
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler type {kind!r}; one of {sorted(SAMPLERS)}")
    cls = SAMPLERS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"sampler {kind!r} has no setting(s) {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def make_sampler(sampler: "str | Sampler", **settings: Any) -> Sampler:
    """A sampler object from a sampler or its type name (``"ar"`` / ``"nar"``) plus settings."""
    if isinstance(sampler, Sampler):
        return sampler.with_options(**settings)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)} or a Sampler, got {sampler!r}")
    return SAMPLERS[sampler]().with_options(**settings)


__all__ = ["SAMPLERS", "Sampler", "make_sampler", "sampler_from_dict"]
