"""One AdamW step over a LoRA-sized parameter list with torch's three implementations: the per-parameter Python loop
(``foreach=False``), the multi-tensor kernels (``foreach=True``) and the fused kernel (``fused=True``), which sdlora
chooses for torch optimizers (:func:`sdlora.optim.factory.with_fast_kernels`). Default shape: 384 tensors of
32 × 735 (9.0 M parameters, the count of an SD1.5 rank-32 LoRA on the U-Net's attention layers). Best of ``--steps``
steps after one warm-up step.

    python benchmarks/optimizer_kernels.py [--tensors 384] [--steps 10]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=384)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    import torch

    params = [torch.nn.Parameter(torch.randn(32, 735)) for _ in range(args.tensors)]
    for param in params:
        param.grad = torch.randn_like(param)
    print(f"AdamW over {args.tensors} tensors ({sum(p.numel() for p in params) / 1e6:.1f} M parameters), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.steps} steps:")  # fmt: skip
    for options in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        optimizer = torch.optim.AdamW(params, lr=1e-4, **options)
        optimizer.step()
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            optimizer.step()
            times.append(time.perf_counter() - start)
        name = ", ".join(f"{key}={value}" for key, value in options.items())
        print(f"  {name:14} {min(times) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
