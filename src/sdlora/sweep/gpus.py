"""One GPU per job in a parallel local sweep (``hydra/launcher=joblib``).

    SDLORA_JOB_GPUS=0,1,2,3 python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs=4 network.rank=4,8,16,32

joblib runs the jobs in ``n_jobs`` worker processes and reuses a worker for the next job. With ``SDLORA_JOB_GPUS`` set
(a comma-separated list of GPU ids, as ``CUDA_VISIBLE_DEVICES`` takes them), the first job of a worker claims one GPU
of the list that no other worker of the sweep holds and sets ``CUDA_VISIBLE_DEVICES`` to it before anything touches
CUDA; the worker keeps that GPU for its lifetime, so its later jobs run on the same GPU (CUDA cannot change a
process's visible devices once initialised). A claim is an exclusive ``flock`` on ``<sweep folder>/.gpu_claims/<id>``
held open by the worker; the operating system drops it when the worker exits. With ``n_jobs`` ≤ the number of GPUs
every job has a GPU of its own; with more workers than GPUs a job waits for a free one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sdlora.errors import SdloraError

ENV_VAR = "SDLORA_JOB_GPUS"
CLAIMS_FOLDER = ".gpu_claims"

# The GPU this process holds: (gpu id, open lock file). Kept for the life of the process.
_claimed: tuple[str, object] | None = None


def gpu_pool(text: str) -> list[str]:
    """The GPU ids of ``SDLORA_JOB_GPUS`` (``"0,1"`` → ``["0", "1"]``)."""
    pool = [part.strip() for part in text.split(",") if part.strip()]
    if not pool or len(set(pool)) != len(pool):
        raise SdloraError(f"{ENV_VAR}={text!r} must be a comma-separated list of distinct GPU ids, e.g. 0,1,2,3")
    return pool


def _try_lock(path: Path):
    """An open file holding an exclusive lock on ``path``, or None where another process holds it."""
    import fcntl

    handle = open(path, "a+")  # noqa: SIM115 (held open: the lock lives as long as the file)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def claim_gpu(pool: list[str], claims_dir: Path, poll_s: float = 2.0) -> str:
    """The GPU of ``pool`` this process holds: its earlier claim, or a free one claimed now (waiting for one)."""
    global _claimed
    if _claimed is not None:
        if _claimed[0] not in pool:
            raise SdloraError(
                f"this worker already runs on GPU {_claimed[0]}, which {ENV_VAR}={','.join(pool)} does not list"
            )
        return _claimed[0]
    try:
        import fcntl  # noqa: F401
    except ImportError:
        raise SdloraError(f"{ENV_VAR} needs file locks (fcntl), which this platform lacks") from None
    claims_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for gpu in pool:
            handle = _try_lock(claims_dir / gpu)
            if handle is not None:
                _claimed = (gpu, handle)
                return gpu
        time.sleep(poll_s)


def assign_job_gpu(sweep_dir: str | Path) -> str | None:
    """With ``SDLORA_JOB_GPUS`` set, claim this worker's GPU and make it the only visible one; else do nothing."""
    text = os.environ.get(ENV_VAR)
    if not text:
        return None
    gpu = claim_gpu(gpu_pool(text), Path(sweep_dir) / CLAIMS_FOLDER)
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu
