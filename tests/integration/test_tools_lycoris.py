"""LyCORIS tools on the tiny models: every LyCORIS type (files made by lycoris-lora itself, renamed to kohya's names as
sdlora writes them) merges into a checkpoint with the same effect as the unmerged network; LoCon extraction uses
lycoris-lora's own extractor and gives a kohya-named file."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdlora.tools.checkpoint import open_checkpoint
from sdlora.tools.export_model import export_model
from sdlora.tools.merge_lycoris import merge_lycoris
from sdlora.tools.names import NameIndex, all_module_names

ALGOS = [
    ("lora", {}),
    ("lora", {"dora_wd": True}),
    ("loha", {}),
    ("lokr", {}),
    ("ia3", {}),
    ("dylora", {}),
    ("full", {}),
    ("glora", {}),
    ("diag-oft", {}),
    ("boft", {}),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lyco")
    return {m: export_model(m, root / f"{m}.safetensors") for m in ("tiny", "tiny_sdxl")}


@pytest.fixture(scope="module")
def loaded(checkpoints):
    return {m: open_checkpoint(p, "x") for m, p in checkpoints.items()}


def outputs(ckpt) -> dict[str, torch.Tensor]:
    """U-Net output and every text encoder's last hidden state on fixed inputs."""
    generator = torch.Generator().manual_seed(0)
    unet = ckpt.components.unet
    hidden = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    kwargs = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled, generator=generator),
                                       "time_ids": torch.randn(1, 6, generator=generator)}  # fmt: skip
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    ids = torch.randint(0, 49407, (1, 77), generator=generator)
    with torch.no_grad():
        out = {"unet": unet(latents, torch.tensor([500]), encoder_hidden_states=hidden, **kwargs).sample}
        for i, te in enumerate(ckpt.components.text_encoders):
            out[f"te{i}"] = te(ids).last_hidden_state
    return out


def lycoris_file(ckpt, algo: str, kw: dict, path: Path, seed: int = 0):
    """A LyCORIS network (lycoris-lora) on copies of the U-Net and last text encoder, with random weights; returns
    the file (kohya names) and the outputs of the unmerged network."""
    from lycoris import create_lycoris

    work = copy.copy(ckpt)
    work.components = copy.deepcopy(ckpt.components)
    roots = {"unet": work.components.unet}
    if algo != "boft":  # BOFT needs dimensions it can factor (the tiny text encoders' MLP width 37 is prime)
        te = "text_encoder_2" if len(work.components.text_encoders) == 2 else "text_encoder"
        roots[te] = work.components.text_encoders[-1]
    index = NameIndex(all_module_names(work.family, work.roots()))
    tensors: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)
    for component, root in roots.items():
        net = create_lycoris(root, 1.0, linear_dim=4, linear_alpha=2, algo=algo, **kw)
        net.apply_to()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.02)
        prefix = {"unet": "unet.", "text_encoder": "text_encoder.", "text_encoder_2": "text_encoder_2."}[component]
        for key, value in net.state_dict().items():
            name, rest = key.split(".", 1)
            kohya = index.resolve(prefix + name.removeprefix("lycoris_").replace("_", "."))
            kohya = kohya or index.resolve(name)
            assert kohya is not None and index.table[kohya].component == component, key
            tensors[f"{kohya}.{rest}"] = value.detach().contiguous()
    reference = outputs(work)
    save_file(tensors, str(path))
    if algo == "dylora":  # random rank in lycoris-lora's training forward: the reference is the saved LoRA, applied
        reference = outputs(hand_merged(ckpt, path))  # by the UIs at full rank with scale alpha/rank
    return path, reference


def hand_merged(ckpt, path: Path):
    """A copy of ``ckpt`` with the kohya LoRA file ``path`` merged by hand: W += alpha/rank·up∘down."""
    from sdlora.network.functional import delta_weight
    from sdlora.network.io import load_lora

    work = copy.copy(ckpt)
    work.components = copy.deepcopy(ckpt.components)
    table = all_module_names(work.family, work.roots())
    tensors, _ = load_lora(path)
    with torch.no_grad():
        for key, down in tensors.items():
            if key.endswith(".lora_down.weight"):
                name = key.removesuffix(".lora_down.weight")
                up, weight = tensors[f"{name}.lora_up.weight"], table[name].module.weight
                scale = float(tensors[f"{name}.alpha"]) / down.shape[0]
                weight += delta_weight(up.float().reshape(up.shape[0], -1), down.float(), scale, weight.shape)
    return work


@pytest.mark.parametrize(("algo", "kw"), ALGOS, ids=[a + ("_dora" if k else "") for a, k in ALGOS])
def test_every_lycoris_type_merges_with_the_effect_of_the_network(algo, kw, checkpoints, loaded, tmp_path):
    model = "tiny_sdxl" if algo in ("lokr", "lora") and not kw else "tiny"
    base = loaded[model]
    path, reference = lycoris_file(base, algo, kw, tmp_path / f"{algo}.safetensors")
    merged = merge_lycoris(checkpoints[model], path, tmp_path / "merged.safetensors")
    result = outputs(open_checkpoint(merged, "x"))
    plain = outputs(base)
    assert not torch.allclose(reference["unet"], plain["unet"], atol=1e-5)
    assert algo == "boft" or not torch.allclose(
        reference[f"te{len(plain) - 2}"], plain[f"te{len(plain) - 2}"], atol=1e-5
    )
    for key, value in reference.items():
        assert torch.allclose(result[key], value, atol=2e-4, rtol=1e-3), (key, float((result[key] - value).abs().max()))


def test_extract_locon_gives_a_kohya_named_file_that_merges_back(checkpoints, loaded, tmp_path):
    """LoCon extraction (lycoris-lora's extractor) from base vs a LoCon-merged model, at ranks high enough to be exact
    (up to lycoris-lora's fp16 storage): merged back with merge-lycoris it reproduces the tuned model."""
    from sdlora.network.io import load_lora
    from sdlora.tools.extract_locon import extract_locon
    from sdlora.tools.merge import merge_into_checkpoint
    from tests.helpers.lora_files import random_lora

    base = loaded["tiny_sdxl"]
    lora = random_lora(tmp_path / "lora.safetensors", "tiny_sdxl", rank=4, conv_rank=3, every=2)
    tuned = merge_into_checkpoint(str(checkpoints["tiny_sdxl"]), [str(lora)], [1.0], tmp_path / "tuned.safetensors")
    reference = outputs(open_checkpoint(tuned, "x"))
    locon = extract_locon(checkpoints["tiny_sdxl"], tuned, tmp_path / "locon.safetensors", linear_dim=256,
                          conv_dim=256, save_precision="float")  # fmt: skip
    tensors, meta = load_lora(locon)
    names = {k.split(".", 1)[0] for k in tensors}
    table = all_module_names(base.family, base.roots())
    assert names <= table.keys() and any(n.startswith("lora_unet_input_blocks") for n in names)
    assert any(n.startswith("lora_te2_text_model_encoder") for n in names)
    assert meta["ss_network_module"] == "lycoris.kohya" and meta["ss_base_model_version"] == "sdxl_base_v1-0"
    again = merge_lycoris(checkpoints["tiny_sdxl"], locon, tmp_path / "again.safetensors")
    result, plain = outputs(open_checkpoint(again, "x")), outputs(base)
    for key, value in reference.items():
        assert torch.allclose(result[key], value, atol=5e-4, rtol=1e-3), key
        assert key == "te0" or not torch.allclose(plain[key], value, atol=1e-3), key
