"""The ``ModelFamily`` interface: everything that differs between SD1.5, SD2 and SDXL lives in one adapter.

An adapter knows how to load its components (:mod:`sdlora.models.loading`), turn captions into U-Net conditioning
(clip_skip, long prompts, SDXL's two encoders, pooled output and size/crop time ids), its latent scale, default
prediction type and resolution, the kohya key names of its U-Net, and the metadata kohya writes for it. The training
step calls these methods and has no family branches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sdlora.config.schema import Attention, ModelConfig
from sdlora.models.prompts import CHUNK, join_chunk_states, split_chunks

if TYPE_CHECKING:  # torch is imported when a model is loaded (docs/design.md §7)
    import torch
    from torch import nn


@dataclass
class Components:
    """The loaded model: frozen U-Net, VAE and text encoders, their tokenizers, and the training noise schedule."""

    unet: nn.Module
    vae: nn.Module
    text_encoders: list[nn.Module]
    tokenizers: list[Any]
    prediction_type: str  # "epsilon" or "v_prediction"
    source: str = ""  # where the weights came from (for messages and metadata)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextConditioning:
    """Text-encoder outputs for a batch: the cross-attention states and, for SDXL, the pooled embedding."""

    hidden_states: torch.Tensor  # [B, 77 + 75·(n−1), D]
    pooled: torch.Tensor | None = None  # [B, P] (SDXL's projected TE2 output)


def _final_layer_norm(text_encoder: nn.Module) -> nn.Module:
    """CLIP's final LayerNorm (``text_model.final_layer_norm``; transformers ≥ 5.6 flattened it to the top)."""
    inner = getattr(text_encoder, "text_model", text_encoder)
    return inner.final_layer_norm


