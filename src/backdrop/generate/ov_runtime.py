"""OpenVINO runtime for the diffusion generators on the CPU (``GenerateConfig.runtime = "openvino"``).

The diffusers pipeline is loaded as usual (LoRAs fused, tiny VAE set); then its UNet and the VAE
decoder that ``pipe.vae.decode`` calls (TAESD's decoder, or the full VAE's ``decoder``; the 1x1
``post_quant_conv`` before it stays in torch) are converted to OpenVINO IR with
``openvino.convert_model`` and their ``forward`` is swapped for the compiled models. Everything
else (text encoders, scheduler, CFG, callbacks, ``torch.Generator`` seeding, the VAE encoder of
img2img and inpainting) stays the diffusers code it was, so an image is the torch image up to the
runtime's floating point (and bf16, where OpenVINO chooses it).

**IR cache.** Conversion takes minutes and ~12 GB RAM for SD 1.5, so the IR is kept under
``$BACKDROP_HOME/cache/openvino/<key>/`` (``unet.xml``/``.bin``, ``decoder.xml``/``.bin``,
``key.json``). The key hashes everything that changes the weights or the graph: the model's files
(local folder or Hub snapshot: relative path, size, mtime), the fused LoRAs (A1111 hash of the
tensors) and their scales, the tiny VAE's files, the UNet's inputs, the dtype and the torch /
diffusers / openvino versions. It holds no image size: the IR keeps batch, height, width and
text length dynamic (traced at a latent size that is *not* a multiple of the UNet's up-sampling
factor, so diffusers' ``upsample_size`` path, which is right for every size, is the one traced).
An entry is written in a temporary folder and renamed into place under an exclusive ``flock`` on
``<key>.lock``: a second process waits for the first and then reads its entry.

**Shapes.** Each call's input shapes (batch with CFG doubling, latent height and width) get a
static reshape of the IR compiled for them, as the benchmark measured; the last
:data:`MAX_COMPILED` shapes per module are kept compiled.

**Precision.** ``openvino_precision="auto"`` leaves OpenVINO's default for the CPU (bf16 where it
has AMX / AVX512-BF16, else f32); ``"f32"`` asks for f32. The precision actually compiled is read
back (``INFERENCE_PRECISION_HINT``) for ``describe()``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from ..errors import ConfigError, GenerationError
from ..outputs import install_dir
from ..registry import require

log = logging.getLogger(__name__)

EXTRA = "openvino"
IR_FORMAT = 1  # bump when the conversion below changes what an IR holds
MAX_COMPILED = 2  # compiled static shapes kept per module (each holds a copy of the weights)
PRECISIONS = ("auto", "f32")


def cache_root() -> Path:
    """``$BACKDROP_HOME/cache/openvino``."""
    from ..models import home

    return home() / "cache" / "openvino"


# -- the cache key --------------------------------------------------------------------------------


def local_folder(name: str, index_file: str) -> Optional[Path]:
    """The folder a model was loaded from: a local folder, the store's, or the Hub cache snapshot."""
    from .. import hf

    resolved = hf.resolve(name, index_file)
    if hf.looks_local(resolved):
        path = Path(resolved).expanduser()
        return path.resolve() if path.exists() else None
    found = hf.cached_file(resolved, index_file)
    return Path(found).parent if found else None


def files_fingerprint(folder: Path, subfolders: Sequence[str] = ("",)) -> list[list[Any]]:
    """``[relative path, size, mtime_ns]`` of the files under ``folder``'s ``subfolders`` (links followed)."""
    rows: list[list[Any]] = []
    for sub in subfolders:
        base = folder / sub if sub else folder
        if base.is_file():
            st = base.stat()
            rows.append([sub or base.name, st.st_size, st.st_mtime_ns])
            continue
        if not base.is_dir():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            st = path.stat()
            rows.append([path.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns])
    return rows


def source_identity(name: str, index_file: str, subfolders: Sequence[str] = ("",)) -> dict[str, Any]:
    """What identifies a model's weights: its folder's files, or its name where no folder is found."""
    folder = local_folder(name, index_file)
    if folder is None:
        return {"name": name}
    return {"folder": str(folder), "files": files_fingerprint(folder, subfolders)}


