"""Load a family's components from a single-file checkpoint, a diffusers folder or a hub id — or build tiny ones.

Single files load **offline** through diffusers' ``from_single_file`` with a shipped config folder
(:mod:`sdlora.models.configs`; ``model.config`` overrides it) and the shipped CLIP tokenizer. Diffusers folders and
hub ids supply every component's architecture, config and tokenizer themselves; the family preset adds only
semantics (prediction type default, latent scale, which text-encoder layers, key names, time ids).

All components come back frozen (``requires_grad=False``, eval mode) in the precision's dtype; the VAE stays in
float32 for families whose VAE overflows in fp16 (SDXL).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sdlora.config.schema import Attention
from sdlora.errors import SdloraError
from sdlora.models.configs import config_dir
from sdlora.models.family import Components
from sdlora.models.presets import TINY
from sdlora.models.sources import (
    Source,
    check_kind,
    declared_prediction_type,
    folder_kind,
    is_lora,
    resolve_source,
    single_file_keys,
    single_file_kind,
)
from sdlora.models.tokenizer import load_clip_tokenizer

if TYPE_CHECKING:
    from sdlora.models.family import ModelFamily

EPSILON, V_PREDICTION = "epsilon", "v_prediction"
_SUBFOLDERS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))


def _family_kind(family: ModelFamily) -> str:
    return {"StableDiffusionXLPipeline": "sdxl"}.get(family.pipeline_class, "sd2" if family.is_v2 else "sd1")


def _config_folder(family: ModelFamily) -> Path:
    if family.config:
        folder = Path(family.config).expanduser()
        if not (folder / "model_index.json").is_file():
            raise SdloraError(f"model.config={family.config!r} is not a diffusers config folder (no model_index.json)")
        return folder
    return config_dir(family.shipped_config)


def _shipped_tokenizers(family: ModelFamily) -> list:
    return [load_clip_tokenizer(pad) for pad in family.tokenizer_pad_tokens]


def _build_from_config(family: ModelFamily, dtype: torch.dtype) -> tuple[list, str | None]:
    """Random-weight components from the shipped config, seeded with ``model.init_seed`` (tiny families)."""
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = _config_folder(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(family.init_seed)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        encoders = []
        for cls_name, (sub, _) in zip(family.text_encoder_classes, _SUBFOLDERS, strict=False):
            config = transformers.CLIPTextConfig.from_pretrained(folder / sub)
            encoders.append(getattr(transformers, cls_name)(config))
    return [unet, vae, encoders, _shipped_tokenizers(family)], None


def _load_single_file(family: ModelFamily, path: str, dtype: torch.dtype) -> tuple[list, str | None]:
    import diffusers

    keys = single_file_keys(path)
    if keys is not None and is_lora(keys):
        raise SdloraError(f"model.pretrained={path!r} is a LoRA file, not a base model: give the Stable Diffusion "
                          "checkpoint here (a LoRA to continue training from goes in network.weights)")  # fmt: skip
    if keys is not None:
        check_kind(single_file_kind(keys), _family_kind(family), family.name, path)
    tokenizers = _shipped_tokenizers(family)
    names = ("tokenizer", "tokenizer_2")[: len(tokenizers)]
    pipeline_cls = getattr(diffusers, family.pipeline_class)
    pipe = pipeline_cls.from_single_file(
        path,
        config=str(_config_folder(family)),
        torch_dtype=dtype,
        local_files_only=True,
        **dict(zip(names, tokenizers, strict=True)),
    )
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if len(tokenizers) > 1 else [])
    return [pipe.unet, pipe.vae, encoders, tokenizers], declared_prediction_type(Source("file", path))


def _load_pretrained(family: ModelFamily, source: Source, dtype: torch.dtype) -> tuple[list, str | None]:
    """Diffusers folder or hub id: each component's own config and tokenizer from its subfolder."""
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if source.kind == "folder":
        check_kind(folder_kind(Path(source.location)), _family_kind(family), family.name, source.location)
    kwargs = {"local_files_only": source.kind == "folder"}
    src = source.location
    unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", torch_dtype=dtype, **kwargs)
    vae = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=dtype, **kwargs)
    encoders, tokenizers = [], []
    for cls_name, (te_sub, tok_sub) in zip(family.text_encoder_classes, _SUBFOLDERS, strict=False):
        te_cls = getattr(transformers, cls_name)
        encoders.append(te_cls.from_pretrained(src, subfolder=te_sub, torch_dtype=dtype, **kwargs))
        tokenizers.append(transformers.CLIPTokenizer.from_pretrained(src, subfolder=tok_sub, **kwargs))
    return [unet, vae, encoders, tokenizers], declared_prediction_type(source)


def load_vae(family: ModelFamily, value: str, dtype: torch.dtype) -> torch.nn.Module:
    """``model.vae``: a VAE folder (diffusers, or a pipeline folder with ``vae/``) or a single VAE file."""
    from diffusers import AutoencoderKL

    source = resolve_source(value, option="model.vae")
    try:
        if source.kind == "file":
            config = str(_config_folder(family))
            return AutoencoderKL.from_single_file(
                source.location, config=config, subfolder="vae", torch_dtype=dtype, local_files_only=True
            )
        folder = Path(source.location)
        sub = "vae" if (folder / "vae" / "config.json").is_file() else None
        local = source.kind == "folder"
        return AutoencoderKL.from_pretrained(source.location, subfolder=sub, torch_dtype=dtype, local_files_only=local)
    except Exception as exc:
        raise SdloraError(f"could not load model.vae={value!r}: {type(exc).__name__}: {exc}") from exc


