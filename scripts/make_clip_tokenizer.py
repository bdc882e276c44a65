"""Build the CLIP tokenizer files that sdlora ships, from OpenAI's BPE file, offline.

OpenAI's CLIP BPE table ``bpe_simple_vocab_16e6.txt.gz`` ships inside the ``open-clip-torch`` wheel (MIT).
By default this script fetches that wheel with ``pip download --no-deps`` (package registries are reachable;
the model hub is not) and reads the file out of it; ``--bpe PATH`` uses a local copy instead. The file's
sha256 is checked, then it is converted to Hugging Face's ``vocab.json`` + ``merges.txt`` and written to
``src/sdlora/models/assets/tokenizer/`` (or ``--out``).

Usage::

    python scripts/make_clip_tokenizer.py [--bpe bpe_simple_vocab_16e6.txt.gz] [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
WHEEL_MEMBER = f"open_clip/{BPE_NAME}"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "sdlora" / "models" / "assets" / "tokenizer"

VOCAB_SIZE = 49408  # 2 * 256 byte symbols + 48,894 merges + 2 special tokens
NUM_MERGES = 49152 - 256 - 2  # 48,894


def byte_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the other 68 bytes (controls, space, soft hyphen...) map to
    code points 256, 257, ... in byte order. The dict is ordered as CLIP orders its base vocabulary:
    the 188 printable bytes first, then the remapped ones.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def convert(bpe_text: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Turn the text of ``bpe_simple_vocab_16e6.txt`` into (vocab, merges) exactly as OpenAI's SimpleTokenizer does.

    The file has a version header line followed by ~262k merge rules, one ``"a b"`` pair per line. CLIP keeps only
    the first ``49152 - 256 - 2 = 48,894`` rules: its vocabulary is 49,408 = 256 byte symbols + 256 end-of-word
    variants (``"x</w>"``) + 48,894 merged tokens + 2 special tokens, and ``49152 - 256 - 2`` is the slice bound
    OpenAI's code uses (lines ``1 .. 48894`` inclusive, i.e. ``lines[1 : 48894 + 1]`` skipping the header).

    Ids follow SimpleTokenizer's order: byte symbols (0-255), the same with ``</w>`` (256-511), one token per merge
    in rule order (512-49405), then ``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407.
    """
    lines = bpe_text.split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"unexpected BPE file layout: need {NUM_MERGES} two-token merge lines after the header")
    base = list(byte_to_unicode().values())
    tokens = [*base, *(t + "</w>" for t in base), *("".join(m) for m in merges), "<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"expected {VOCAB_SIZE} distinct tokens, got {len(vocab)}")
    return vocab, merges  # type: ignore[return-value]


def fetch_bpe_from_wheel(workdir: Path) -> bytes:
    """Download the open-clip-torch wheel (no dependencies) with pip and return the BPE file's bytes."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "open-clip-torch", "-d"]
    subprocess.run([*cmd, str(workdir)], check=True)
    wheels = sorted(workdir.glob("open_clip_torch-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download produced no open_clip_torch wheel in {workdir}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        return zf.read(WHEEL_MEMBER)


def check_sha256(data: bytes, source: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != BPE_SHA256:
        raise SystemExit(f"error: {source}: sha256 {digest} does not match the expected {BPE_SHA256}")


def write_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    body = "".join(f"{a} {b}\n" for a, b in merges)
    (out / "merges.txt").write_text("#version: 0.2\n" + body, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bpe", type=Path, help=f"local {BPE_NAME} (default: fetch the open-clip-torch wheel)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.bpe is not None:
        data, source = args.bpe.read_bytes(), str(args.bpe)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data, source = fetch_bpe_from_wheel(Path(tmp)), f"open-clip-torch wheel:{WHEEL_MEMBER}"
    check_sha256(data, source)
    vocab, merges = convert(gzip.decompress(data).decode("utf-8"))
    write_tokenizer(vocab, merges, args.out)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