def cache_key(parts: dict[str, Any]) -> str:
    """24 hex digits of the sha256 of ``parts`` (JSON, sorted keys).

    >>> cache_key({"a": 1}) == cache_key({"a": 1}) != cache_key({"a": 2})
    True
    """
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def versions() -> dict[str, str]:
    import diffusers
    import openvino
    import torch

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "openvino": openvino.get_version(),
            "ir_format": str(IR_FORMAT)}


# -- what the UNet takes ------------------------------------------------------------------------------


def unet_inputs(unet_config: Any) -> list[str]:
    """The UNet's inputs for its family; ConfigError for a UNet this runtime does not convert.

    SD 1.x / 2.x (incl. 9-channel inpainting): sample, timestep, encoder_hidden_states;
    LCM-distilled (``time_cond_proj_dim``): + timestep_cond; SDXL (``text_time``): + text_embeds, time_ids.
    """
    names = ["sample", "timestep", "encoder_hidden_states"]
    if getattr(unet_config, "time_cond_proj_dim", None) is not None:
        names.append("timestep_cond")
    added = getattr(unet_config, "addition_embed_type", None)
    if added == "text_time":
        names += ["text_embeds", "time_ids"]
    elif added is not None:
        raise ConfigError(f"runtime openvino: UNets with addition_embed_type {added!r} are not supported; "
                          "use --runtime torch")
    if getattr(unet_config, "encoder_hid_dim_type", None) is not None:
        raise ConfigError("runtime openvino: UNets with an encoder_hid_proj (image embeddings) are not supported; "
                          "use --runtime torch")
    if getattr(unet_config, "class_embed_type", None) is not None or \
            getattr(unet_config, "num_class_embeds", None) is not None:
        raise ConfigError("runtime openvino: UNets with class embeddings (e.g. the x4 upscaler) are not "
                          "supported; use --runtime torch")
    return names


def _unet_module(unet: Any, names: list[str]) -> Any:
    import torch

    class UNetIO(torch.nn.Module):
        """The UNet as a plain function of tensors, in ``names`` order (what is traced)."""

        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, *args: Any) -> Any:
            kw = dict(zip(names, args))
            added = ({"text_embeds": kw["text_embeds"], "time_ids": kw["time_ids"]}
                     if "text_embeds" in kw else None)
            return self.unet(kw["sample"], kw["timestep"], kw["encoder_hidden_states"],
                             timestep_cond=kw.get("timestep_cond"), added_cond_kwargs=added, return_dict=False)[0]

    return UNetIO().eval()


def _unet_example(pipe: Any, names: list[str]) -> tuple[Any, ...]:
    """Example inputs: batch 2, a latent side that is not a multiple of the up-sampling factor."""
    import torch

    cfg = pipe.unet.config
    up = 2 ** max(0, len(cfg.block_out_channels) - 1)
    side = 2 * up + 1
    batch = 2
    g = torch.Generator("cpu").manual_seed(0)
    ex = {
        "sample": torch.randn(batch, cfg.in_channels, side, side + up, generator=g),
        "timestep": torch.full((batch,), 500.0),
        "encoder_hidden_states": torch.randn(batch, 77, cfg.cross_attention_dim, generator=g),
    }
    if "timestep_cond" in names:
        ex["timestep_cond"] = torch.randn(batch, cfg.time_cond_proj_dim, generator=g)
    if "text_embeds" in names:
        time_ids = 6
        pooled = cfg.projection_class_embeddings_input_dim - time_ids * cfg.addition_time_embed_dim
        ex["text_embeds"] = torch.randn(batch, pooled, generator=g)
        ex["time_ids"] = torch.tensor([[side * 8.0, side * 8.0, 0.0, 0.0, side * 8.0, side * 8.0]] * batch)
    return tuple(ex[n] for n in names)


