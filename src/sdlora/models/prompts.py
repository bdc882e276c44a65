"""Long-prompt handling [kohya: --max_token_length 75/150/225] as pure functions on token ids and hidden states.

CLIP sees 77 tokens (BOS, 75 tokens, EOS). A caption tokenised to ``n·75 + 2`` ids is cut into n chunks, each
re-wrapped as ``[BOS, 75 ids, last]``, encoded separately, and the hidden states are joined back as
``[BOS state of chunk 0, the 75 inner states of every chunk, final state of the last chunk]``, i.e. 77 + 75·(n−1)
vectors (152 for 150 tokens, 227 for 225). With n = 1 both steps are the identity.

Tokenisers that pad with a token other than EOS (SD2, SDXL's second tokenizer pad with "!") need two fix-ups per
chunk, as kohya does: a chunk whose second-last id is a real token ends with EOS, and a chunk that starts with padding
(the caption ended in an earlier chunk) starts ``[BOS, EOS, …]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CHUNK = 75  # tokens between BOS and EOS in one CLIP window


def split_chunks(input_ids: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """[B, n·75 + 2] padded ids → [B, n, 77] chunks, each ``[BOS, 75 ids, last id]`` with kohya's pad fix-ups."""
    import torch

    length = input_ids.shape[1]
    n = (length - 2) // CHUNK
    if n * CHUNK + 2 != length:
        raise ValueError(f"token length {length} is not n*75+2")
    chunks = []
    for i in range(n):
        inner = input_ids[:, 1 + i * CHUNK : 1 + (i + 1) * CHUNK]  # [B, 75]
        chunk = torch.cat([input_ids[:, :1], inner, input_ids[:, -1:]], dim=1).clone()  # [B, 77]
        if pad_id != eos_id:
            real_end = (chunk[:, -2] != eos_id) & (chunk[:, -2] != pad_id)
            chunk[real_end, -1] = eos_id
            starts_with_pad = chunk[:, 1] == pad_id
            chunk[starts_with_pad, 1] = eos_id
        chunks.append(chunk)
    return torch.stack(chunks, dim=1)  # [B, n, 77]


def join_chunk_states(states: torch.Tensor, num_chunks: int) -> torch.Tensor:
    """[B·n, 77, D] per-chunk states → [B, 77 + 75·(n−1), D]: first BOS, every chunk's 75 inner states, last EOS."""
    if num_chunks == 1:
        return states
    import torch

    bn, window, dim = states.shape
    states = states.reshape(bn // num_chunks, num_chunks, window, dim)  # [B, n, 77, D]
    inner = states[:, :, 1:-1].reshape(bn // num_chunks, num_chunks * (window - 2), dim)  # [B, 75n, D]
    return torch.cat([states[:, 0, :1], inner, states[:, -1, -1:]], dim=1)
