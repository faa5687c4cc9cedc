"""The built-in ``/favicon.ico`` (the original served one on every app).

It answers only when nothing else does: a route or a static resource for
``/favicon.ico`` wins.  The icon is a 16x16 32-bit ICO drawn here, so the package
carries no binary data file.
"""

from __future__ import annotations

import struct

__all__ = ["FAVICON", "FAVICON_HEADERS", "FAVICON_PATH", "FAVICON_TYPE"]

FAVICON_PATH = "/favicon.ico"
FAVICON_TYPE = "image/x-icon"
#: Browsers ask for it on every page: let them keep it for a day.
FAVICON_HEADERS = (("Cache-Control", "public, max-age=86400"),)

_SIZE = 16
_BLUE = (0xC0, 0x6A, 0x1E, 0xFF)  # B, G, R, A
_WHITE = (0xFF, 0xFF, 0xFF, 0xFF)
_CLEAR = (0, 0, 0, 0)
# A white "S" on a blue rounded square, top row first.
_GLYPH = (
    "................",
    "..############..",
    ".##############.",
    ".#####....#####.",
    ".####.####.####.",
    ".####.#########.",
    ".#####.########.",
    ".######..######.",
    ".########.#####.",
    ".#########.####.",
    ".####.####.####.",
    ".#####....#####.",
    ".##############.",
    ".##############.",
    "..############..",
    "................",
)


def _pixel(row: int, col: int) -> tuple[int, int, int, int]:
    mark = _GLYPH[row][col]
    if mark == "#":
        return _BLUE
    # Inside the square a "." is a stroke of the letter; around it, transparent.
    inside = 0 < row < _SIZE - 1 and 0 < col < _SIZE - 1
    corner = row in (1, _SIZE - 2) and col in (1, _SIZE - 2)
    return _WHITE if inside and not corner else _CLEAR


def _icon() -> bytes:
    pixels = bytearray()
    for row in reversed(range(_SIZE)):  # BMP rows go bottom-up
        for col in range(_SIZE):
            pixels += bytes(_pixel(row, col))
    mask = bytes(4 * _SIZE)  # AND mask, rows padded to 32 bits: alpha decides
    bitmap = (
        struct.pack("<IiiHHIIiiII", 40, _SIZE, 2 * _SIZE, 1, 32, 0, 0, 0, 0, 0, 0)
        + bytes(pixels)
        + mask
    )
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", _SIZE, _SIZE, 0, 0, 1, 32, len(bitmap), 6 + 16)
    return header + entry + bitmap


#: The icon's bytes.
FAVICON = _icon()