# -- converting and caching ------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: rename-wins below still keeps one entry
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _convert(pipe: Any, names: list[str], decoder: bool, folder: Path) -> list[str]:
    """Write ``unet.xml`` (and ``decoder.xml``) into ``folder``; returns what was converted."""
    import openvino as ov
    import torch

    done = []
    t = time.perf_counter()
    # tracing warns about every shape check in diffusers' code; the traced example is chosen so that
    # the branches taken are right for every size (see the module's docstring)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace, which convert_model uses
        model = ov.convert_model(_unet_module(pipe.unet, names), example_input=_unet_example(pipe, names))
    ov.save_model(model, folder / "unet.xml", compress_to_fp16=False)
    del model
    gc.collect()
    done.append("unet")
    if decoder:
        z = torch.randn(1, pipe.vae.config.latent_channels, 9, 11, generator=torch.Generator("cpu").manual_seed(0))
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            model = ov.convert_model(pipe.vae.decoder.eval(), example_input=(z,))
        ov.save_model(model, folder / "decoder.xml", compress_to_fp16=False)
        del model
        gc.collect()
        done.append("decoder")
    log.info("converted %s to OpenVINO IR in %.0f s", " and ".join(done), time.perf_counter() - t)
    return done


def ensure_ir(pipe: Any, parts: dict[str, Any], names: list[str], decoder: bool,
              root: Optional[Path] = None) -> tuple[Path, list[str]]:
    """The cached IR folder for ``parts`` (converted now if absent) and what this call converted."""
    root = root or cache_root()
    key = cache_key(parts)
    entry = root / key
    wanted = ["unet.xml"] + (["decoder.xml"] if decoder else [])
    if all((entry / f).is_file() for f in wanted):
        return entry, []
    with _locked(root / f"{key}.lock"):
        if all((entry / f).is_file() for f in wanted):  # another process made it while we waited
            return entry, []
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            converted = _convert(pipe, names, decoder, tmp)
            (tmp / "key.json").write_text(json.dumps(parts, indent=1, sort_keys=True, default=str),
                                          encoding="utf-8")
            install_dir(tmp, entry)  # an incomplete entry (e.g. without the decoder): replaced whole
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return entry, converted


# -- compiled models ------------------------------------------------------------------------------------


class CompiledIR:
    """One IR file, reshaped and compiled for the CPU per input shapes (the last few kept)."""

    def __init__(self, core: Any, xml: Path, config: dict[str, Any]):
        self.core, self.xml, self.config = core, xml, config
        self._compiled: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()
        self.precision: Optional[str] = None

    def _request(self, shapes: tuple) -> Any:
        import openvino as ov

        if shapes in self._compiled:
            self._compiled.move_to_end(shapes)
            return self._compiled[shapes][1]
        while len(self._compiled) >= MAX_COMPILED:
            self._compiled.popitem(last=False)
            gc.collect()
        t = time.perf_counter()
        model = self.core.read_model(self.xml)
        model.reshape({model.input(i): ov.PartialShape(list(s)) for i, s in enumerate(shapes)})
        compiled = self.core.compile_model(model, "CPU", self.config)
        del model
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        log.info("compiled %s for %s (%s) in %.1f s", self.xml.stem, shapes, self.precision, time.perf_counter() - t)
        self._compiled[shapes] = (compiled, compiled.create_infer_request())
        return self._compiled[shapes][1]

    def __call__(self, arrays: Sequence[Any]) -> Any:
        request = self._request(tuple(tuple(a.shape) for a in arrays))
        out = request.infer(list(arrays), share_inputs=True)
        return out[0].copy()  # the request's output buffer is reused by the next call


def _as_numpy(x: Any) -> Any:
    return x.detach().to("cpu").float().contiguous().numpy()


def free_weights(module: Any) -> None:
    """Drop a torch module's parameter and buffer storage; its config and dtype stay readable."""
    import torch

    for t in list(module.parameters()) + list(module.buffers()):
        t.data = torch.empty(0, dtype=t.dtype, device=t.device)
    gc.collect()


