"""kohya ``optimizer_type`` → sdlora ``optimizer=`` option: README's optimizer table (generated from here:
:func:`optimizer_markdown`; a test checks that README holds exactly that) and what ``sdlora-migrate`` and the command
line's hints follow (:func:`optimizer_map`)."""

from __future__ import annotations

from sdlora.tools.kohya_options import table

#: kohya ``optimizer_type`` → sdlora ``optimizer=`` option: (kohya cell, sdlora cell, class cell, {kohya name: option}).
OPTIMIZERS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("`AdamW` (default)", "`optimizer=adamw`", "`torch.optim.AdamW`", {"AdamW": "adamw"}),
    ("`AdamW8bit`, `PagedAdamW8bit`", "`optimizer=adamw8bit`, `paged_adamw8bit`", "bitsandbytes",
     {"AdamW8bit": "adamw8bit", "PagedAdamW8bit": "paged_adamw8bit"}),
    ("`Lion`, `Lion8bit`, `PagedLion8bit`", "`optimizer=lion`, `lion8bit`, `paged_lion8bit`",
     "lion-pytorch, bitsandbytes", {"Lion": "lion", "Lion8bit": "lion8bit", "PagedLion8bit": "paged_lion8bit"}),
    ("`SGDNesterov`, `SGDNesterov8bit`", "`optimizer=sgd_nesterov`, `sgd_nesterov8bit`",
     "torch / bitsandbytes, momentum 0.9", {"SGDNesterov": "sgd_nesterov", "SGDNesterov8bit": "sgd_nesterov8bit"}),
    ("`DAdaptation`/`DAdaptAdamPreprint`, `DAdaptAdam`, `DAdaptAdaGrad`, `DAdaptAdan`, `DAdaptAdanIP`, "
     "`DAdaptLion`, `DAdaptSGD`", "`optimizer=dadapt_adam_preprint`, `dadapt_adam`, `dadapt_adagrad`, "
     "`dadapt_adan`, `dadapt_adan_ip`, `dadapt_lion`, `dadapt_sgd`", "dadaptation",
     {"DAdaptation": "dadapt_adam_preprint", "DAdaptAdamPreprint": "dadapt_adam_preprint",
      "DAdaptAdam": "dadapt_adam", "DAdaptAdaGrad": "dadapt_adagrad", "DAdaptAdan": "dadapt_adan",
      "DAdaptAdanIP": "dadapt_adan_ip", "DAdaptLion": "dadapt_lion", "DAdaptSGD": "dadapt_sgd"}),
    ("`Prodigy`", "`optimizer=prodigy`", "prodigyopt", {"Prodigy": "prodigy"}),
    ("`Adafactor`", "`optimizer=adafactor`", "transformers", {"Adafactor": "adafactor"}),
    ("`AdamWScheduleFree`, `RAdamScheduleFree`, `SGDScheduleFree` (current sd-scripts)",
     "`optimizer=adamw_schedulefree`, `radam_schedulefree`, `sgd_schedulefree`",
     "schedulefree (only `scheduler=constant`)",
     {"AdamWScheduleFree": "adamw_schedulefree", "RAdamScheduleFree": "radam_schedulefree",
      "SGDScheduleFree": "sgd_schedulefree", "schedulefree.AdamWScheduleFree": "adamw_schedulefree",
      "schedulefree.RAdamScheduleFree": "radam_schedulefree", "schedulefree.SGDScheduleFree": "sgd_schedulefree"}),
    ("`prodigyplus.ProdigyPlusScheduleFree`", "`optimizer=prodigy_schedulefree`",
     "prodigy-plus-schedule-free (only `scheduler=constant`)",
     {"prodigyplus.ProdigyPlusScheduleFree": "prodigy_schedulefree"}),
    ("`pytorch_optimizer.CAME`, `pytorch_optimizer.ADOPT`", "`optimizer=came`, `adopt`", "pytorch-optimizer",
     {"pytorch_optimizer.CAME": "came", "pytorch_optimizer.ADOPT": "adopt"}),
    ("— (OneTrainer, SimpleTuner)", "`optimizer=muon`", "pytorch-optimizer's Muon, AdamW for non-matrix parameters",
     {}),
    ("— (bf16 AdamW with Kahan summation)", "`optimizer=adamw_kahan`", "torch-optimi (`kahan_sum`)", {}),
    ("`torch.optim.RAdam`, `pkg.module.Class`", "`optimizer=custom optimizer._target_=torch.optim.RAdam`",
     "any class taking the parameter groups first", {}),
)  # fmt: skip


def optimizer_map() -> dict[str, str]:
    """kohya ``optimizer_type`` (lower case) → sdlora ``optimizer=`` option."""
    return {k.lower(): v for *_, names in OPTIMIZERS for k, v in names.items()}


def optimizer_markdown() -> str:
    """README's optimizer table (between its ``optimizer-table`` markers)."""
    return table(("kohya `optimizer_type`", "sdlora", "class"), ((a, b, c) for a, b, c, _ in OPTIMIZERS))
