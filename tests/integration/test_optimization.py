"""Optimizers, precision, accumulation, clipping and memory options on the tiny model (CPU, offline): every optimizer
option trains and changes only LoRA parameters; each precision option keeps every part in its documented dtype;
accumulation equals the larger batch; clipping acts on the LoRA gradients only."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from sdlora.diffusion.loss import weighted_mean
from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.config import CONF_DIR, compose_config, tiny_overrides
from tests.integration.test_train_e2e import scalars

# RAdamScheduleFree makes no update in its first steps (silent_sgd_phase: RAdam's variance estimate is unreliable)
NEEDS = {"custom": ["optimizer._target_=torch.optim.RAdam"], "radam_schedulefree": ["trainer.max_steps=6"]}
ADAPTIVE = {"prodigy", "dadapt_adam", "dadapt_adagrad", "dadapt_adan", "dadapt_adan_ip", "dadapt_adam_preprint"}
ADAPTIVE |= {"dadapt_lion", "dadapt_sgd", "prodigy_schedulefree"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


class Probe(Callback):
    """Records parameters before and after training, gradient dtypes, and the optimizer at the end."""

    def on_train_start(self, trainer, pl_module):
        self.module = pl_module
        self.before = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        self.grad_dtypes: set[torch.dtype] = set()
        self.frozen_grads = 0

    def on_after_backward(self, trainer, pl_module):
        for p in pl_module.network.trainable_parameters():
            if p.grad is not None:
                self.grad_dtypes.add(p.grad.dtype)
        self.frozen_grads += sum(p.grad is not None for p in pl_module.parameters() if not p.requires_grad)

    def on_train_end(self, trainer, pl_module):
        self.optimizer = trainer.optimizers[0]
        self.after = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        self.trainable = {n for n, p in pl_module.named_parameters() if p.requires_grad}


def run(tmp_path: Path, train_dir: Path, *extra: str, model: str = "tiny", callbacks=(), name: str = "run"):
    overrides = tiny_overrides(train_dir, "trainer.max_steps=2", "data.batch_size=1", *extra, model=model)
    run_dir = tmp_path / name
    summary = train(compose_config(*overrides), run_dir, callbacks=list(callbacks))
    return summary, run_dir


@pytest.mark.parametrize("option", options("optimizer"))
def test_every_optimizer_trains_only_lora_parameters(option, small_dataset, tmp_path):
    probe = Probe()
    summary, run_dir = run(tmp_path, small_dataset, f"optimizer={option}", *NEEDS.get(option, []), callbacks=[probe])
    assert summary["steps"] == (6 if option == "radam_schedulefree" else 2) and math.isfinite(summary["loss"])
    lora = {n for n in probe.before if "lora_" in n}
    assert lora and probe.trainable == lora  # only LoRA parameters are trainable
    changed = {n for n in probe.before if not torch.equal(probe.before[n], probe.after[n])}
    assert changed and changed <= lora, f"non-LoRA parameters changed: {sorted(changed - lora)[:3]}"
    assert any("lora_up" in n for n in changed)
    assert probe.frozen_grads == 0
    logged = scalars(run_dir)
    assert all(math.isfinite(v) for v in logged["lr/unet"])
    if option in ADAPTIVE:  # the adapted step size d·lr, as kohya logs it
        assert len(logged["lr/d*lr"]) == 2 and all(v > 0 for v in logged["lr/d*lr"])
    else:
        assert "lr/d*lr" not in logged


def _state_dtypes(optimizer) -> set[torch.dtype]:
    return {v.dtype for s in optimizer.state.values() for k, v in s.items() if torch.is_tensor(v) and v.ndim > 0}


# option → (LoRA params/grads, frozen U-Net and text encoders, VAE, AdamW state); fp16 runs as bf16 on a CPU
PRECISIONS = {
    "fp32": (torch.float32, torch.float32, torch.float32, torch.float32),
    "bf16_mixed": (torch.float32, torch.bfloat16, torch.bfloat16, torch.float32),
    "fp16_mixed": (torch.float32, torch.bfloat16, torch.bfloat16, torch.float32),
    "full_bf16": (torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.bfloat16),
    "full_fp16": (torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.bfloat16),
}


@pytest.mark.parametrize(
    ("option", "extra", "model"),
    [
        *((name, [], "tiny") for name in PRECISIONS),
        ("full_bf16", ["precision.stochastic_rounding=true"], "tiny"),
        ("bf16_mixed", [], "tiny_sdxl"),
        ("bf16_mixed", ["precision.no_half_vae=false"], "tiny_sdxl"),
        ("bf16_mixed", ["precision.no_half_vae=true"], "tiny"),
    ],
    ids=[*PRECISIONS, "full_bf16_sr", "sdxl_vae_fp32", "sdxl_half_vae", "no_half_vae"],
)
def test_precision_dtypes(option, extra, model, small_dataset, tmp_path):
    probe = Probe()
    summary, _ = run(
        tmp_path, small_dataset, f"precision={option}", *extra, "optimizer.lr=1e-2", model=model, callbacks=[probe]
    )
    assert math.isfinite(summary["loss"])
    lora_dtype, frozen_dtype, vae_dtype, state_dtype = PRECISIONS[option]
    if model == "tiny_sdxl":
        vae_dtype = torch.bfloat16 if "precision.no_half_vae=false" in extra else torch.float32  # SDXL: fp32 VAE
    if "precision.no_half_vae=true" in extra:
        vae_dtype = torch.float32
    sr = "precision.stochastic_rounding=true" in extra
    module = probe.module
    assert {p.dtype for p in module.network.trainable_parameters()} == {lora_dtype}
    assert probe.grad_dtypes == {lora_dtype}
    base = [p for n, p in module.named_parameters() if "lora_" not in n and not n.startswith("vae.")]
    assert {p.dtype for p in base if p.is_floating_point()} == {frozen_dtype}
    assert {p.dtype for p in module.components.vae.parameters()} == {vae_dtype}
    assert _state_dtypes(probe.optimizer) == ({torch.float32} if sr else {state_dtype})
    tensors, meta = load_lora(summary["files"][0])
    assert {t.dtype for k, t in tensors.items() if not k.endswith(".alpha")} == {lora_dtype}  # saved as trained
    assert meta["ss_mixed_precision"] == ("no" if option == "fp32" else "bf16")  # what ran (bf16 on a CPU)
    assert meta["ss_full_fp16"] == "False"
    ups = [t for k, t in tensors.items() if k.endswith("lora_up.weight")]
    assert any(t.abs().sum() > 0 for t in ups)


class RecordBatches(Callback):
    """Keeps every micro-batch with the latents, noise and timesteps the module drew for it."""

    def on_train_start(self, trainer, pl_module):
        self.module = pl_module
        self.initial = {k: v.clone() for k, v in pl_module.network.kohya_tensors().items()}
        self.draws: list[dict] = []
        objective, draws = pl_module.objective, self.draws
        noise_fn = objective.noise

        def recording_noise(latents, generator=None):
            noised = noise_fn(latents, generator=generator)
            draws.append({"latents": latents, "noised": noised})
            return noised

        objective.noise = recording_noise  # test instrumentation: the objective itself is unchanged

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches = [*getattr(self, "batches", []), batch]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None}

    def on_train_end(self, trainer, pl_module):
        self.final = {k: v.clone() for k, v in pl_module.network.kohya_tensors().items()}


def _big_batch_gradient(recorder: RecordBatches) -> dict[str, torch.Tensor]:
    """The gradient of one batch made of all the micro-batches, with the same latents, noise and timesteps."""
    module = recorder.module
    module.network.load_kohya_tensors(recorder.initial)
    module.zero_grad(set_to_none=True)
    latents = torch.cat([d["latents"] for d in recorder.draws])
    noise = torch.cat([d["noised"].target for d in recorder.draws])  # ε-prediction: the target is the noise
    timesteps = torch.cat([d["noised"].timesteps for d in recorder.draws])
    captions = [c for b in recorder.batches for c in b.captions]
    weights = torch.cat([b.loss_weight for b in recorder.batches])
    size_cond = torch.cat([b.size_cond for b in recorder.batches])
    noised = module.objective.noise_with(latents, noise, timesteps)
    text = module.encode_text(captions)
    prediction = module.unet(noised.noisy, noised.timesteps, **module.family.unet_inputs(text, size_cond)).sample
    weighted_mean(module.objective.loss(prediction, noised), weights).backward()
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def test_accumulation_equals_the_larger_batch(example_data, tmp_path):
    recorder = RecordBatches()
    sgd = ["optimizer=custom", "optimizer._target_=torch.optim.SGD", "optimizer.lr=1.0", "trainer.gradient_clip_val=0"]
    run(tmp_path, example_data, *sgd, "trainer.accumulate_grad_batches=2", "data.batch_size=2",
        "trainer.max_steps=1", callbacks=[recorder])  # fmt: skip
    assert len(recorder.batches) == 2 and len(recorder.draws) == 2  # two micro-batches of 2, one optimizer step
    expected = _big_batch_gradient(recorder)
    assert expected.keys() == recorder.grads.keys()
    for name, grad in expected.items():
        assert torch.allclose(recorder.grads[name], grad, rtol=1e-4, atol=1e-9), name
    for key, initial in recorder.initial.items():  # SGD, lr 1: the update is minus the accumulated gradient
        assert not key.endswith(".alpha") or torch.equal(recorder.final[key], initial)
    moved = [k for k in recorder.initial if not torch.equal(recorder.final[k], recorder.initial[k])]
    assert moved and all("lora_up" in k for k in moved)  # step 1: lora_up is zero, so only it gets a gradient


class ClipProbe(Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # runs before clipping
        self.raw = {id(p): p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]}
        frozen = [(n, p) for n, p in pl_module.named_parameters() if not p.requires_grad]
        self.frozen_with_grad = [n for n, p in frozen if p.grad is not None]
        self.before = {id(p): p.detach().clone() for g in optimizer.param_groups for p in g["params"]}
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.lora = {id(p) for p in pl_module.network.trainable_parameters()}


def test_gradient_clipping_acts_on_lora_gradients_only(small_dataset, tmp_path):
    probe, clip = ClipProbe(), 1e-5
    sgd = ["optimizer=custom", "optimizer._target_=torch.optim.SGD", "optimizer.lr=1.0"]
    run(tmp_path, small_dataset, *sgd, f"trainer.gradient_clip_val={clip}", "trainer.max_steps=1", callbacks=[probe])
    assert {id(p) for p in probe.params} == probe.lora  # the optimizer holds the LoRA parameters only
    assert probe.frozen_with_grad == []
    raw_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in probe.raw.values()]))
    assert raw_norm > clip
    updates = {id(p): probe.before[id(p)] - p.detach() for p in probe.params}
    update_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(u) for u in updates.values()]))
    assert update_norm.item() == pytest.approx(clip, rel=1e-3)  # the global norm over LoRA gradients was clipped
    for key, raw in probe.raw.items():  # same direction, scaled by clip / ‖g‖
        assert torch.allclose(updates[key], raw * (clip / raw_norm), rtol=1e-3, atol=1e-12)


def test_channels_last_and_metadata(small_dataset, tmp_path):
    probe = Probe()
    summary, _ = run(
        tmp_path, small_dataset, "model.channels_last=true", "optimizer=adafactor", "scheduler=cosine",
        callbacks=[probe],
    )  # fmt: skip
    unet = probe.module.unet
    convs = [m.weight for m in unet.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    _, meta = load_lora(summary["files"][0])
    assert meta["ss_lr_scheduler"] == "adafactor:0.0001"  # kohya forces the adafactor schedule
    assert meta["ss_learning_rate"] == "None" and meta["ss_unet_lr"] == "None"  # kohya: Adafactor picks the lr
    assert meta["ss_optimizer"].startswith("transformers.optimization.Adafactor(relative_step=True,")


def test_torch_compile_is_wired(tmp_path):
    """The option compiles the U-Net in place; a full compiled run is in the slow test below."""
    from sdlora.errors import SdloraError
    from sdlora.models.loading import configure_memory
    from sdlora.models.tiny import TinySD15Family

    family = TinySD15Family(compile=True, compile_backend="eager")
    components = family.load()
    unet = components.unet
    configure_memory(family, components, "cpu")
    assert components.unet is unet and unet._compiled_call_impl is not None
    bad = TinySD15Family(compile=True, compile_backend="no_such_backend")
    with pytest.raises(SdloraError, match="model.compile_backend='no_such_backend'"):
        configure_memory(bad, bad.load(), "cpu")


@pytest.mark.slow
def test_compiled_training_matches_eager(small_dataset, tmp_path):
    eager, _ = run(tmp_path, small_dataset, name="eager")
    compiled, _ = run(tmp_path, small_dataset, "model.compile=true", "model.compile_backend=eager", name="compiled")
    a, b = load_lora(eager["files"][0])[0], load_lora(compiled["files"][0])[0]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
