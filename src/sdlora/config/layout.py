"""Where each key is shown: the tabs of kohya_ss's LoRA "Training" tab, which the web UI copies and whose first three
tabs ``python train.py --help`` lists as the most used keys.

This module only *places* keys; it lists no options. A key it does not name — every new schema key — goes to
"Advanced" under its group, so it appears in the UI without UI code (:mod:`sdlora.config.docs` lists the keys).

kohya_ss v21.8.8's tabs: *Source model* (the model, the "SDXL Model" switch, the VAE), *Folders* (image,
regularisation and output folders, output name), *Parameters* → *Basic* (LoRA type, rank/alpha, batch size, epochs and
steps, saving, captions, precision, learning rates, scheduler, optimizer, resolution and buckets), *Advanced*
(everything else) and *Samples* (sample prompts and schedule).
"""

from __future__ import annotations

SOURCE, FOLDERS, BASIC, ADVANCED, SAMPLES = "Source model", "Folders", "Basic", "Advanced", "Samples"
TABS = (SOURCE, FOLDERS, BASIC, ADVANCED, SAMPLES)

#: Config groups shown in a tab other than Advanced (the rest — new groups too — are under Advanced).
GROUP_TABS = {
    "model": SOURCE,
    "network": BASIC,
    "optimizer": BASIC,
    "scheduler": BASIC,
    "precision": BASIC,
    "sample": SAMPLES,
}

#: Keys shown in a tab other than Advanced (besides every ``sample.*`` key, which goes to Samples).
KEY_TABS = {
    **dict.fromkeys(("model.pretrained", "model.vae", "model.v_parameterization"), SOURCE),
    **dict.fromkeys(("data.train_dir", "data.reg_dir", "validation.dir", "save.output_name"), FOLDERS),
    **dict.fromkeys(
        (
            "network.rank",
            "network.alpha",
            "network.conv_rank",
            "network.conv_alpha",
            "network.weights",
            "optimizer",
            "optimizer.lr",
            "scheduler",
            "network.unet_lr",
            "network.text_encoder_lr",
            "data.batch_size",
            "trainer.max_epochs",
            "trainer.max_steps",
            "save.every_n_epochs",
            "save.every_n_steps",
            "data.caption_extension",
            "seed",
            "data.cache_latents",
            "save.precision",
            "data.resolution",
            "data.enable_bucket",
            "data.min_bucket_reso",
            "data.max_bucket_reso",
        ),
        BASIC,
    ),
}

#: Keys of open nodes (``optimizer``, ``scheduler``) shown as fields of their own; their other arguments are edited
#: together as the node's arguments.
PROMOTED_NODE_KEYS = ("optimizer.lr",)


def tab_of(key: str) -> str:
    """The tab a key (``network.rank``) is shown in."""
    if key in KEY_TABS:
        return KEY_TABS[key]
    return SAMPLES if key.startswith("sample.") else ADVANCED


def group_tab(group: str) -> str:
    """The tab a config group's option menu is shown in."""
    return GROUP_TABS.get(group, ADVANCED)


def most_used() -> list[str]:
    """The keys of the Source model, Folders and Basic tabs, in that order (``train.py --help`` lists them; open
    nodes such as ``optimizer`` are groups there)."""
    return [
        key for tab in (SOURCE, FOLDERS, BASIC) for key in KEY_TABS if KEY_TABS[key] == tab and key not in GROUP_TABS
    ]
