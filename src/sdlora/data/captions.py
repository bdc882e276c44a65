"""Caption files (kohya-semantics §6.2): ``<image stem><caption_extension>``, first line, UTF-8.

A missing caption file means the subset's class tokens are the caption (kohya); a caption file replaces them. The
default extension is kohya's ``.caption``; most datasets use ``.txt`` (``data.caption_extension=.txt``).
"""

from __future__ import annotations

from pathlib import Path

from sdlora.errors import SdloraError


def normalise_extension(extension: str) -> str:
    """``"txt"`` → ``".txt"`` (kohya appends the extension verbatim; a missing dot is almost always a slip)."""
    extension = extension.strip()
    return extension if extension.startswith(".") else "." + extension


def caption_path(image: Path, extension: str) -> Path:
    return image.with_name(image.stem + normalise_extension(extension))


def read_caption(image: Path, extension: str) -> str | None:
    """The caption of ``image`` (first line, stripped), or None when it has no caption file."""
    path = caption_path(image, extension)
    if not path.is_file():
        return None
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SdloraError(
            f"caption file {path} is not valid UTF-8 ({exc.reason} at byte {exc.start}): re-save it as UTF-8"
        ) from None
    lines = text.splitlines()
    return lines[0].strip() if lines else ""