def _load_hint(kind: str, exc: Exception) -> str:
    """What to check when loading ``model.pretrained`` failed: a hub look-up, or layers of other sizes than the
    preset's config (a tiny model's file, or another architecture)."""
    if kind == "hub":
        return (
            " (it is no local file or folder, so it was looked up on the Hugging Face hub: check the id and the "
            "connection, or point model.pretrained at a downloaded .safetensors file or diffusers folder)"
        )
    if kind == "file" and "expected shape" in str(exc):
        return (
            " (its layers have other sizes than this preset's: a file written by sdlora-export-model loads with its "
            f"tiny preset, model={' / '.join(TINY)}; another architecture needs model.config=<its diffusers config "
            "folder>)"
        )
    return ""


def load_components(family: ModelFamily, weight_dtype: torch.dtype, vae_dtype: torch.dtype | None = None) -> Components:
    """Load or build ``family``'s components, frozen, in ``weight_dtype`` (the VAE in ``vae_dtype``, by default fp32
    for families whose VAE overflows in fp16, else ``weight_dtype``); resolve the prediction type."""
    if family.pretrained is None:
        if not family.tiny:
            raise SdloraError(f"model.pretrained is required for model={family.name}")
        parts, found, where = *_build_from_config(family, weight_dtype), f"random weights (seed {family.init_seed})"
    else:
        source = resolve_source(family.pretrained)
        where = source.location
        try:
            loader = _load_single_file if source.kind == "file" else _load_pretrained
            parts, found = loader(family, source.location if source.kind == "file" else source, weight_dtype)
        except SdloraError:
            raise
        except Exception as exc:
            hint = _load_hint(source.kind, exc)
            raise SdloraError(
                f"could not load model.pretrained={family.pretrained!r} as model={family.name}{hint}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    unet, vae, encoders, tokenizers = parts
    if family.vae is not None:
        vae = load_vae(family, family.vae, weight_dtype)
    if vae_dtype is None:
        vae_dtype = torch.float32 if family.vae_needs_fp32 else weight_dtype
    for module, dtype in ((unet, weight_dtype), (vae, vae_dtype), *((te, weight_dtype) for te in encoders)):
        if any(p.is_floating_point() and p.dtype != dtype for p in module.parameters()):
            module.to(dtype=dtype)
        module.requires_grad_(False).eval()
    prediction = _prediction_type(family, found)
    return Components(unet, vae, list(encoders), list(tokenizers), prediction, source=where)


def _prediction_type(family: ModelFamily, found: str | None) -> str:
    """``model.v_parameterization`` if set, else what the checkpoint says, else the family's default."""
    if family.v_parameterization is not None:
        return V_PREDICTION if family.v_parameterization else EPSILON
    if found in (EPSILON, V_PREDICTION):
        return found
    return V_PREDICTION if family.default_v_parameterization else EPSILON


def configure_memory(family: ModelFamily, components: Components, device_type: str) -> None:
    """Gradient checkpointing, the attention backend, channels-last weights and torch.compile of the U-Net
    [kohya: --gradient_checkpointing, --sdpa, --xformers, --torch_compile, --dynamo_backend]. ``model.attention=sdpa``
    is diffusers' default (torch's scaled_dot_product_attention, which picks a flash or memory-efficient kernel: what
    kohya's ``--mem_eff_attn`` does in plain PyTorch); ``none`` is plain attention (kohya_ss GUI "none")."""
    if family.gradient_checkpointing:
        components.unet.enable_gradient_checkpointing()
        for encoder in components.text_encoders:
            # non-reentrant checkpointing lets gradients reach the LoRA weights although the inputs need no grad
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if family.attention == Attention.xformers:
        if device_type != "cuda":
            raise SdloraError("model.attention=xformers runs only on a CUDA GPU; use model.attention=sdpa")
        try:
            components.unet.enable_xformers_memory_efficient_attention()
        except Exception as exc:
            raise SdloraError(
                f"model.attention=xformers could not be enabled ({exc}); use model.attention=sdpa"
            ) from exc
    if family.attention == Attention.none:  # plain attention: the whole attention matrix at once [GUI: none]
        from diffusers.models.attention_processor import AttnProcessor

        components.unet.set_attn_processor(AttnProcessor())
    if family.channels_last:
        components.unet.to(memory_format=torch.channels_last)  # 4-D weights (convolutions) NHWC
    if family.compile:
        compile_unet(components.unet, family.compile_backend)


def compile_unet(unet: torch.nn.Module, backend: str) -> None:
    """``torch.compile`` the U-Net in place (``nn.Module.compile``: the module object, its parameters and the LoRA
    modules inside stay the same). Compilation itself happens at the first training step."""
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        available = ", ".join(torch._dynamo.list_backends())
        raise SdloraError(f"model.compile_backend={backend!r} is not a torch.compile backend (available: {available})")
    unet.compile(backend=backend)