class ModelFamily:
    """Base adapter. Subclasses set the class attributes and override the few methods that differ."""

    name: ClassVar[str]
    shipped_config: ClassVar[str]  # folder name under models/assets/configs used for single-file checkpoints
    pipeline_class: ClassVar[str]  # diffusers pipeline class of this family (diffusers folders, single files)
    text_encoder_classes: ClassVar[tuple[str, ...]]
    tokenizer_pad_tokens: ClassVar[tuple[str, ...]]  # pad token of each shipped tokenizer
    te_prefixes: ClassVar[tuple[str, ...]]  # kohya LoRA key prefix of each text encoder
    latent_scale: ClassVar[float]
    default_resolution: ClassVar[int]
    default_bucket_reso: ClassVar[tuple[int, int]] = (256, 1024)  # kohya's --min/max_bucket_reso defaults
    bucket_reso_multiple: ClassVar[int] = 64  # bucket_reso_steps must divide by it (kohya: 64 SD1/2, 32 SDXL)
    default_v_parameterization: ClassVar[bool] = False
    vae_needs_fp32: ClassVar[bool] = False  # SDXL's VAE produces NaN latents in fp16
    is_v2: ClassVar[bool] = False  # kohya ss_v2
    base_model_version: ClassVar[str]  # kohya ss_base_model_version without the "_v" suffix
    tiny: ClassVar[bool] = False  # builds random weights from the shipped config when `pretrained` is null
    unet_blocks: ClassVar[int] = 25  # kohya's U-Net block count for the block-wise network options

    def __init__(
        self,
        pretrained: str | None = None,
        vae: str | None = None,
        v_parameterization: bool | None = None,
        clip_skip: int | None = None,
        max_token_length: int = 75,
        gradient_checkpointing: bool = False,
        attention: Attention = Attention.sdpa,
        config: str | None = None,
        init_seed: int = 0,
        channels_last: bool = False,
        compile: bool = False,
        compile_backend: str = "inductor",
        weighted_captions: bool = False,
    ) -> None:
        self.pretrained = pretrained
        self.vae = vae
        self.v_parameterization = v_parameterization
        self.clip_skip = clip_skip
        self.max_token_length = max_token_length
        self.gradient_checkpointing = gradient_checkpointing
        self.attention = Attention(attention)
        self.config = config
        self.init_seed = init_seed
        self.channels_last = channels_last
        self.compile = compile
        self.compile_backend = compile_backend
        self.weighted_captions = weighted_captions  # [data.weighted_captions]: (word:1.2) emphasis

    # ----------------------------------------------------------------------------------------------- loading
    def load(self, weight_dtype: torch.dtype | None = None, vae_dtype: torch.dtype | None = None) -> Components:
        """Load (or build) the components, frozen, in ``weight_dtype`` (default float32); the VAE in ``vae_dtype``
        (default: fp32 where the family needs it, else ``weight_dtype``)."""
        import torch

        from sdlora.models.loading import load_components

        return load_components(self, weight_dtype if weight_dtype is not None else torch.float32, vae_dtype)

    # ----------------------------------------------------------------------------------------- conditioning
    def tokenize(self, tokenizer: Any, captions: list[str]) -> torch.Tensor:
        """Captions → [B, n, 77] token chunks (n = max_token_length / 75)."""
        length = self.max_token_length + 2
        ids = tokenizer(
            captions, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        ).input_ids  # [B, n·75 + 2]
        return split_chunks(ids, tokenizer.eos_token_id, tokenizer.pad_token_id)

    def tokenize_weighted(self, tokenizer: Any, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Captions → [B, n, 77] token chunks and, with ``weighted_captions``, the weight of every position of the
        joined hidden states [B, n·75 + 2] (:mod:`sdlora.models.weighted_prompts`); else None."""
        if not self.weighted_captions:
            return self.tokenize(tokenizer, captions), None
        from sdlora.models.weighted_prompts import tokenize_weighted

        ids, weights = tokenize_weighted(tokenizer, captions, self.max_token_length)
        return split_chunks(ids, tokenizer.eos_token_id, tokenizer.pad_token_id), weights

    def encode_text(self, components: Components, captions: list[str]) -> TextConditioning:
        """Captions → U-Net cross-attention states (and pooled output). Subclasses choose the layers."""
        raise NotImplementedError

    def unet_inputs(self, text: TextConditioning, size_cond: torch.Tensor) -> dict[str, Any]:
        """Keyword arguments of the U-Net call besides the noisy latents and timesteps."""
        return {"encoder_hidden_states": text.hidden_states}

    def _run_encoder(self, text_encoder: nn.Module, chunks: torch.Tensor) -> Any:
        """Run one text encoder on [B, n, 77] chunks (flattened to [B·n, 77]) with all hidden states."""
        device = next(text_encoder.parameters()).device
        return text_encoder(chunks.flatten(0, 1).to(device), output_hidden_states=True)

    @property
    def num_chunks(self) -> int:
        return self.max_token_length // CHUNK

    def _clip_states(self, text_encoder: nn.Module, chunks: torch.Tensor, skip: int, final_norm: bool):
        """Hidden states of the ``skip``-th last layer ([B·n, 77, D] → joined [B, L, D]) and the raw encoder output."""
        out = self._run_encoder(text_encoder, chunks)
        if skip == 1 and final_norm:
            states = out.last_hidden_state
        else:
            states = out.hidden_states[-skip]
            if final_norm:
                states = _final_layer_norm(text_encoder)(states)
        return join_chunk_states(states, self.num_chunks), out

    # ----------------------------------------------------------------------------------------- sample images
    def sample_pipeline(self, components: Components, scheduler: Any) -> Any:
        """A diffusers pipeline over the loaded components (the LoRA modules are live inside them), for sample
        images. Prompts go in as embeddings from :meth:`encode_text`, so clip_skip and long prompts act as in
        training."""
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=components.vae, text_encoder=components.text_encoders[0], tokenizer=components.tokenizers[0],
            unet=components.unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )  # fmt: skip

    def pipeline_prompt_kwargs(self, prompt: TextConditioning, negative: TextConditioning) -> dict[str, Any]:
        """The pipeline's prompt-embedding arguments for a prompt and its negative prompt."""
        return {"prompt_embeds": prompt.hidden_states, "negative_prompt_embeds": negative.hidden_states}

    # ------------------------------------------------------------------------------------- names, metadata
    def unet_namer(self, unet: nn.Module) -> Callable[[str], str]:
        """diffusers module path → kohya LoRA name for this family's U-Net."""
        from sdlora.network.naming import diffusers_unet_name

        return diffusers_unet_name

    def unet_block_index(self, lora_name: str) -> int:
        """kohya's U-Net block number of a LoRA name (block-wise ranks and learning rates)."""
        from sdlora.network.blocks import sd_block_index

        return sd_block_index(lora_name)

    def base_model_version_for(self, prediction_type: str) -> str:
        """kohya ``ss_base_model_version``: e.g. sd_v1, sd_v2, sd_v2_v, sdxl_base_v1-0."""
        suffix = "_v" if prediction_type == "v_prediction" and not self.base_model_version.startswith("sdxl") else ""
        return self.base_model_version + suffix

    def modelspec_architecture(self, prediction_type: str) -> str:
        """``modelspec.architecture`` of a LoRA for this family (without the ``/lora`` suffix)."""
        raise NotImplementedError

    modelspec_implementation: ClassVar[str] = "diffusers"


def make_family(model: ModelConfig, weighted_captions: bool = False) -> ModelFamily:
    """The family adapter a (resolved) ``model`` node names, built with the node's options (and
    ``data.weighted_captions``)."""
    import dataclasses

    from hydra.utils import get_class

    options = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name != "_target_"}
    return get_class(model._target_)(**options, weighted_captions=weighted_captions)
