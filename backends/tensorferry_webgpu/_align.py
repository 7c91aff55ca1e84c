"""WebGPU's alignment rules as arithmetic: copies and clears move whole 4-byte
words, and a map range starts at a multiple of 8."""

from __future__ import annotations

__all__ = ["down4", "down8", "up4", "up_to"]


def up4(value: int) -> int:
    """``value`` rounded up to a whole 4-byte word."""
    return (value + 3) & ~3


def down4(value: int) -> int:
    """``value`` rounded down to a whole 4-byte word."""
    return value & ~3


def down8(value: int) -> int:
    """``value`` rounded down to a multiple of 8 (where a map range may start)."""
    return value & ~7


def up_to(value: int, alignment: int) -> int:
    """``value`` rounded up to a multiple of ``alignment`` (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)