class OVRuntime:
    """The UNet (and VAE decoder) of a loaded pipeline, converted, cached, compiled and swapped in."""

    def __init__(self, pipe: Any, parts: dict[str, Any], *, precision: str = "auto", threads: int = 1,
                 decoder: bool = True, root: Optional[Path] = None):
        import torch

        ov = require("openvino", EXTRA, "--runtime openvino")
        if precision not in PRECISIONS:
            raise ConfigError(f"generate.openvino_precision: expected one of {', '.join(PRECISIONS)}, "
                              f"got {precision!r}")
        dtype = getattr(pipe.unet, "dtype", torch.float32)
        if dtype != torch.float32:
            raise ConfigError(f"runtime openvino converts float32 weights, the pipeline is {dtype}; use "
                              "--dtype auto or float32 (OpenVINO picks bf16 itself with openvino_precision auto)")
        self.names = unet_inputs(pipe.unet.config)
        self.parts = {**parts, "unet_inputs": self.names, "decoder": decoder, "vae": type(pipe.vae).__name__,
                      **versions()}
        self.folder, self.converted = ensure_ir(pipe, self.parts, self.names, decoder, root)
        self.threads = int(threads)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads}
        if precision == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        core = ov.Core()
        self.unet = CompiledIR(core, self.folder / "unet.xml", config)
        self.decoder = CompiledIR(core, self.folder / "decoder.xml", config) if decoder else None
        # what the CPU will compile to (read back from each compiled model once there is one)
        self._expected = (config.get("INFERENCE_PRECISION_HINT")
                          or core.get_property("CPU", "INFERENCE_PRECISION_HINT").to_string())
        self._attach(pipe)

    @property
    def precision(self) -> str:
        """The inference precision: read back from the compiled UNet once one is compiled."""
        return self.unet.precision or self._expected

    def _unet_forward(self, sample: Any, timestep: Any, encoder_hidden_states: Any, *args: Any,
                      timestep_cond: Any = None, added_cond_kwargs: Any = None, return_dict: bool = True,
                      **kwargs: Any) -> Any:
        import torch

        extra = [k for k, v in kwargs.items() if v is not None and k != "cross_attention_kwargs"]
        extra += sorted(set(added_cond_kwargs or {}) - {"text_embeds", "time_ids"})  # e.g. IP-Adapter image_embeds
        if args or extra or (kwargs.get("cross_attention_kwargs") or {}):
            raise GenerationError("runtime openvino: this pipeline passes the UNet inputs the converted model "
                                  f"does not take ({', '.join(extra) or 'positional extras'}); use --runtime torch")
        batch = sample.shape[0]
        t = timestep if torch.is_tensor(timestep) else torch.tensor(float(timestep))
        t = t.reshape(-1).float()
        t = t.expand(batch) if t.numel() == 1 else t
        have = {"sample": sample, "timestep": t, "encoder_hidden_states": encoder_hidden_states,
                "timestep_cond": timestep_cond}
        if added_cond_kwargs:
            have.update(text_embeds=added_cond_kwargs.get("text_embeds"), time_ids=added_cond_kwargs.get("time_ids"))
        missing = [n for n in self.names if have.get(n) is None]
        if missing:
            raise GenerationError(f"runtime openvino: the UNet was called without {', '.join(missing)}")
        out = torch.from_numpy(self.unet([_as_numpy(have[n]) for n in self.names])).to(sample.dtype)
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)

    def _decoder_forward(self, sample: Any, latent_embeds: Any = None, *args: Any, **kwargs: Any) -> Any:
        import torch

        if latent_embeds is not None or args or kwargs:
            raise GenerationError("runtime openvino: the VAE decoder was called with inputs it was not converted for")
        return torch.from_numpy(self.decoder([_as_numpy(sample)])).to(sample.dtype)

    def _attach(self, pipe: Any) -> None:
        # instance attributes win over the class's forward: nn.Module.__call__ (and its hooks) stays
        pipe.unet.forward = self._unet_forward
        free_weights(pipe.unet)  # nothing calls the torch UNet any more; its config stays
        if self.decoder is not None:
            pipe.vae.decoder.forward = self._decoder_forward
            free_weights(pipe.vae.decoder)

    def describe(self) -> dict[str, Any]:
        return {"runtime": "openvino", "openvino_precision": self.precision, "openvino_threads": self.threads,
                "openvino": self.parts["openvino"]}
