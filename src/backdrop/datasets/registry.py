"""The registry of data set formats: the one list every other list is derived from (``--format``
and its help, ``--format auto``'s search order and its "looked for" message, the Job's check, the
README's table, checked by a test).

A format is an object with ``name``, ``looks_for`` (one phrase: what ``detect`` recognises),
``detect(root) -> str | None`` and ``open(root) -> Dataset`` (see :class:`~backdrop.datasets.base.
DatasetFormat`). Adding one = one module + ``FORMATS.register(MyFormat())``. ``--format auto``
tries formats in registration order; a ``fallback`` format (``plain``: any folder of images)
is always tried last.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from ..errors import BackdropError


class FormatRegistry(Mapping[str, Any]):
    """Data set formats by name, in detection order (fallbacks last)."""

    def __init__(self) -> None:
        self._formats: dict[str, Any] = {}

    def register(self, fmt: Any, *, replace: bool = False) -> Any:
        """Add ``fmt``; refuses to shadow a name unless ``replace``. Returns ``fmt``."""
        for attr in ("name", "looks_for", "detect", "open"):
            if not hasattr(fmt, attr):
                raise BackdropError(f"data set format {fmt!r} has no {attr!r} (see backdrop.datasets.base.DatasetFormat)")
        if fmt.name in self._formats and not replace:
            raise BackdropError(f"data set format {fmt.name!r} is already registered")
        self._formats[fmt.name] = fmt
        return fmt

    def unregister(self, name: str) -> None:
        self._formats.pop(name, None)

    def _ordered(self) -> list[str]:
        names = list(self._formats)
        return [n for n in names if not self._formats[n].fallback] + [n for n in names if self._formats[n].fallback]

    def __getitem__(self, name: str) -> Any:
        return self._formats[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ordered())

    def __len__(self) -> int:
        return len(self._formats)

    def specific(self) -> list[Any]:
        """The formats that recognise a layout of their own (all but the fallbacks)."""
        return [self._formats[n] for n in self._ordered() if not self._formats[n].fallback]

    def choices(self) -> str:
        """``auto, yolo, coco, ...``: what ``--format`` takes."""
        return ", ".join(("auto", *self))

    def looked_for(self) -> str:
        """What ``--format auto`` looks for, for its error message."""
        return ", ".join(f"{name} ({self._formats[name].looks_for})" for name in self)


FORMATS = FormatRegistry()
