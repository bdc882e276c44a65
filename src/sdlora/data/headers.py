"""Image sizes from file headers, and whether a file is complete, without decoding pixels (docs/design.md §3).

The data plan needs every image's (W, H) and must drop files that cannot be trained on. Decoding 100k images to learn
their sizes costs minutes; their headers hold the size in the first bytes:

- PNG: the IHDR chunk holds width and height (big-endian u32, bytes 16–24); a complete file ends with the IEND
  chunk (its last 12 bytes).
- JPEG: the first SOFn segment (C0–C3, C5–C7, C9–CB, CD–CF) holds height and width (u16) after its length and
  precision; a complete file ends with the EOI marker FF D9.
- WebP: ``VP8 `` has 14-bit sizes at bytes 26–30, ``VP8L`` packs 14-bit w−1, h−1 from byte 21, ``VP8X`` has 24-bit
  w−1, h−1 at 24–30; a complete file is at least RIFF size + 8 bytes long.
- BMP: the DIB header at byte 14 holds width and height (i32; u16 in the 12-byte core header; |height| for
  top-down files); a complete file is as long as its bfSize field says.

The format is recognised by its magic bytes, not the file extension. :func:`read_header` returns None whenever the
fast path cannot vouch for a file — unknown or odd format, a header it cannot parse, a missing end marker (a truncated
download; but also valid JPEGs with bytes after EOI), an image too large for PIL's decompression-bomb limit — and the
caller then decodes the file fully (the slow path, as before), which decides: usable or skipped with PIL's reason.
Damage *inside* a complete-looking file is found when the image is decoded for training.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

HEAD_BYTES = 4096  # the first read; a JPEG's SOF after a larger EXIF block is reached by further reads
MAX_JPEG_SEGMENTS = 256
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
JPEG_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI


@dataclass(frozen=True)
class Header:
    """What the header of a complete image file says."""

    size: tuple[int, int]  # (W, H)
    format: str  # "PNG", "JPEG", "WEBP", "BMP"
    file_bytes: int  # the file's length (duplicate candidates share it)
    head_crc: int = 0  # CRC-32 of the first HEAD_BYTES bytes (identical files share it too)


def read_header(path: str | os.PathLike, max_pixels: int | None = None) -> Header | None:
    """The header of a complete PNG/JPEG/WebP/BMP file, or None when only decoding can tell (module docstring).

    ``max_pixels``: larger images return None (PIL refuses them as decompression bombs when decoding)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        length = os.fstat(fd).st_size
        head = os.pread(fd, HEAD_BYTES, 0)
        parsed = _parse(fd, head, length)
    except (OSError, struct.error, ValueError, IndexError):
        parsed = None
    finally:
        os.close(fd)
    if parsed is None:
        return None
    (w, h), fmt = parsed
    if w < 1 or h < 1 or (max_pixels is not None and w * h > max_pixels):
        return None
    return Header((w, h), fmt, length, zlib.crc32(head))


def _parse(fd: int, head: bytes, length: int) -> tuple[tuple[int, int], str] | None:
    if head.startswith(PNG_SIGNATURE):
        return _png(fd, head, length)
    if head.startswith(b"\xff\xd8"):
        return _jpeg(fd, head, length)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head, length)
    if head[:2] == b"BM":
        return _bmp(head, length)
    return None


def _png(fd: int, head: bytes, length: int) -> tuple[tuple[int, int], str] | None:
    if head[12:16] != b"IHDR" or length < 57 or os.pread(fd, 12, length - 12) != PNG_IEND:
        return None
    w, h = struct.unpack(">II", head[16:24])
    return (w, h), "PNG"


def _jpeg(fd: int, head: bytes, length: int) -> tuple[tuple[int, int], str] | None:
    if os.pread(fd, 2, length - 2) != b"\xff\xd9":
        return None
    pos, data, start = 2, head, 0  # ``data`` holds the file's bytes from offset ``start``
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos + 9 > start + len(data):
            data, start = os.pread(fd, HEAD_BYTES, pos), pos
            if len(data) < 9:
                return None
        i = pos - start
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in JPEG_NO_LENGTH:
            pos += 2
            continue
        if marker in JPEG_SOF:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return (w, h), "JPEG"
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        (segment,) = struct.unpack(">H", data[i + 2 : i + 4])
        pos += 2 + segment
    return None


def _webp(head: bytes, length: int) -> tuple[tuple[int, int], str] | None:
    (riff,) = struct.unpack("<I", head[4:8])
    if riff + 8 > length:
        return None
    chunk = head[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return (w & 0x3FFF, h & 0x3FFF), "WEBP"
    if chunk == b"VP8L" and head[20] == 0x2F:
        (bits,) = struct.unpack("<I", head[21:25])
        return ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1), "WEBP"
    if chunk == b"VP8X":
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return (w, h), "WEBP"
    return None


def _bmp(head: bytes, length: int) -> tuple[tuple[int, int], str] | None:
    (declared,) = struct.unpack("<I", head[2:6])
    (dib,) = struct.unpack("<I", head[14:18])
    if declared != length:
        return None
    if dib == 12:
        w, h = struct.unpack("<HH", head[18:22])
    elif dib >= 40:
        w, h = struct.unpack("<ii", head[18:26])
    else:
        return None
    return (w, abs(h)), "BMP"
