"""kohya's sample prompt files (docs/kohya.md §12): .txt inline options, .toml and .json forms, errors; samplers."""

from __future__ import annotations

import json

import pytest

from sdlora.errors import SdloraError
from sdlora.sampling.prompts import SamplePrompt, load_prompts, parse_line
from sdlora.sampling.schedulers import build_sampler, canonical, scheduler_config


def test_every_inline_option():
    prompt, problems, ignored = parse_line(
        "a cat, masterpiece --n lowres, blurry --w 777 --h 60 --s 2000 --l 5.5 --d 1234 --ss Euler_A"
    )
    assert problems == [] and ignored == []
    assert prompt == SamplePrompt(
        prompt="a cat, masterpiece", negative_prompt="lowres, blurry", width=776, height=64, steps=1000, scale=5.5,
        seed=1234, sampler="Euler_A",
    )  # fmt: skip


def test_options_are_case_insensitive_and_defaults_are_kohyas():
    prompt, _, _ = parse_line("a dog --W 512 --S 0")
    assert (prompt.width, prompt.height, prompt.steps, prompt.scale, prompt.seed) == (512, None, 1, 7.5, None)
    assert parse_line("just a prompt")[0] == SamplePrompt("just a prompt")


def test_unsupported_and_unknown_options_are_ignored_with_their_names():
    prompt, problems, ignored = parse_line("x --cn image.png --g 3 --zz 1 --s 4")
    assert prompt.steps == 4 and problems == []
    assert ignored == ["--cn", "--g", "--zz 1"]


def test_bad_values_are_problems():
    _, problems, _ = parse_line("x --w wide --s 2.5 --l high --d")
    assert problems == [
        "--w expects an integer (pixels), got 'wide'",
        "--s expects an integer (steps), got '2.5'",
        "--l expects a number (CFG scale), got 'high'",
        "--d expects an integer (seed), got ''",
    ]


def test_txt_file_skips_blank_lines_and_comments(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# my prompts\n\na cat --d 1\n   \nsks dog --n ugly --cn x.png\n", encoding="utf-8")
    prompts, warnings = load_prompts(path)
    assert [p.prompt for p in prompts] == ["a cat", "sks dog"] and prompts[1].negative_prompt == "ugly"
    assert len(warnings) == 1 and "line 5: ignored --cn" in warnings[0]  # the line number in the file


def test_toml_subsets_over_common_keys(tmp_path):
    path = tmp_path / "prompts.toml"
    path.write_text(
        '[prompt]\nnegative_prompt = "lowres"\nsample_steps = 12\nwidth = 96\nheight = 64\nscale = 6\n\n'
        '[[prompt.subset]]\nprompt = "a cat"\nseed = 3\n\n'
        '[[prompt.subset]]\nprompt = "a dog"\nwidth = 130\nsample_sampler = "dpmsolver++"\n',
        encoding="utf-8",
    )
    prompts, warnings = load_prompts(path)
    assert warnings == []
    assert prompts == [
        SamplePrompt("a cat", "lowres", 96, 64, 12, 6.0, 3, None),
        SamplePrompt("a dog", "lowres", 128, 64, 12, 6.0, None, "dpmsolver++"),
    ]


def test_json_list_of_objects(tmp_path):
    path = tmp_path / "prompts.json"
    entries = [{"prompt": "a cat", "sample_steps": 5, "seed": 9}, {"prompt": "a dog", "controlnet_image": "x.png"}]
    path.write_text(json.dumps(entries), encoding="utf-8")
    prompts, warnings = load_prompts(path)
    assert prompts == [SamplePrompt("a cat", steps=5, seed=9), SamplePrompt("a dog")]
    assert "prompt 2: ignored controlnet_image" in warnings[0]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("missing.txt", None, "does not exist"),
        ("empty.txt", "# nothing\n\n", "holds no prompt"),
        ("bad.txt", "a --w x\nb --s y\n", "has 2 problem(s)"),
        ("bad.json", '{"prompt": "x"}', "a list of objects"),
        ("bad.toml", 'prompt = "x"\n', "[prompt] table"),
        ("broken.toml", "[prompt\n", "cannot be read"),
        ("noprompt.json", '[{"seed": 1}]', "no 'prompt'"),
    ],
)
def test_bad_files_name_the_option_and_the_problem(tmp_path, name, text, expected):
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(SdloraError) as error:
        load_prompts(path)
    assert "sample.prompts=" in str(error.value) and expected in str(error.value)


def test_samplers_use_the_training_schedule_and_prediction_type():
    assert canonical("K_EULER_A") == "euler_a" and canonical("nope") is None
    name, config = scheduler_config("dpmsolver++", "v_prediction")
    assert name == "DPMSolverMultistepScheduler"
    assert (config["prediction_type"], config["beta_schedule"], config["num_train_timesteps"]) == (
        "v_prediction", "scaled_linear", 1000)  # fmt: skip
    assert config["beta_start"] == 0.00085 and config["beta_end"] == 0.012
    _, ddim = scheduler_config("ddim", "epsilon")
    assert ddim["clip_sample"] is False  # unlike kohya, latents are not clipped to [−1, 1]
    _, zero = scheduler_config("euler", "epsilon", zero_terminal_snr=True)
    assert zero["rescale_betas_zero_snr"] and zero["timestep_spacing"] == "trailing"
    with pytest.raises(ValueError, match="unknown sampler"):
        scheduler_config("nope", "epsilon")


@pytest.mark.parametrize("name", ["ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver",
                                  "dpmsolver++", "dpmsingle"])  # fmt: skip
def test_every_sampler_builds(name):
    scheduler = build_sampler(name, "epsilon")
    scheduler.set_timesteps(4)
    assert scheduler.config.prediction_type == "epsilon" and len(scheduler.timesteps) >= 4


def test_a_web_uis_sampler_name_says_kohyas_name_for_it():
    from sdlora.sampling.schedulers import unknown_sampler_message

    assert unknown_sampler_message("dpmpp_2m", "sample.sampler=").startswith(
        "sample.sampler='dpmpp_2m' is not a sampler — the web UIs' dpmpp_2m is dpmsolver++ here (known: ddim,"
    )
    assert " — " not in unknown_sampler_message("magic", "sample.sampler=")
