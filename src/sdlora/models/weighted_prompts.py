"""Weighted captions and prompts [kohya: --weighted_captions] as pure functions.

The emphasis syntax of A1111's web UI, as kohya parses it (``parse_prompt_attention``):

- ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1; brackets nest;
- ``(text:1.5)`` multiplies it by 1.5 (any number, also below 1);
- ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\\\`` are the literal characters; an unmatched ``)`` or ``]`` is text, and a
  bracket left open applies to the end of the prompt.

Each weighted fragment is tokenised on its own (BPE splits at spaces and punctuation anyway, so a caption without
brackets gives exactly the ids of the unweighted path), the ids are joined and cut to ``max_token_length``, and wrapped
as ``[BOS, ids, EOS, pad…]``; every id carries its fragment's weight (1 for BOS, EOS and padding). The encoder's
hidden state at each position is multiplied by that weight (current sd-scripts for SD1/2 and SDXL; the pooled SDXL
vector is not weighted). kohya_ss v21.8.8 also rescaled the states of SD1/2 back to their mean afterwards; current
sd-scripts does not, and neither does sdlora.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where tensors are made: captions and the data plan use this module without it
    import torch

_TOKEN = re.compile(r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
EMPHASIS = 1.1  # ( ) multiplies by it, [ ] divides by it


def parse_weights(text: str) -> list[tuple[str, float]]:
    """``"a (red:1.5) [dog]"`` → ``[("a ", 1.0), ("red", 1.5), (" ", 1.0), ("dog", 1/1.1)]`` (runs of equal weight
    merged; an empty prompt is ``[("", 1.0)]``)."""
    parts: list[list[Any]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for part in parts[start:]:
            part[1] *= factor

    for match in _TOKEN.finditer(text):
        token, number = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            parts.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(parts))
        elif token == "[":
            square_open.append(len(parts))
        elif number is not None and round_open:
            scale(round_open.pop(), float(number))
        elif token == ")" and round_open:
            scale(round_open.pop(), EMPHASIS)
        elif token == "]" and square_open:
            scale(square_open.pop(), 1 / EMPHASIS)
        else:
            parts.append([token, 1.0])
    for start in round_open:
        scale(start, EMPHASIS)
    for start in square_open:
        scale(start, 1 / EMPHASIS)
    merged: list[tuple[str, float]] = []
    for fragment, weight in parts:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + fragment, weight)
        else:
            merged.append((fragment, weight))
    return merged or [("", 1.0)]


def tokenize_weighted(tokenizer: Any, captions: list[str], max_token_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions → ids [B, max_token_length + 2] (``[BOS, ids, EOS, pad…]``) and their weights (same shape)."""
    rows, weights = [], []
    for caption in captions:
        ids: list[int] = []
        row_weights: list[float] = []
        for fragment, weight in parse_weights(caption):
            if not fragment:
                continue
            piece = tokenizer(fragment, add_special_tokens=False).input_ids
            ids += piece
            row_weights += [weight] * len(piece)
        ids, row_weights = ids[:max_token_length], row_weights[:max_token_length]
        padding = max_token_length - len(ids)
        rows.append([tokenizer.bos_token_id, *ids, tokenizer.eos_token_id, *[tokenizer.pad_token_id] * padding])
        weights.append([1.0, *row_weights, 1.0, *[1.0] * padding])
    import torch

    return torch.tensor(rows, dtype=torch.long), torch.tensor(weights, dtype=torch.float32)


def apply_weights(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Hidden states [B, L, D] of the joined chunks × the weight of each position [B, L]."""
    return states * weights.to(device=states.device, dtype=states.dtype).unsqueeze(-1)


def split_tags(caption: str, separator: str) -> list[str]:
    """``caption`` split on ``separator`` outside brackets, so that a weighted group such as ``(red, blue:1.2)``
    stays one tag when tags are shuffled or dropped (kohya splits inside brackets too and asks for no commas there)."""
    tags, depth, start, i = [], 0, 0, 0
    while i < len(caption):
        char = caption[i]
        if char == "\\":
            i += 2
            continue
        if char in "([":
            depth += 1
        elif char in ")]" and depth:
            depth -= 1
        elif depth == 0 and caption.startswith(separator, i):
            tags.append(caption[start:i])
            start = i + len(separator)
            i = start
            continue
        i += 1
    tags.append(caption[start:])
    return tags
