"""Tiny random models built in code, for offline tests of the model backends.

Nothing is downloaded: weights come from fixed seeds, tokenizer files are written here. The
folders are saved with ``save_pretrained`` so tests load them back through the backends' real
``from_pretrained`` path, exactly as they would load a real model folder.

    make_tiny_sd(path)                 StableDiffusionPipeline folder (UNet in_channels 4)
    make_tiny_sd(path, inpaint=True)   StableDiffusionInpaintPipeline folder (UNet in_channels 9)
    make_tiny_sd(path, lcm=True)       LatentConsistencyModelPipeline folder (guidance-embedding UNet, LCMScheduler)
    make_tiny_sdxl(path)               StableDiffusionXLPipeline folder (two text encoders, text_time embedding)
    make_tiny_taesd(path)              AutoencoderTiny folder (TAESD's architecture, tiny)
    make_tiny_lora(path, sd_folder)    a peft LoRA .safetensors for the tiny SD UNet (optional metadata)
    make_tiny_git(path)                GitForCausalLM + GitProcessor folder
    make_tiny_blip(path)               BlipForConditionalGeneration + BlipProcessor folder

Each builder returns ``path`` and takes well under a second or two on a CPU.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

# Words the tiny CLIP vocabulary knows whole; other words fall back to letters.
_WORDS = ["a", "photo", "of", "the", "sky", "sea", "beach", "forest", "blurry", "grass", "sand", "lab", "bench"]
_SPECIAL = ["<|startoftext|>", "<|endoftext|>"]


def _write_clip_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A tiny byte-level BPE vocabulary in CLIP's format (``</w>`` ends a word)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens: list[str] = []
    for ch in string.ascii_lowercase + string.digits + ",.!-'":
        tokens += [ch, ch + "</w>"]
    merges: list[str] = []
    for word in _WORDS:
        # merge letter by letter from the left: ((p h) o) t ...; the last merge adds </w>
        if len(word) == 1:
            continue
        current = word[0]
        for i, ch in enumerate(word[1:], start=1):
            last = i == len(word) - 1
            right = ch + "</w>" if last else ch
            merged = current + right
            pair = f"{current} {right}"
            if pair not in merges:
                merges.append(pair)
            if merged not in tokens:
                tokens.append(merged)
            current = merged
    tokens += _SPECIAL
    vocab = {tok: i for i, tok in enumerate(tokens)}
    vocab_file = folder / "vocab.json"
    merges_file = folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def tiny_clip_tokenizer(folder: str | Path):
    """A CLIPTokenizer over the tiny vocabulary written into ``folder``."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = _write_clip_tokenizer_files(Path(folder))
    return CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=77)


def make_tiny_sd(path: str | Path, inpaint: bool = False, scheduler: str = "pndm", lcm: bool = False) -> Path:
    """Save a tiny random Stable Diffusion pipeline folder at ``path`` and return it.

    >>> folder = make_tiny_sd(tmp_path / "sd")            # doctest: +SKIP
    >>> StableDiffusionPipeline.from_pretrained(folder)    # doctest: +SKIP
    """
    import torch
    from diffusers import (
        DDIMScheduler,
        PNDMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    tokenizer = tiny_clip_tokenizer(path.parent / f".{path.name}-tokenizer-src")

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=9 if inpaint else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
        time_cond_proj_dim=16 if lcm else None,  # LCM-distilled UNets embed the guidance scale
    )
    torch.manual_seed(0)
    # three blocks: latents are 1/4 of the image side (real SD: 1/8), small enough to be quick
    vae = _tiny_vae()
    torch.manual_seed(0)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    bos = tokenizer.convert_tokens_to_ids("<|startoftext|>")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )
    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    if lcm:
        from diffusers import LatentConsistencyModelPipeline, LCMScheduler

        sched = LCMScheduler(**common)
        LatentConsistencyModelPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=sched, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False).save_pretrained(path)
        return path
    if scheduler == "ddim":
        sched = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **common)
    else:
        sched = PNDMScheduler(skip_prk_steps=True, **common)
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = cls(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )


def make_tiny_sdxl(path: str | Path, turbo: bool = False) -> Path:
    """Save a tiny random SDXL pipeline (two CLIP text encoders, ``text_time`` UNet) at ``path``.

    ``turbo``: the scheduler uses trailing timesteps, as SDXL-Turbo's does.
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    path = Path(path)
    tokenizer = tiny_clip_tokenizer(path.parent / f".{path.name}-tokenizer-src")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
        cross_attention_dim=64,  # the two encoders' hidden states side by side
        norm_num_groups=16,
    )
    torch.manual_seed(0)
    vae = _tiny_vae()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    bos = tokenizer.convert_tokens_to_ids("<|startoftext|>")
    text_cfg = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="gelu",
        bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(text_cfg)
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(text_cfg)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   steps_offset=1, timestep_spacing="trailing" if turbo else "leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=sched)
    pipe.save_pretrained(path)
    return path


def make_tiny_taesd(path: str | Path) -> Path:
    """Save a tiny random AutoencoderTiny (TAESD's architecture; latents 1/4 of the side, like
    make_tiny_sd's VAE) at ``path``."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(16, 16, 16),
        decoder_block_out_channels=(16, 16, 16),
        num_encoder_blocks=(1, 1, 1),
        num_decoder_blocks=(1, 1, 1),
        latent_channels=4,
    ).save_pretrained(path)
    return Path(path)


def make_tiny_lora(path: str | Path, sd_folder: str | Path, metadata: dict | None = None, seed: int = 0) -> Path:
    """A LoRA for the tiny SD UNet, made with peft (random, non-zero up-projections so that it
    changes the output), saved as ``path`` (a .safetensors file) with optional ``metadata``."""
    import tempfile

    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    path = Path(path)
    unet = UNet2DConditionModel.from_pretrained(Path(sd_folder) / "unet")
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = get_peft_model_state_dict(unet)
    with tempfile.TemporaryDirectory() as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers)
        saved = Path(tmp) / "pytorch_lora_weights.safetensors"
        tensors = load_file(saved)
        from safetensors import safe_open

        with safe_open(str(saved), "pt") as fh:
            meta = dict(fh.metadata() or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={**meta, **(metadata or {})})
    return path


def _write_bert_vocab(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += _WORDS + ["on", "with", "and", "blue", "green", "white", "table", "wall", "cells", "in"]
    words += list(string.ascii_lowercase) + [f"##{c}" for c in string.ascii_lowercase] + [".", ","]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(words) + "\n", encoding="utf-8")
    return vocab_file


def _tiny_image_processor(image_processor_type: str = "clip"):
    import transformers

    if image_processor_type == "blip":
        cls = getattr(transformers, "BlipImageProcessorPil", None) or transformers.BlipImageProcessor
        return cls(size={"height": 32, "width": 32})
    # the PIL flavour needs no torchvision (which is not a dependency of backdrop)
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def make_tiny_git(path: str | Path) -> Path:
    """Save a tiny random GIT captioner (model + processor) at ``path`` and return it."""
    import torch
    from transformers import BertTokenizer, GitConfig, GitForCausalLM, GitProcessor

    path = Path(path)
    vocab_file = _write_bert_vocab(path.parent / f".{path.name}-tokenizer-src")
    tokenizer = BertTokenizer(vocab=str(vocab_file), model_max_length=64)
    torch.manual_seed(0)
    config = GitConfig(
        vision_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8,
        ),
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    model = GitForCausalLM(config).eval()
    model.save_pretrained(path)
    GitProcessor(image_processor=_tiny_image_processor("clip"), tokenizer=tokenizer).save_pretrained(path)
    return path


def make_tiny_blip(path: str | Path) -> Path:
    """Save a tiny random BLIP captioner (model + processor) at ``path`` and return it."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor

    path = Path(path)
    vocab_file = _write_bert_vocab(path.parent / f".{path.name}-tokenizer-src")
    tokenizer = BertTokenizer(vocab=str(vocab_file), model_max_length=64)
    torch.manual_seed(0)
    config = BlipConfig(
        vision_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8, projection_dim=32,
        ),
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=64, encoder_hidden_size=32, projection_dim=32,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id,
        ),
        projection_dim=32,
        image_text_hidden_size=32,
    )
    model = BlipForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    BlipProcessor(image_processor=_tiny_image_processor("blip"), tokenizer=tokenizer).save_pretrained(path)
    return path


def fake_hub_cache(cache_dir: str | Path, repo_id: str, folder: str | Path) -> Path:
    """Lay ``folder`` out as a Hugging Face cache entry for ``repo_id`` under ``cache_dir``.

    The layout is the hub's (``models--org--name/refs/main`` + ``snapshots/<commit>/...``), so
    loading ``repo_id`` with ``cache_dir=cache_dir, local_files_only=True`` finds it offline.
    """
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    entry = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / "main").write_text(commit, encoding="utf-8")
    snapshot = entry / "snapshots" / commit
    shutil.copytree(folder, snapshot, dirs_exist_ok=True)
    return snapshot
