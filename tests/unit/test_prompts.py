"""Long prompts [kohya: --max_token_length] (docs/kohya.md §6.2): chunking token ids and joining hidden states.

Ids come from the shipped CLIP tokenizer: "dog" is one token (1929), so ``"dog " * k`` is a caption of exactly k
tokens. BOS = 49406, EOS = 49407; the pad id is 49407 (SD1.x, SDXL tokenizer 1) or 0 (SD2.x, SDXL tokenizer 2).
"""

from __future__ import annotations

import pytest
import torch

from sdlora.models.prompts import CHUNK, join_chunk_states, split_chunks
from sdlora.models.tokenizer import load_clip_tokenizer

BOS, EOS, DOG = 49406, 49407, 1929
PADS = {"<|endoftext|>": EOS, "!": 0}


@pytest.fixture(scope="module", params=list(PADS), ids=["pad_eos", "pad_0"])
def tokenizer(request):
    return load_clip_tokenizer(request.param)


@pytest.fixture(scope="module")
def tok_pad0():
    return load_clip_tokenizer("!")


@pytest.fixture(scope="module")
def tok_eos():
    return load_clip_tokenizer("<|endoftext|>")


def _ids(tok, captions: list[str], length: int) -> torch.Tensor:
    return tok(captions, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids


def _dogs(k: int) -> str:
    return " ".join(["dog"] * k)


def kohya_chunks(ids: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """A transliteration of sd-scripts' ``get_input_ids`` loop: one caption [tokenizer_max_length] → [n, 77]."""
    tokenizer_max_length, model_max_length = len(ids), 77
    chunks = []
    for i in range(1, tokenizer_max_length - model_max_length + 2, model_max_length - 2):
        chunk = torch.cat([ids[:1], ids[i : i + 75], ids[-1:]]).clone()
        if pad_id != eos_id:
            if chunk[-2] != eos_id and chunk[-2] != pad_id:
                chunk[-1] = eos_id
            if chunk[1] == pad_id:
                chunk[1] = eos_id
        chunks.append(chunk)
    return torch.stack(chunks)


# --- split_chunks -----------------------------------------------------------------------------------------------------


def test_tokenizer_sanity(tok_pad0, tok_eos):
    assert tok_eos("dog dog").input_ids == [BOS, DOG, DOG, EOS]
    assert (tok_eos.pad_token_id, tok_pad0.pad_token_id) == (EOS, 0)
    assert _ids(tok_pad0, ["dog"], 152).shape == (1, 152)


def test_single_chunk_is_the_identity(tokenizer):
    captions = ["", "a photo of a cat", _dogs(75), _dogs(90)]
    ids = _ids(tokenizer, captions, 77)
    chunks = split_chunks(ids, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert chunks.shape == (4, 1, 77)
    assert torch.equal(chunks[:, 0], ids)


@pytest.mark.parametrize(("length", "n"), [(77, 1), (152, 2), (227, 3)])
def test_chunk_shapes_and_wrapping(tokenizer, length, n):
    ids = _ids(tokenizer, [_dogs(10), _dogs(300)], length)
    chunks = split_chunks(ids, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert chunks.shape == (2, n, 77) and chunks.dtype == ids.dtype
    assert bool((chunks[:, :, 0] == BOS).all())  # every chunk starts with BOS
    # a caption longer than the window fills every chunk with real tokens, each closed by EOS
    assert bool((chunks[1, :, 1:76] == DOG).all()) and bool((chunks[1, :, 76] == EOS).all())


def test_chunks_hold_consecutive_slices(tok_eos):
    ids = torch.arange(227).unsqueeze(0)  # synthetic ids make the slicing visible
    chunks = split_chunks(ids, eos_id=10**6, pad_id=10**6)  # pad == eos: no fix-ups
    for i in range(3):
        assert chunks[0, i, 0] == 0  # BOS = first id
        assert torch.equal(chunks[0, i, 1:76], torch.arange(1 + 75 * i, 76 + 75 * i))
        assert chunks[0, i, 76] == 226  # the last id


def test_pad_equal_eos_has_no_fixups(tok_eos):
    ids = _ids(tok_eos, [_dogs(5), _dogs(75)], 152)
    chunks = split_chunks(ids, EOS, EOS)
    # short caption: the second chunk is BOS then EOS padding only
    assert chunks[0, 0, :7].tolist() == [BOS] + [DOG] * 5 + [EOS]
    assert chunks[0, 1].tolist() == [BOS] + [EOS] * 76
    # exactly 75 tokens: chunk 0 is full and closed by the final id (EOS)
    assert chunks[1, 0].tolist() == [BOS] + [DOG] * 75 + [EOS]
    assert chunks[1, 1].tolist() == [BOS] + [EOS] * 76


def test_pad_fixup_chunk_starting_with_padding(tok_pad0):
    ids = _ids(tok_pad0, [_dogs(5)], 152)
    assert ids[0, :8].tolist() == [BOS] + [DOG] * 5 + [EOS, 0]
    chunks = split_chunks(ids, EOS, 0)
    assert chunks[0, 0].tolist() == [BOS] + [DOG] * 5 + [EOS] + [0] * 70  # ends in padding: unchanged
    # the caption ended in chunk 0: chunk 1 starts [BOS, EOS, pad…] instead of [BOS, pad…]
    assert chunks[0, 1].tolist() == [BOS, EOS] + [0] * 75


def test_pad_fixup_chunk_whose_second_last_is_a_real_token(tok_pad0):
    ids = _ids(tok_pad0, [_dogs(75)], 152)
    assert ids[0, 76].item() == EOS and ids[0, -1].item() == 0  # EOS lands in chunk 1, the final id is pad
    chunks = split_chunks(ids, EOS, 0)
    assert chunks[0, 0].tolist() == [BOS] + [DOG] * 75 + [EOS]  # the pad at the end became EOS
    assert chunks[0, 1].tolist() == [BOS, EOS] + [0] * 75  # starts with the real EOS: unchanged


def test_pad_fixup_caption_ending_in_the_last_chunk(tok_pad0):
    ids = _ids(tok_pad0, [_dogs(80), _dogs(149)], 152)
    chunks = split_chunks(ids, EOS, 0)
    assert chunks[0, 0].tolist() == [BOS] + [DOG] * 75 + [EOS]
    assert chunks[0, 1].tolist() == [BOS] + [DOG] * 5 + [EOS] + [0] * 70
    # 149 tokens: chunk 1 is [BOS, 74 dogs, EOS, pad]; its second-last is EOS, so the pad stays
    assert chunks[1, 1].tolist() == [BOS] + [DOG] * 74 + [EOS, 0]


def test_truncated_caption_every_chunk_closed_by_eos(tok_pad0):
    ids = _ids(tok_pad0, [_dogs(400)], 227)
    assert ids[0, -1].item() == EOS  # the tokenizer keeps EOS when truncating
    chunks = split_chunks(ids, EOS, 0)
    assert chunks[0].tolist() == [[BOS] + [DOG] * 75 + [EOS]] * 3


def test_input_is_not_modified(tok_pad0):
    ids = _ids(tok_pad0, [_dogs(75), _dogs(3)], 152)
    before = ids.clone()
    split_chunks(ids, EOS, 0)
    assert torch.equal(ids, before)


@pytest.mark.parametrize("length", [152, 227])
def test_matches_kohya_loop_on_a_mixed_batch(tokenizer, length):
    counts = [0, 1, 5, 73, 74, 75, 76, 77, 149, 150, 151, 200, 224, 225, 226, 400]
    captions = [_dogs(k) for k in counts] + ["a photo of a cat, red !", "!!"]
    ids = _ids(tokenizer, captions, length)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    chunks = split_chunks(ids, eos, pad)
    expected = torch.stack([kohya_chunks(row, eos, pad) for row in ids])
    assert torch.equal(chunks, expected)


@pytest.mark.parametrize("length", [76, 100, 151, 153])
def test_length_not_n_times_75_plus_2_is_an_error(length):
    with pytest.raises(ValueError, match=str(length)):
        split_chunks(torch.zeros(1, length, dtype=torch.long), EOS, 0)


# --- join_chunk_states ------------------------------------------------------------------------------------------------


def _tagged_states(batch: int, n: int, dim: int = 2) -> torch.Tensor:
    """[B·n, 77, D] states whose value is 1000·b + 100·chunk + position (the same in every feature)."""
    b = torch.arange(batch).repeat_interleave(n).view(-1, 1, 1)
    c = torch.arange(n).repeat(batch).view(-1, 1, 1)
    p = torch.arange(77).view(1, -1, 1)
    return (1000 * b + 100 * c + p).float().expand(batch * n, 77, dim).contiguous()


def test_join_single_chunk_is_the_identity():
    states = torch.randn(3, 77, 8)
    assert torch.equal(join_chunk_states(states, 1), states)


@pytest.mark.parametrize(("n", "length"), [(2, 152), (3, 227)])
def test_join_lengths_and_order(n, length):
    out = join_chunk_states(_tagged_states(2, n), n)
    assert out.shape == (2, length, 2)
    assert length == 77 + CHUNK * (n - 1)
    for b in range(2):
        expected = [1000 * b]  # BOS state of chunk 0
        for c in range(n):
            expected += [1000 * b + 100 * c + p for p in range(1, 76)]  # the 75 inner states of every chunk
        expected.append(1000 * b + 100 * (n - 1) + 76)  # final state of the last chunk
        assert out[b, :, 0].tolist() == expected
        assert torch.equal(out[b, :, 0], out[b, :, 1])


def test_join_keeps_dtype_and_gradient():
    states = torch.randn(4, 77, 3, dtype=torch.float64, requires_grad=True)
    out = join_chunk_states(states, 2)
    assert out.shape == (2, 152, 3) and out.dtype == torch.float64
    out.sum().backward()
    # every state used once except chunk 0's last and the last chunk's first (BOS) position
    grad = states.grad.view(2, 2, 77, 3)
    assert bool((grad[:, 0, :76] == 1).all()) and bool((grad[:, 0, 76] == 0).all())
    assert bool((grad[:, 1, 1:] == 1).all()) and bool((grad[:, 1, 0] == 0).all())


@pytest.mark.parametrize("length", [77, 152, 227])
def test_split_then_join_round_trip_with_pad_eos(tok_eos, length):
    """With an encoder that returns its input ids, joining the chunks gives back the original ids (SD1.x)."""
    ids = _ids(tok_eos, [_dogs(3), _dogs(75), _dogs(140), _dogs(500)], length)
    chunks = split_chunks(ids, EOS, EOS)
    n = chunks.shape[1]
    joined = join_chunk_states(chunks.flatten(0, 1).unsqueeze(-1), n).squeeze(-1)  # [B, length]
    assert torch.equal(joined, ids)


def test_split_then_join_with_pad_0_differs_only_where_kohya_fixes_up(tok_pad0):
    ids = _ids(tok_pad0, [_dogs(3), _dogs(75), _dogs(140)], 152)
    joined = join_chunk_states(split_chunks(ids, EOS, 0).flatten(0, 1).unsqueeze(-1), 2).squeeze(-1)
    assert joined.shape == ids.shape
    diff = (joined != ids).nonzero().tolist()
    # caption of 3 tokens: chunk 1 started with padding, its first inner id (position 76) became EOS
    assert diff == [[0, 76]]
    assert joined[0, 76].item() == EOS
