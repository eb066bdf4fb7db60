"""Registries of named backends, one per stage, imported lazily.

A registry maps a backend name to a ``"module:Class"`` string. Nothing is imported until a
backend is asked for, so ``import backdrop`` stays light. The registries are the only lists of
backends: CLI help, ``backdrop backends``, error messages and the README's table (checked by a
test) come from them; ``REGISTRY.register(name, "module:Class", "what it is")`` adds one.
Each backend class subclasses its stage's contract (:mod:`backdrop.stages`) and has:

- ``name``: its registry name;
- ``__init__(self, config)``: built from its own stage's config dataclass only;
- ``__call__(...)``: the stage's one call (see each stage package's Protocol);
- ``availability(config) -> str | None`` (classmethod, optional): ``None`` when the backend
  can run here, else a one-line reason (a missing extra, missing weights).

>>> from backdrop.segment import SEGMENTERS
>>> "classical" in SEGMENTERS.names()
True
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from .errors import MissingDependencyError, UnknownBackendError


@dataclass(frozen=True)
class Availability:
    name: str
    usable: bool
    reason: str  # "ok" or why not


class Registry:
    """Named backends of one stage."""

    def __init__(self, stage: str, entries: dict[str, str | type], descriptions: dict[str, str] | None = None):
        self.stage = stage
        self._entries = dict(entries)
        self.descriptions = dict(descriptions or {})

    def register(self, name: str, target: str | type, description: str = "", *, replace: bool = False) -> None:
        """Add a backend: ``target`` is ``"package.module:Class"`` (imported when first asked for) or
        the class itself. CLI help, ``backdrop backends`` and error messages list it from then on."""
        if name in self._entries and not replace:
            raise UnknownBackendError(f"{self.stage} backend {name!r} is already registered")
        self._entries[name] = target
        if description:
            self.descriptions[name] = description

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self.descriptions.pop(name, None)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def check_name(self, name: str) -> None:
        if name not in self._entries:
            raise UnknownBackendError(
                f"unknown {self.stage} backend {name!r}; choose one of: {', '.join(self.names())}"
            )

    def load(self, name: str) -> type:
        """Import and return the backend class registered as ``name``."""
        self.check_name(name)
        target = self._entries[name]
        if isinstance(target, type):
            return target
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name, package=__package__)
        return getattr(module, attr)

    def capability(self, name: str, flag: str) -> Any:
        """What backend ``name`` declares for ``flag`` (a class attribute of the stage's contract,
        ``backdrop.stages``), before one is built: the contract's default where a registered class
        that does not subclass it leaves the flag out."""
        from .stages import STAGES

        return getattr(self.load(name), flag, getattr(STAGES[self.stage], flag))

    def create(self, name: str, config: Any) -> Any:
        """Build the backend ``name`` from its stage ``config``."""
        return self.load(name)(config)

    def availability(self, name: str, config: Any) -> Availability:
        """Whether backend ``name`` can run here (dependencies installed, weights present)."""
        try:
            cls = self.load(name)
        except MissingDependencyError as exc:
            return Availability(name, False, str(exc))
        except ImportError as exc:  # a dependency of the backend module itself
            return Availability(name, False, f"cannot import: {exc}")
        check = getattr(cls, "availability", None)
        reason = check(config) if check else None
        return Availability(name, reason is None, reason or "ok")


def require(module: str, extra: str, what: str | None = None) -> Any:
    """Import an optional dependency or raise MissingDependencyError naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        if exc.name and exc.name.split(".")[0] != package:
            # the package is there but one of its own dependencies is not
            raise MissingDependencyError(exc.name.split(".")[0], extra, what) from exc
        raise MissingDependencyError(package, extra, what) from exc


def has_module(module: str) -> bool:
    """True when ``module`` can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None

