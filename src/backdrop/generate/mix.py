"""Generator mixes: ``swap+random`` (equal shares) or ``swap:0.7,random:0.3``.

Each variant's generator is drawn from its seed (the same seed, the same pick, on any engine and
in any order); the pick is recorded per image (``mix.seed<seed>`` in the notes; ``generator`` in
the manifest and the image's metadata). A mix reads a prompt or a clean background when any of
its parts does, and builds the set's donor store when any part draws from the set (``swap``).

>>> parse_mix("swap+random")
(('swap', 0.5), ('random', 0.5))
>>> parse_mix("swap:0.7,random:0.3")
(('swap', 0.7), ('random', 0.3))
>>> parse_mix("random") is None
True
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import numpy as np
from PIL import Image

from .. import runlog
from ..errors import ConfigError
from ..stages import Generator
from ..types import GenerateRequest

TAG = 0x6D6978  # "mix": the part's draw is apart from every other use of the seed


def parse_mix(name: str) -> Optional[tuple[tuple[str, float], ...]]:
    """``(name, share)`` pairs of a mix (shares sum to 1), or None when ``name`` is one generator."""
    if not isinstance(name, str) or ("+" not in name and "," not in name and ":" not in name):
        return None
    sep = "+" if "+" in name and "," not in name else ","
    parts = []
    for piece in name.split(sep):
        piece = piece.strip()
        gen, _, share = piece.partition(":")
        gen = gen.strip()
        try:
            w = float(share) if share.strip() else 1.0
        except ValueError:
            w = -1.0
        if not gen or not (w > 0 and np.isfinite(w)):
            raise ConfigError(f"generator mix {name!r}: expected names joined by + (swap+random) or name:share "
                              f"pairs joined by commas (swap:0.7,random:0.3), got the part {piece!r}")
        parts.append((gen, w))
    names = [g for g, _ in parts]
    if len(set(names)) != len(names) or len(parts) < 2:
        raise ConfigError(f"generator mix {name!r}: name two or more different generators (e.g. swap+random)")
    total = sum(w for _, w in parts)
    return tuple((g, round(w / total, 6)) for g, w in parts)


class MixGenerator(Generator):
    """Draws one of its parts per variant, by seed; see the module docstring."""

    name = "mix"
    generative = False
    uses_prompt = False
    uses_background = False
    needs_set = False
    spec: tuple[tuple[str, float], ...] = ()
    classes: tuple[type, ...] = ()
    registry: Any = None  # the registry that made this class (passed in: no import back up)

    def __init__(self, config: Any):
        self.config = config
        self.parts = [self.registry.create(n, replace(config, backend=n)) for n, _ in self.spec]
        self.shares = np.cumsum([w for _, w in self.spec])

    @classmethod
    def availability(cls, config: Any) -> Optional[str]:
        for n, _ in cls.spec:
            avail = cls.registry.availability(n, replace(config, backend=n))
            if not avail.usable:
                return f"{n}: {avail.reason}"
        return None

    def load(self) -> None:
        for part in self.parts:
            part.load()

    def bind_set(self, store: Any, *, variants: int, base_seed: int) -> None:
        for part in self.parts:
            if part.needs_set:
                part.bind_set(store, variants=variants, base_seed=base_seed)

    def describe(self) -> dict[str, Any]:
        return {"model": "mix", "mix": {n: w for n, w in self.spec},
                "parts": {n: p.describe() for (n, _), p in zip(self.spec, self.parts)}}

    def choose(self, seed: int) -> int:
        u = np.random.default_rng([TAG, int(seed)]).random()
        return min(int(np.searchsorted(self.shares, u, side="right")), len(self.parts) - 1)

    def __call__(self, request: GenerateRequest) -> Image.Image:
        i = self.choose(request.seed)
        runlog.note(f"mix.seed{request.seed}", self.spec[i][0])
        return self.parts[i](request)


def mix_class(spec: tuple[tuple[str, float], ...], classes: list[type], registry: Any) -> type:
    """A MixGenerator subclass for ``spec`` (its parts from ``registry``): its class attributes say
    what any of its parts needs."""
    return type("MixGenerator", (MixGenerator,), {
        "name": ",".join(f"{n}:{w:g}" for n, w in spec), "spec": spec, "classes": tuple(classes),
        "registry": registry,
        "generative": any(c.generative for c in classes),
        "uses_prompt": any(c.uses_prompt for c in classes),
        "uses_background": any(c.uses_background for c in classes),
        "needs_set": any(c.needs_set for c in classes),
        "keeps_background_colours": any(c.keeps_background_colours for c in classes),
        "default_model": next((getattr(c, "default_model") for c in classes if getattr(c, "default_model", None)),
                              None),
    })
