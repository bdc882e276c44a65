"""Faults lose nothing (through ``python train.py``, signals sent to the real process): SIGTERM, the pre-emption signal
with a SLURM requeue, Ctrl-C with and without states, a kill before the final file, leftovers of killed runs. Every
visible file loads and holds only finite values; the run record says what happened; the exit code is 128 + signal."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from sdlora.network.io import load_lora
from sdlora.run import train
from sdlora.state.folder import state_problem
from sdlora.sweep.record import read_record
from tests.helpers.cli import finish, run_train_py, start_train_py, wait_for
from tests.helpers.config import compose_config, tiny_overrides

STEPS = 40  # long enough that a signal sent after the first step arrives well before the end
COMMON = ("save.every_n_steps=1", "save.last_n_steps=1", f"trainer.max_steps={STEPS}", "data.flip_aug=true")


def assert_files_finite(folder: Path) -> int:
    """Every LoRA file under ``folder`` (states included) loads and holds only finite values; returns how many."""
    files = list(folder.rglob("*.safetensors"))
    for path in files:
        tensors, _ = load_lora(path)
        assert all(torch.isfinite(t).all() for t in tensors.values()), path
    assert not [p for p in folder.rglob(".*") if ".tmp-" in p.name], "no unfinished file may be left visible"
    return len(files)


def same_lora(a: Path, b: Path) -> bool:
    ta, _ = load_lora(a)
    tb, _ = load_lora(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.fixture
def reference(small_dataset, tmp_path) -> Path:
    """The uninterrupted run's final LoRA."""
    train(compose_config(*tiny_overrides(small_dataset, *COMMON)), tmp_path / "reference")
    return tmp_path / "reference" / "last.safetensors"


