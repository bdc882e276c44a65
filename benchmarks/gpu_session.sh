#!/usr/bin/env bash
# The GPU checks of one short session on a machine with a CUDA GPU, prepared so that minutes of GPU time are not spent
# on set-up (docs/performance.md "GPU throughput"): the CUDA tests (tests/gpu) and the target cases of
# benchmarks/gpu_throughput.py. Run from the repository root:
#
#     bash benchmarks/gpu_session.sh [tests|compile|all]     # default: tests
#
#   tests    tests/gpu, then the cases sdxl-base and sdxl-b1-ckpt-target  (estimated 5 minutes on an H100; not yet run)
#   compile  the case sdxl-b4-compile (torch.compile, batch 4: the MFU target; estimated 4 minutes)
#   all      every case of the benchmark (30-40 minutes)
#
# Results go to $OUT (or ./gpu-out): env.txt (GPU, driver, versions), gpu_tests.log, bench.log, gpu.json and gpu.md
# (the table for docs/performance.md; written after every case, so a run cut short keeps what it measured).
#
# A machine whose Python has torch, Lightning and transformers but not the rest of sdlora's dependencies gets them as
# wheels from .whl/ (kept out of git), made beforehand where pip can reach PyPI:
#
#     mkdir -p .whl && echo /.whl/ >> .git/info/exclude
#     pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 -d .whl hydra-core==1.3.8 omegaconf==2.3.1 diffusers==0.42.1 \
#         lycoris-lora==4.1.3 toml==0.10.2 importlib_metadata
#     pip wheel --no-deps antlr4-python3-runtime==4.9.3 -w .whl     # an sdist only: built into a pure-Python wheel
#
# SDLORA_COMMIT names the commit where the copy has no .git.
set -u
part=${1:-tests}
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sdlora-site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/sdlora-site
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import sys, torch, lightning, diffusers, transformers, hydra, lycoris; print('python', sys.version.split()[0], '| torch', torch.__version__, 'CUDA', torch.version.cuda, '| lightning', lightning.__version__, '| diffusers', diffusers.__version__, '| transformers', transformers.__version__, '| hydra', hydra.__version__)"
    echo "commit ${SDLORA_COMMIT:-unknown}"
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

bench() {  # the benchmark's cases, steps and warm-up fewer than its defaults: the session is short
    timeout "$1" python3 benchmarks/gpu_throughput.py --cases "${@:2}" --steps 10 --warmup 3 \
        --json "$out/gpu.json" --markdown "$out/gpu.md" 2>&1 | tee -a "$out/bench.log" | grep -v '^{'
}

case "$part" in
tests)
    timeout 200 python3 -m pytest -q -p no:cacheprovider -n 0 tests/gpu 2>&1 | tee "$out/gpu_tests.log" | tail -25
    bench 330 sdxl-base sdxl-b1-ckpt-target
    ;;
compile) bench 540 sdxl-b4-compile ;;
all) timeout 3000 python3 benchmarks/gpu_throughput.py --json "$out/gpu.json" --markdown "$out/gpu.md" 2>&1 |
    tee "$out/bench.log" | grep -v '^{' ;;
*) echo "usage: bash benchmarks/gpu_session.sh [tests|compile|all]" >&2; exit 2 ;;
esac
