"""Check and build the ``optimizer`` and ``scheduler`` config nodes (``_target_`` + ``_partial_: true`` + kwargs).

Their schemas are open (any importable class), so their keys are checked here against the target's signature before
training starts: ``optimizer.weight_decy=0.1`` fails with the list of accepted arguments instead of a TypeError
deep in Lightning.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from omegaconf import DictConfig, OmegaConf

# arguments the run passes itself (not set in the config)
RUNTIME_ARGS = {"optimizer": {"params"}, "scheduler": {"optimizer", "total_steps"}}
# import name → pip package, for the optional optimizer libraries
PACKAGES = {
    "bitsandbytes": "bitsandbytes",
    "lion_pytorch": "lion-pytorch",
    "dadaptation": "dadaptation",
    "prodigyopt": "prodigyopt",
    "transformers": "transformers",
    "schedulefree": "schedulefree",
    "prodigyplus": "prodigy-plus-schedule-free",
    "pytorch_optimizer": "pytorch-optimizer",
    "optimi": "torch-optimi",
    "came_pytorch": "came-pytorch",  # kohya users' CAME; sdlora's optimizer=came is pytorch-optimizer's
}


def locate_target(node: Any, group: str) -> tuple[Any, list[str]]:
    """The callable named by ``node._target_`` and the problems found with the node's keys."""
    from hydra.utils import get_method

    target = node.get("_target_") if isinstance(node, DictConfig | dict) else None
    if not target:
        return None, [f"{group}: no _target_ (choose a {group}=… option or set {group}._target_=package.Class)"]
    missing = missing_package_problems(node, group)
    if missing:
        return None, missing
    try:
        fn = get_method(target)
    except Exception as exc:
        reason = str(exc).splitlines()[0]
        return None, [f"{group}._target_={target!r} cannot be imported ({reason})"]
    return fn, _unknown_keys(fn, node, group)


def _missing_package(target: str) -> str | None:
    """The pip name of ``target``'s top-level package when it is a known optional library that is not installed."""
    import importlib.util

    top = str(target).split(".", 1)[0]
    if top in PACKAGES and importlib.util.find_spec(top) is None:
        return PACKAGES[top]
    return None


def target_class_name(node: Any) -> str:
    """``module.Class`` of what ``node._target_`` builds, as kohya names it in ``ss_optimizer`` (the class's own module,
    e.g. ``torch.optim.adamw.AdamW``). sdlora's builder functions declare the class they build."""
    from hydra.utils import get_method

    target = str(node["_target_"])
    try:
        fn = get_method(target)
    except Exception:
        return target
    declared = getattr(fn, "optimizer_class", None)
    if declared:
        return declared
    if isinstance(fn, type):
        return f"{fn.__module__}.{fn.__name__}"
    return target


def rule_name(node: Any) -> str:
    """The dotted name kohya's optimizer rules classify an optimizer by (:mod:`sdlora.optim.rules`: the package, the
    class's short name), without importing a third-party target: sdlora's builder functions declare the class they
    build (their modules import nothing heavy); any other target is named by its ``_target_`` string.
    :func:`target_class_name` (which imports the target) gives the class's own module, for the LoRA metadata."""
    target = str(node["_target_"])
    return target_class_name(node) if target.startswith("sdlora.") else target


def _unknown_keys(fn: Any, node: Any, group: str) -> list[str]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    accepted = set(params) - {"self"} - RUNTIME_ARGS[group]
    problems = []
    for key in node:
        if key.startswith("_") or key in accepted:
            continue
        close = difflib.get_close_matches(key, accepted, n=1)
        if close:
            hint = f" (did you mean {group}.{close[0]}?)"
        else:
            hint = f" (accepted: {', '.join(sorted(accepted))})" if accepted else " (it takes no arguments)"
        problems.append(f"{group}.{key} is not an argument of {node['_target_']}{hint}")
    return problems


def missing_package_problems(node: Any, group: str) -> list[str]:
    """The problem of a target from a known optional library that is not installed (none: an empty list)."""
    missing = _missing_package(str(node.get("_target_")))
    if not missing:
        return []
    return [f"{group}._target_={node['_target_']!r} needs the Python package {missing!r}: pip install {missing}"]


def lr_problems(node: Any) -> list[str]:
    lr = node.get("lr") if isinstance(node, DictConfig | dict) else None
    if lr is None or isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0:
        return [f"optimizer.lr must be a positive number, got {lr!r}"]
    return []


def check_optimizer(node: Any) -> list[str]:
    _, problems = locate_target(node, "optimizer")
    return problems or lr_problems(node)


def check_scheduler(node: Any) -> list[str]:
    return locate_target(node, "scheduler")[1]


def build_lr_scheduler(factory: Any, optimizer: Any, total_steps: int) -> Any:
    """Call a scheduler partial; ``total_steps`` (the run's optimizer steps) goes to factories that take it — all of
    sdlora's — and not to other classes such as ``torch.optim.lr_scheduler.StepLR`` (``scheduler=custom``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {"total_steps": None}
    takes_total = "total_steps" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return factory(optimizer, total_steps=total_steps) if takes_total else factory(optimizer)


def instantiate_partial(node: Any) -> Any:
    """``hydra.utils.instantiate`` of an open node (composed or resolved) as a ``functools.partial``."""
    from hydra.utils import instantiate

    from sdlora.config.frozen import thaw

    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else thaw(node)
    return instantiate({**plain, "_partial_": True}, _convert_="all")


#: torch optimizers with a fused kernel (one kernel per step for all parameters) on CUDA and, since torch 2.4, CPU
FUSED_CLASSES = (
    "torch.optim.adam.Adam",
    "torch.optim.adamw.AdamW",
    "torch.optim.sgd.SGD",
    "torch.optim.adagrad.Adagrad",
)


def with_fast_kernels(factory: Any, node: Any, fused_allowed: bool) -> Any:
    """The optimizer partial ``factory`` building torch's fused kernel (``fused=True``: one kernel per step for all
    parameters) when the class has one, the node chooses neither ``fused`` nor ``foreach``, and ``fused_allowed``;
    otherwise ``factory`` itself, so torch picks its default (``foreach`` on CUDA, a loop over the parameters on a
    CPU). Measured on this project's CPU for AdamW over 384 LoRA-sized tensors (9 M parameters,
    ``benchmarks/optimizer_kernels.py``): 23 ms per step by default, 28 ms with ``foreach``, 6 ms fused
    (docs/performance.md "Per-step host work").

    ``fused_allowed`` is false under Lightning's mixed-precision plugins when gradients are clipped (Lightning refuses
    to clip for an optimizer that unscales internally, which the fused ones declare), with float16 LoRA parameters
    (``full_fp16``: their gradient scaler unscales them itself) and under FSDP. The class's default is built when the
    parameters do not allow the fused kernel."""
    if not fused_allowed or "fused" in node or "foreach" in node or target_class_name(node) not in FUSED_CLASSES:
        return factory
    kernel = {"fused": True}

    def build(groups: list[dict]) -> Any:
        try:
            return factory([dict(group) for group in groups], **kernel)
        except (RuntimeError, ValueError, TypeError):  # e.g. parameters on a device without the fused kernel
            return factory(groups)

    return build


def fused_allowed(trainer_precision: str, lora_dtype: str, clips_gradients: bool, fsdp: bool) -> bool:
    """Whether the fused optimizer kernels can run under the run's precision plugin (:func:`with_fast_kernels`)."""
    if lora_dtype == "float16" or fsdp:
        return False
    return trainer_precision == "32-true" or not clips_gradients
