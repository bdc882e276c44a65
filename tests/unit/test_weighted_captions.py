"""Weighted captions [kohya: --weighted_captions]: A1111's emphasis syntax, tokenisation with a weight per token, the
weighted text conditioning of SD1/2 and SDXL, and tag shuffling that keeps weighted groups whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdlora.data.captions import augment_tags
from sdlora.data.folders import SubsetOptions
from sdlora.models.tokenizer import load_clip_tokenizer
from sdlora.models.weighted_prompts import parse_weights, split_tags, tokenize_weighted
from tests.helpers.config import TINY_MODELS

E = 1.1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a dog", [("a dog", 1.0)]),
        ("a (red) dog", [("a ", 1.0), ("red", E), (" dog", 1.0)]),
        ("((red))", [("red", E * E)]),
        ("[blue]", [("blue", 1 / E)]),
        ("(red:1.5) dog", [("red", 1.5), (" dog", 1.0)]),
        ("((red:0.5))", [("red", 0.5 * E)]),
        ("(red", [("red", E)]),  # left open: to the end
        ("red)", [("red)", 1.0)]),  # unmatched: literal text (runs of one weight merged)
        (r"\(literal\)", [("(literal)", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_parse_weights(text, expected):
    got = parse_weights(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_unweighted_captions_tokenize_as_the_plain_path():
    tokenizer = load_clip_tokenizer()
    captions = ["a photo of sks dog, sitting on grass", "", "word " * 90]
    ids, weights = tokenize_weighted(tokenizer, captions, 75)
    plain = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ids, plain) and torch.equal(weights, torch.ones_like(weights))


def test_weights_follow_their_tokens():
    tokenizer = load_clip_tokenizer()
    ids, weights = tokenize_weighted(tokenizer, ["a (red:1.5) dog"], 150)
    red = tokenizer("red", add_special_tokens=False).input_ids
    assert ids.shape == weights.shape == (1, 152)
    position = ids[0].tolist().index(red[0])
    assert weights[0, position] == 1.5 and weights[0, position - 1] == 1.0 and weights[0, position + 1] == 1.0


@pytest.mark.parametrize("family_name", TINY_MODELS)
def test_weighted_conditioning_scales_the_token_states(family_name):
    from sdlora.tools.families import family

    plain, weighted = family(family_name), family(family_name, weighted_captions=True)
    components = plain.load()
    with torch.no_grad():
        base = plain.encode_text(components, ["a red dog"])
        same = weighted.encode_text(components, ["a red dog"])
        emphasised = weighted.encode_text(components, ["a (red:2) dog"])
    assert torch.equal(base.hidden_states, same.hidden_states)
    ratio = emphasised.hidden_states / base.hidden_states  # [1, 77, D]
    position = 2  # BOS, "a", "red"
    assert torch.allclose(ratio[0, position], torch.full_like(ratio[0, position], 2.0), atol=1e-5)
    others = [p for p in range(ratio.shape[1]) if p != position]
    assert torch.allclose(emphasised.hidden_states[0, others], base.hidden_states[0, others])
    if base.pooled is not None:
        assert torch.equal(base.pooled, emphasised.pooled)  # SDXL: the pooled vector is not weighted


def test_split_tags_keeps_weighted_groups():
    assert split_tags("a, (red, blue:1.2), [x, y], z", ",") == ["a", " (red, blue:1.2)", " [x, y]", " z"]
    assert split_tags(r"a\(, b", ",") == [r"a\(", " b"]


def test_shuffling_weighted_captions_moves_groups_whole():
    options = SubsetOptions(shuffle_caption=True, keep_tokens=1, weighted_captions=True)
    caption = "sks, (red, blue:1.2), [tall, thin], smiling"
    seen = set()
    for seed in range(20):
        out = augment_tags(caption, options, np.random.default_rng(seed))
        tags = split_tags(out, ",")
        assert tags[0] == "sks" and sorted(t.strip() for t in tags[1:]) == [
            "(red, blue:1.2)",
            "[tall, thin]",
            "smiling",
        ]
        seen.add(out)
    assert len(seen) > 1