def test_sigterm_saves_a_state_exits_143_and_the_run_resumes_exactly(small_dataset, tmp_path, reference):
    args = tiny_overrides(small_dataset, *COMMON, "save.state=true")
    run_dir = tmp_path / "run"
    process = start_train_py(args, run_dir)
    wait_for(process, run_dir, "last-step00000001-state")
    process.send_signal(signal.SIGTERM)
    output = finish(process)
    assert process.returncode == 143, output[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"]
    state = Path(record["resume_from"])
    assert state_problem(state) is None and json.loads((state / "state.json").read_text())["kind"] in (
        "step",
        "interrupt",
    )
    assert oct((state / "training_state.pt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert assert_files_finite(run_dir) >= 2
    run_train_py([*args, f"resume={state}"], tmp_path / "resumed")
    assert same_lora(reference, tmp_path / "resumed" / "last.safetensors")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_preemption_requeues_on_slurm_and_the_requeued_job_resumes_by_itself(small_dataset, tmp_path, reference):
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    args = tiny_overrides(small_dataset, *COMMON, "save.state=true")
    run_dir = tmp_path / "job"
    process = start_train_py(args, run_dir, env)
    wait_for(process, run_dir, "last-step00000001-state")
    process.send_signal(signal.SIGUSR1)
    output = finish(process)
    assert process.returncode == 128 + signal.SIGUSR1, output[-3000:]
    assert read_record(run_dir)["status"] == "preempted"
    assert calls.read_text().split() == ["requeue", "4242"]
    # SLURM starts the same job again, in the same folder, with SLURM_RESTART_COUNT set
    process = start_train_py(args, run_dir, {**env, "SLURM_RESTART_COUNT": "1"})
    output = finish(process)
    assert process.returncode == 0 and "Resuming from" in output, output[-3000:]
    assert read_record(run_dir)["status"] == "completed"
    assert same_lora(reference, run_dir / "last.safetensors")


def test_two_quick_ctrl_c_stop_at_once_with_a_record(small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    process = start_train_py(tiny_overrides(small_dataset, *COMMON, "data.num_workers=1"), run_dir)
    wait_for(process, run_dir, "last-step00000001.safetensors")
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    output = finish(process)
    assert process.returncode == 130, output[-3000:]
    assert read_record(run_dir)["status"] == "interrupted"
    assert_files_finite(run_dir)


def test_ctrl_c_without_states_keeps_the_lora_so_far(small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    process = start_train_py(tiny_overrides(small_dataset, *COMMON), run_dir)
    wait_for(process, run_dir, "last-step00000001.safetensors")
    process.send_signal(signal.SIGINT)
    output = finish(process)
    assert process.returncode == 130, output[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "interrupted" and record["resume_from"] == str(run_dir / "last-interrupted.safetensors")
    assert (run_dir / "last-interrupted.safetensors").is_file() and not (run_dir / "last.safetensors").exists()
    assert assert_files_finite(run_dir) >= 2


def test_a_finished_state_without_its_final_file_is_completed(small_dataset, tmp_path):
    """A kill between writing ``last-state`` and ``last.safetensors``: resuming that state writes the final file."""
    args = tiny_overrides(small_dataset, "save.state=true")
    run_dir = tmp_path / "run"
    run_train_py(args, run_dir)
    final = run_dir / "last.safetensors"
    expected, _ = load_lora(final)
    final.unlink()
    output = run_train_py([*args, f"resume={run_dir / 'last-state'}"], tmp_path / "again")
    assert f"already complete: wrote {final}" in output
    tensors, metadata = load_lora(final)
    assert tensors.keys() == expected.keys() and all(torch.equal(tensors[k], expected[k]) for k in tensors)
    assert metadata["ss_steps"] == "4" and metadata["sshs_model_hash"]
    assert read_record(tmp_path / "again")["status"] == "completed"


def test_leftovers_of_killed_runs_are_removed(small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    dead = 2**22 + 12345  # beyond pid_max on a default kernel: no such process
    leftovers = [run_dir / f".last-step00000002-state.removing-{dead}", run_dir / f".last.safetensors.tmp-{dead}"]
    leftovers[0].mkdir(parents=True)
    (leftovers[0] / "lora.safetensors").write_bytes(b"partial")
    leftovers[1].write_bytes(b"partial")
    kept = run_dir / f".notes.tmp-{os.getpid()}"  # a live process's unfinished write stays
    kept.write_bytes(b"busy")
    run_train_py(tiny_overrides(small_dataset, "trainer.max_steps=1"), run_dir)
    assert not any(p.exists() for p in leftovers) and kept.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("trainer.check_finite_every_n_steps=1", "save.every_n_steps=1"), "after optimizer step 1 the LoRA weights"),
        (("save.every_n_steps=1",), "not writing"),  # the writer's own check
        ((), "because the LoRA weights hold NaN or infinite values after step 1"),  # the next loss
        (("trainer.skip_nonfinite=true",), "more than trainer.max_skipped_fraction allows"),  # rolled back each time
    ],
    ids=["checked", "at_the_save", "found_by_the_loss", "skipped_until_the_limit"],
)
def test_nan_weights_never_reach_a_file(small_dataset, tmp_path, extra, message):
    """``optimizer.eps=0``: Adam divides 0 by 0 where a gradient is 0, and the weights turn NaN with a finite loss."""
    from tests.helpers.cli import run_cli

    result, run_dir = run_cli(tmp_path, *tiny_overrides(small_dataset, "optimizer.eps=0", "save.state=true", *extra))
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert message in output, output[-3000:]
    if "skip_nonfinite" not in str(extra):
        assert "an optimizer eps of 0" in output  # the likely cause is named
    assert_files_finite(run_dir)
    assert read_record(run_dir)["status"] == "failed"


def test_an_lr_that_float32_cannot_hold_is_a_config_error(small_dataset, tmp_path):
    from tests.helpers.cli import assert_clean_failure, run_cli

    result, run_dir = run_cli(tmp_path, *tiny_overrides(small_dataset, "optimizer.lr=1e39"))
    assert_clean_failure(result, run_dir, "optimizer.lr=1e+39 cannot be used", "float32")


def test_killing_a_run_leaves_its_data_workers_quiet(small_dataset, tmp_path):
    """SIGKILL of the main process: its DataLoader workers end without printing tracebacks, and every file left is
    whole."""
    run_dir = tmp_path / "run"
    process = start_train_py(tiny_overrides(small_dataset, *COMMON, "data.num_workers=2"), run_dir)
    wait_for(process, run_dir, "last-step00000002.safetensors")
    process.kill()
    output = finish(process)  # reads until the workers, which share the output pipe, have gone too
    assert process.returncode == -signal.SIGKILL and "Error" not in output
    assert assert_files_finite(run_dir) >= 1
