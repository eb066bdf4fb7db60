"""rembg segmenter: ISNet, U2-Net, BiRefNet, ... on onnxruntime, one session per segmenter.

``SegmentConfig.model`` may be

- a model-store name (``isnet-small``, ``isnet-medium``: `backdrop models pull NAME`), run through
  rembg's ``dis_custom`` session (ISNet pre/post-processing at 1024x1024);
- a path to an ``.onnx`` file with ISNet's input/output (1x3x1024x1024 -> 1x1x1024x1024), also run
  through ``dis_custom``;
- any rembg model name (``isnet-general-use``, ``u2net``, ``birefnet-general``, ...), which rembg
  loads from its cache (``~/.u2net`` or ``$U2NET_HOME``) or downloads on first use (needs internet).

>>> from backdrop.config import SegmentConfig
>>> seg = RembgSegmenter(SegmentConfig(backend="rembg", model="isnet-medium", device="cpu"))  # doctest: +SKIP
>>> mask = seg(image)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from PIL import Image

from .. import models, runlog
from ..config import SegmentConfig
from ..errors import ConfigError, MissingDependencyError, ModelNotFoundError
from ..registry import has_module, require
from ..stages import Segmenter

log = logging.getLogger(__name__)

_ENV_LOCK = threading.Lock()
_DEVICE_PROVIDERS = {"cuda": "CUDAExecutionProvider", "mps": "CoreMLExecutionProvider"}


def _is_path(model: str) -> bool:
    return model.lower().endswith(".onnx") or "/" in model or os.sep in model or Path(model).is_file()


def resolve_model(model: str) -> tuple[str, Optional[Path]]:
    """``("file", path)`` for a store name or an .onnx path, ``("rembg", None)`` for a rembg name.

    Raises ModelNotFoundError when a store model is not pulled or a path does not exist.
    """
    if models.is_store_name(model) and models.get_spec(model).source != "rembg":
        spec = models.get_spec(model)
        if spec.task != "segment":
            raise ConfigError(f"segment.model: {model!r} is a {spec.task} model, not a segmentation model")
        return "file", models.path(model)
    if _is_path(model):
        file = Path(model).expanduser()
        if not file.is_file():
            raise ModelNotFoundError(f"segment.model: no ONNX file at {file}")
        return "file", file.resolve()
    return "rembg", None


def _providers(device: str) -> list[str]:
    ort = require("onnxruntime", "segment", "the rembg segmenter")
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in _DEVICE_PROVIDERS:
        wanted = _DEVICE_PROVIDERS[device]
        if wanted not in available:
            raise ConfigError(
                f"segment.device is {device!r} but onnxruntime has no {wanted} (available: {', '.join(available)}); "
                f"install onnxruntime-gpu for CUDA, or use device 'cpu' or 'auto'"
            )
        return [wanted, "CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:  # auto
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@contextlib.contextmanager
def _rembg_home(folder: Path) -> Iterator[None]:
    """Point rembg's model home (U2NET_HOME) at ``folder`` while a dis_custom session is made.

    rembg 2.0.86 only loads ``model_path`` files inside its model home; the variable is read at
    session creation only, so it is restored right after.
    """
    with _ENV_LOCK:
        old = os.environ.get("U2NET_HOME")
        os.environ["U2NET_HOME"] = str(folder)
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("U2NET_HOME", None)
            else:
                os.environ["U2NET_HOME"] = old


class RembgSegmenter(Segmenter):
    """Foreground mask from a rembg session; alpha at or above ``threshold`` is foreground (255)."""

    name = "rembg"

    def __init__(self, config: SegmentConfig):
        self.config = config
        self._kind, self._file = resolve_model(config.model)
        self._providers = _providers(config.device)
        self._rembg = require("rembg", "segment", "the rembg segmenter")
        self._session: Any = None
        self._runner: Any = None
        self.runtime = self._resolve_runtime()
        if self.uses_runner:
            # an ISNet file runs converted (any input side, only the final output, tuned session):
            # the same mask as rembg's at 1024, and box crops at the side that suits them
            self.provider = self.runner.provider
        else:
            if config.size != 1024 or config.runtime not in ("auto", "onnxruntime"):
                raise ConfigError(
                    f"segment.size/runtime apply to ISNet files (store models, .onnx paths), not to rembg's "
                    f"{config.model!r}{' with alpha matting' if config.alpha_matting else ''}; leave them at 1024/onnxruntime"
                )
            self.provider = self.session.inner_session.get_providers()[0]
        if config.device in _DEVICE_PROVIDERS and self.provider != _DEVICE_PROVIDERS[config.device]:
            raise ConfigError(
                f"segment.device is {config.device!r} but onnxruntime fell back to {self.provider} "
                f"(CUDA/cuDNN libraries missing?); fix the install or use device 'cpu' or 'auto'"
            )
        log.info("rembg session %s on %s", self.model_label, self.provider)

    def _resolve_runtime(self) -> str:
        """``auto``: OpenVINO where the model runs on the CPU and openvino is installed, else onnxruntime."""
        if self.config.runtime != "auto":
            return self.config.runtime
        on_cpu = self._providers[0] == "CPUExecutionProvider"
        return "openvino" if on_cpu and self._kind == "file" and has_module("openvino") else "onnxruntime"

    @property
    def uses_runner(self) -> bool:
        """ISNet files (not rembg's own models, not alpha matting) run through segment.isnet."""
        return self._kind == "file" and not self.config.alpha_matting

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = self._new_session()
        return self._session

    @property
    def runner(self) -> Any:
        if self._runner is None:
            from .isnet import IsnetRunner

            self._runner = IsnetRunner(self._file, runtime=self.runtime, providers=self._providers)
        return self._runner

    @property
    def model_label(self) -> str:
        return f"{self.config.model} ({self._file})" if self._file else self.config.model

    def describe(self) -> dict[str, Any]:
        """Facts for the run record (run.json's backends.segment): model, file, provider."""
        out = {"model": self.config.model, "file": str(self._file) if self._file else None,
               "provider": self.provider, "alpha_matting": self.config.alpha_matting,
               "threshold": self.config.threshold}
        if self.uses_runner:
            out.update(size=self.config.size, runtime=self.runtime)
        return out

    def _new_session(self):
        new_session = self._rembg.new_session
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rembg's provider-fallback warning: we check it
            if self._kind == "file":
                with _rembg_home(self._file.parent):
                    try:
                        return new_session("dis_custom", model_path=str(self._file), providers=self._providers)
                    except Exception as exc:  # onnxruntime raises its own types for a bad file
                        from ..errors import ModelCorruptError

                        hint = f"; run `backdrop models pull {self.config.model}`" if models.is_store_name(self.config.model) else ""
                        raise ModelCorruptError(
                            f"cannot load {self._file} as an ONNX model ({type(exc).__name__}: {_first_line(exc)}){hint}"
                        ) from exc
            known = set(self._rembg.bg.sessions_names)
            if self.config.model not in known:
                raise ConfigError(
                    f"segment.model: {self.config.model!r} is neither a store model ({', '.join(_store_segmenters())}), "
                    f"an .onnx path, nor a rembg model ({', '.join(sorted(known))})"
                )
            cached = models.rembg_cached(self.config.model)
            try:
                return new_session(self.config.model, providers=self._providers)
            except MissingDependencyError:
                raise
            except Exception as exc:
                if cached is not None:
                    raise
                raise ModelNotFoundError(
                    f"rembg model {self.config.model} is not downloaded and could not be fetched "
                    f"({type(exc).__name__}): no network? {_offline_hint(self.config.model)}"
                ) from None

    def __call__(self, image: Image.Image) -> Image.Image:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if self.uses_runner:
            prob = self.runner.probabilities(rgb, self.config.size, normalise=True)
            alpha = Image.fromarray((prob * 255).astype(np.uint8), "L")
        elif self.config.alpha_matting:
            cut = self._rembg.remove(rgb, session=self.session, alpha_matting=True)
            alpha = cut.getchannel("A")
        else:
            alpha = self._rembg.remove(rgb, session=self.session, only_mask=True)
        alpha = alpha.convert("L")
        if alpha.size != rgb.size:
            alpha = alpha.resize(rgb.size, Image.Resampling.BILINEAR)
        a = np.asarray(alpha)
        mask = np.where(a >= self.config.threshold, 255, 0).astype(np.uint8)
        runlog.note("segment_provider", self.provider)
        runlog.note("segment_model", self.config.model)
        share = float(mask.mean()) / 255.0
        if share < 0.001 or share > 0.995:
            runlog.warn(f"segment: rembg found {'almost no' if share < 0.001 else 'only'} foreground "
                        f"({share:.1%} of the image); check the mask")
        return Image.fromarray(mask, mode="L")

    def crop_probabilities(self, crop: Image.Image) -> np.ndarray:
        """The model's probabilities (0..1) for a box's crop, at the input side that suits the crop
        (never above ``size`` nor isnet.CROP_LIMIT): for segment.boxes."""
        rgb = crop if crop.mode == "RGB" else crop.convert("RGB")
        runlog.note("segment_provider", self.provider)
        if self.uses_runner:
            from .isnet import CROP_LIMIT, crop_side

            return self.runner.probabilities(rgb, crop_side(*rgb.size, limit=min(self.config.size, CROP_LIMIT)))
        alpha = self._rembg.remove(rgb, session=self.session, only_mask=True).convert("L")
        if alpha.size != rgb.size:
            alpha = alpha.resize(rgb.size, Image.Resampling.BILINEAR)
        return np.asarray(alpha, np.float32) / 255.0

    @classmethod
    def availability(cls, config: SegmentConfig) -> Optional[str]:
        """None when this backend can run here, else why not (missing package, weights not downloaded)."""
        for module in ("rembg", "onnxruntime"):
            if not has_module(module):
                return str(MissingDependencyError(module, "segment", "the rembg segmenter"))
        if config.device in _DEVICE_PROVIDERS:
            try:
                _providers(config.device)
            except ConfigError as exc:
                return str(exc)
        model = config.model
        try:
            kind, _ = resolve_model(model)
        except (ModelNotFoundError, ConfigError) as exc:
            return str(exc)
        except Exception as exc:  # a corrupt store file (size mismatch)
            return str(exc)
        if kind == "rembg" and models.rembg_cached(model) is None:
            return f"rembg model {model} is not downloaded (rembg would fetch it at run time, which needs internet); {_offline_hint(model)}"
        return None


def _store_segmenters() -> list[str]:
    return [s.name for s, _ in models.list_models() if s.task == "segment" and s.source != "rembg"]


def _offline_hint(model: str) -> str:
    where = models.rembg_locations(model)[1].parent
    if models.is_store_name(model):
        return f"run `backdrop models pull {model}`, or copy {model}.onnx into {where}"
    store = ", ".join(_store_segmenters())
    return f"copy {model}.onnx into {where}, or use a store model ({store}: `backdrop models pull NAME`)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""
