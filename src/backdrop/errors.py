"""Errors raised by backdrop.

Every error the library raises on purpose is a :class:`BackdropError`; the CLI prints its
message on one line and exits non-zero (``--debug`` shows the traceback).

    BackdropError
    ├── InputError                  an input image cannot be used (missing, unreadable, too big, ...)
    ├── ConfigError                 an option or config value is invalid (also a ValueError)
    │   ├── UnknownBackendError     a backend name that no registry knows
    │   └── JobOptionError          a Job option (augment/run) is invalid: names the option and its flag
    ├── MissingDependencyError      an optional extra is not installed
    ├── ModelError                  a model cannot be used
    │   ├── ModelNotFoundError      not in the store / cache and not reachable
    │   └── ModelCorruptError       present but fails its sha256 or does not load
    ├── OutputExistsError           an output would be overwritten without --overwrite
    ├── OutputError                 the output cannot be written (read-only, full disk, I/O error)
    └── GenerationError             a backend failed while running
"""

from __future__ import annotations


class BackdropError(Exception):
    """Base class: a failure the user can act on, described in one line."""

    exit_code = 1


class InputError(BackdropError):
    """An input image is missing, unreadable, of an unsupported kind or too large."""

    exit_code = 2


class ConfigError(BackdropError, ValueError):
    """An option or config value is invalid: says what was expected, what came, how to fix it.
    A ValueError too, so Python callers can catch a bad value the usual way."""

    exit_code = 2


class UnknownBackendError(ConfigError):
    """A backend name that the stage's registry does not know; the message lists valid names."""


class JobOptionError(ConfigError):
    """An option of a run or augment job is invalid. ``option`` is its Python name; the message
    names it with its CLI flag and the values allowed."""

    def __init__(self, option: str, problem: str, flag: str | None = None):
        self.option = option
        super().__init__(f"{option} ({flag}): {problem}" if flag else f"{option}: {problem}")


class MissingDependencyError(BackdropError):
    """An optional dependency is not installed; the message names the extra to install."""

    exit_code = 3

    def __init__(self, package: str, extra: str, what: str | None = None):
        self.package = package
        self.extra = extra
        need = f"{what} needs " if what else ""
        super().__init__(
            f"{need}the '{package}' package: pip install 'backdrop[{extra}]'"
        )


class ModelError(BackdropError):
    """A model cannot be used."""

    exit_code = 4


class ModelNotFoundError(ModelError):
    """A model is neither in the store or cache nor reachable; the message says how to get it."""


class ModelCorruptError(ModelError):
    """A model file fails its checksum or does not load; the message gives the fixing command."""


class OutputExistsError(BackdropError):
    """An output folder or file exists and ``overwrite`` was not asked for."""

    exit_code = 5


class OutputError(BackdropError):
    """The output folder cannot be written: read-only, full, or an I/O error (the path is named)."""

    exit_code = 7


class GenerationError(BackdropError):
    """A backend failed while running on an image."""

    exit_code = 6
