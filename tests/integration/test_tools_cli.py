"""The console commands as users run them: ``--help`` with examples (answered without the heavy imports), and bad
input as one ``error:`` line with exit code 1 — no traceback — for a missing file, a file that is not a LoRA or not a
checkpoint, a LoRA of another family, mismatched ranks and an output that would overwrite an input."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers.lora_files import random_lora
from tests.helpers.processes import run_python

BIN = Path(sys.executable).parent
COMMANDS = ("extract-lora", "extract-locon", "extract-dylora", "merge-lora", "merge-lycoris", "svd-merge-lora",
            "resize-lora", "verify-lora", "convert-lora", "fix-lora", "migrate", "export-model")  # fmt: skip


def run(command: str, *args: str) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1"}  # small models: one thread is faster on shared cores
    return run_python([str(BIN / f"sdlora-{command}"), *map(str, args)], timeout=300, env=env)


def test_every_command_answers_help_fast_with_examples():
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(COMMANDS, pool.map(lambda c: run(c, "--help"), COMMANDS), strict=True))
    assert time.perf_counter() - started < 30
    for command, result in results.items():
        assert result.returncode == 0, (command, result.stderr)
        assert "examples:" in result.stdout and f"sdlora-{command}" in result.stdout, command


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    out = {
        "lora": random_lora(root / "lora.safetensors", "tiny", rank=4),
        "xl_lora": random_lora(root / "xl.safetensors", "tiny_sdxl", rank=2),
        "other_rank": random_lora(root / "r8.safetensors", "tiny", rank=8),
        "text": root / "notes.safetensors",
        "checkpoint": root / "tiny.safetensors",
    }
    out["text"].write_text("not a safetensors file")
    from sdlora.tools.export_model import export_model

    export_model("tiny", out["checkpoint"])
    damaged = load_file(str(out["lora"]))
    name = next(k for k in damaged if k.endswith(".lora_up.weight"))
    damaged[name] = torch.zeros(damaged[name].shape[0], 3)
    save_file(damaged, str(root / "damaged.safetensors"))
    out["damaged"] = root / "damaged.safetensors"
    return out


CASES = {
    "missing file": (("resize-lora", "--model", "{root}/nope.safetensors", "--save_to", "{root}/o.safetensors"),
                     "does not exist"),
    "not readable": (("verify-lora", "{text}"), "cannot be read"),
    "not readable to convert": (("convert-lora", "{text}", "--to", "diffusers", "--save_to", "{root}/o.safetensors"),
                                "cannot be read as a .safetensors file"),
    "not a LoRA": (("merge-lora", "--models", "{checkpoint}", "--save_to", "{root}/o.safetensors"),
                   "is not a LoRA file in kohya's format"),
    "not a checkpoint": (("merge-lora", "--sd_model", "{lora}", "--models", "{lora}", "--save_to",
                          "{root}/o.safetensors"), "is a LoRA file, not a Stable Diffusion checkpoint"),
    "another family": (("merge-lora", "--sd_model", "{checkpoint}", "--models", "{xl_lora}", "--save_to",
                        "{root}/o.safetensors"), "a LoRA of another model family"),
    "mismatched ranks": (("merge-lora", "--models", "{lora}", "{other_rank}", "--save_to", "{root}/o.safetensors"),
                         "different ranks"),
    "damaged ranks": (("svd-merge-lora", "--models", "{damaged}", "--save_to", "{root}/o.safetensors"),
                      "the file is damaged"),
    "overwrite input": (("fix-lora", "{lora}", "--save_to", "{lora}"), "would write over the input"),
    "lycoris into another family": (("merge-lycoris", "--sd_model", "{checkpoint}", "--lycoris_model", "{xl_lora}",
                                     "--save_to", "{root}/o.safetensors"), "a file for another model family"),
    "extract from a LoRA": (("extract-lora", "--model_org", "{lora}", "--model_tuned", "{checkpoint}", "--save_to",
                             "{root}/o.safetensors"), "is a LoRA file, not a Stable Diffusion checkpoint"),
}  # fmt: skip


SUBPROCESS = ("missing file", "another family", "mismatched ranks")
MODULES = {"resize-lora": "resize", "verify-lora": "verify", "merge-lora": "merge", "svd-merge-lora": "svd_merge",
           "fix-lora": "fix", "merge-lycoris": "merge_lycoris", "extract-lora": "extract",
           "convert-lora": "convert"}  # fmt: skip


def _commands(files) -> dict[str, list[str]]:
    values = {k: str(v) for k, v in files.items()} | {"root": str(files["lora"].parent)}
    return {name: [a.format(**values) for a in args] for name, (args, _) in CASES.items()}


def _check(name: str, code: int, stderr: str) -> None:
    errors = [line for line in stderr.strip().splitlines() if line.startswith("error: ")]
    assert code == 1, (name, stderr)
    assert "Traceback" not in stderr and len(errors) == 1, (name, stderr)
    assert CASES[name][1] in errors[0], (name, errors[0])


def test_bad_input_is_one_line_and_exit_code_1_for_the_console_scripts(files):
    commands = {name: args for name, args in _commands(files).items() if name in SUBPROCESS}
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(commands, pool.map(lambda c: run(*c), commands.values()), strict=True))
    for name, result in results.items():
        _check(name, result.returncode, result.stderr)
    assert not (files["lora"].parent / "o.safetensors").exists()


def test_bad_input_is_one_line_and_exit_code_1_in_every_tool(files, capsys):
    """The same ``main`` the console scripts run, called in this process (no start-up cost per case)."""
    import importlib

    for name, (command, *args) in _commands(files).items():
        main = importlib.import_module(f"sdlora.tools.{MODULES[command]}").main
        code = main(args)
        _check(name, code, capsys.readouterr().err)
    assert not (files["lora"].parent / "o.safetensors").exists()
