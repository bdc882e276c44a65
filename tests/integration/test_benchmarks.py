"""The benchmark scripts run (so that they cannot rot); their numbers are not asserted — speed lives in the
benchmarks and docs/performance.md."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.helpers.config import ROOT
from tests.helpers.processes import run_python


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_knows_the_gpus_and_lists_every_case_of_the_issue():
    gpu = _module("gpu_throughput")
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756.5
    assert gpu.peak_tflops("NVIDIA H200") == 989.4
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu.peak_tflops("NVIDIA GeForce RTX 4090") == 165.2
    assert gpu.peak_tflops("Some Future GPU") is None
    cases = {case.name: case for case in gpu.cases()}
    for model, resolution in (("sd15", 512), ("sdxl", 1024)):
        variants = [case for case in cases.values() if case.model == model]
        assert {case.resolution for case in variants} == {resolution}
        assert {case.batch for case in variants} == {1, 4}
        assert {case.precision for case in variants} == {"bf16_mixed", "full_bf16"}
        for option in ("checkpointing", "cached", "compile", "channels_last", "train_text_encoder"):
            assert {getattr(case, option) for case in variants} == {True, False}, option
    assert cases["sdxl-b4-compile"].batch == 4 and cases["sdxl-b4-compile"].compile


def test_the_gpu_session_script_runs_cases_the_benchmark_has():
    """benchmarks/gpu_session.sh (the prepared checks of a short GPU lease) names cases by hand: they must exist, and
    together its parts must cover the three targets of docs/performance.md."""
    import re

    script = (ROOT / "benchmarks" / "gpu_session.sh").read_text()
    named = {
        name for line in re.findall(r"^\s*(?:\w+\)\s*)?bench \d+ (.+?)(?: ;;)?$", script, re.M) for name in line.split()
    }
    cases = {case.name for case in _module("gpu_throughput").cases()}
    assert named and named <= cases, named - cases
    assert {"sdxl-base", "sdxl-b4-compile", "sdxl-b1-ckpt-target"} <= named


def test_gpu_benchmark_without_cuda_says_so_and_exits_0():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    result = run_python(["benchmarks/gpu_throughput.py", "--cases", "sdxl-base"], timeout=120)
    assert result.returncode == 0 and "No CUDA GPU" in result.stdout


def test_gpu_benchmark_runs_one_case_end_to_end_on_a_cpu(tmp_path):
    """Both sides, the FLOP count and the memory estimate, on the tiny SD1.5 model (``--device cpu --tiny``)."""
    out = tmp_path / "results.json"
    options = ["--device", "cpu", "--tiny", "--cases", "sd15-base", "--steps", "1", "--warmup", "1"]
    command = ["benchmarks/gpu_throughput.py", *options, "--json", str(out), "--markdown", str(tmp_path / "table.md")]
    result = run_python(command)
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["case"] == "sd15-base" and row["ratio"] > 0 and row["tflop_per_step"] > 0
    assert row["sdlora"]["estimate_gb"] > 0 and row["mfu"] is None  # no GPU peak on a CPU
    assert "| sd15-base |" in (tmp_path / "table.md").read_text()


def _run(*args: str, timeout: int = 600) -> str:
    result = run_python(list(args), timeout=timeout)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout


def test_step_overhead_benchmark_runs_the_gpu_benchmarks_sides_on_its_own_config_folder(tmp_path):
    """``make bench`` (benchmarks/step_overhead.py) drives the GPU benchmark's two sides on the CPU with a config
    folder of its own (there: the mid-size model; here the tiny one, fp32) and reads each process's peak RSS. The
    sdlora side's whole run is the test above; here the plain side runs and the sdlora side's overrides are read."""
    from types import SimpleNamespace

    from sdlora.models.configs import config_dir

    gpu = _module("gpu_throughput")
    case = gpu.Case("mid", "sd15", 64, precision="fp32", rank=4, config=str(config_dir("tiny")))
    run = SimpleNamespace(device="cpu", tiny=False, steps=1, warmup=1)
    result = gpu.measure(case, "plain", run)
    assert result.get("s_per_it", 0) > 0 and result["peak_rss_mib"] > 100, result
    overrides = gpu.sdlora_overrides(case, run, tmp_path)
    assert "model=tiny" in overrides and f"model.config={config_dir('tiny')}" in overrides
    assert "precision=fp32" in overrides
    assert _module("step_overhead").mid_size_config(tmp_path).joinpath("unet", "config.json").is_file()


def test_the_activation_fit_measures_a_small_unet_and_recovers_known_coefficients(tmp_path):
    """benchmarks/fit_activations.py: one measurement on a small SD1.5-shaped U-Net under bf16 autocast (LoCon saves
    more than LoRA), and the fit recovers coefficients from bytes made with them."""
    from sdlora.memory import unet_activation_features
    from sdlora.models.sizes import model_size

    fit = _module("fit_activations")
    folder = fit.shape_folder(tmp_path / "small", "sd15", fit.SHAPES[0][2])
    lora, locon = (fit.measure(folder, "sd15", 8, "mixed", conv) for conv in (False, True))
    assert 0 < lora < locon
    known = {"resnet": 1.5, "block": 30.0, "transformer": 5.0, "text": 0.5, "locon": 0.5}
    rows = []
    for name, base, edits in fit.SHAPES:
        unet = model_size(fit.shape_folder(tmp_path / name, base, edits)).unet
        for side in fit.SIDES:
            features = unet_activation_features(unet, (side, side))
            elements = sum(known[k] * features[k] for k in ("resnet", "block", "transformer", "text"))
            bytes_ = 2 * fit.BATCH * elements
            rows.append(
                {"features": features, "lora": bytes_, "locon": bytes_ + 2 * fit.BATCH * 0.5 * features["resnet"]}
            )
    assert fit.fit(rows, "mixed") == pytest.approx(known, rel=1e-3)


def test_dataset_scaling_benchmark_makes_datasets_and_reports_the_ratio(tmp_path):
    out = _run("benchmarks/dataset_scaling.py", "--sizes", "20", "40", "--repeat", "1", "--root", str(tmp_path))
    assert "ratio 40/20: time" in out
    assert (tmp_path / "20" / ".complete").is_file() and (tmp_path / "40" / "reg").is_dir()


def test_startup_benchmark_reports_ratios_to_import_hydra():
    out = _run("benchmarks/startup.py", "--repeat", "1")
    assert "× import hydra" in out and "dry_run=true" in out and "config error" in out


def test_data_pipeline_benchmark_runs_its_three_parts():
    out = _run("benchmarks/data_pipeline.py", "--cache-images", "4", "--epoch-images", "4", "--repeats", "1")
    assert "data loader" in out and "target ≤ 5 %" in out


def test_memory_estimate_benchmark_reads_the_peak_of_its_own_process():
    memory = _module("memory_estimate")
    assert 0 < memory.status_mb("VmRSS") <= memory.status_mb("VmHWM")
    assert "--part" in _run("benchmarks/memory_estimate.py", "--help")


def test_memory_estimate_benchmark_resets_the_rss_peak_and_profiles_a_step(tmp_path):
    """Before the second step the RSS high-water mark restarts from the RSS of that moment (a larger earlier peak no
    longer counts); the third step's allocations are read from the profiler's memory events."""
    from types import SimpleNamespace

    import torch

    memory = _module("memory_estimate")
    meter = memory.steady_state_meter(tmp_path / "trace.json")
    spike = bytearray(200_000_000)  # a 200 MB peak before the reset
    spike[::4096] = b"x" * len(spike[::4096])
    del spike
    before = memory.status_mb("VmHWM")
    meter.on_train_batch_start(SimpleNamespace(global_step=0), None, None, 0)
    assert meter.at_reset_mb is None  # nothing happens at the first step
    meter.on_train_batch_start(SimpleNamespace(global_step=1), None, None, 1)
    assert meter.first_step_peak_mb >= before and memory.status_mb("VmHWM") < before - 150

    kept = torch.ones(1_000_000)  # 4 MB live between the steps
    meter.on_train_batch_start(SimpleNamespace(global_step=2), None, None, 2)
    temporary = torch.ones(2_000_000) * 2  # 8 MB for the ones, 8 MB for the product: 16 MB at the step's peak
    del temporary
    meter.on_train_batch_end(SimpleNamespace(global_step=3), None, None, None, 2)
    assert meter.live_mb >= kept.numel() * 4 / 1e6
    assert 15.9 <= meter.step_peak_mb <= 16.1


def test_optimizer_kernels_benchmark_times_the_three_adamw_implementations():
    out = _run("benchmarks/optimizer_kernels.py", "--tensors", "4", "--steps", "1")
    assert "foreach=False" in out and "foreach=True" in out and "fused=True" in out
