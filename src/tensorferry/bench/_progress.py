"""A progress bar for long runs (tqdm, optional), or a plain line per step without it."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, Self

__all__ = ["Progress"]

_INSTALL_HINT = "pip install 'tensorferry[bench]'"


class Progress:
    """Shows how many of ``total`` cases are done.

    With tqdm installed and standard error a terminal, a bar; otherwise a line on
    standard error at most every few seconds, so logs of long runs show life.
    ``enabled=False`` shows nothing.
    """

    _LINE_INTERVAL_S = 5.0

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self._total = total
        self._done = 0
        self._enabled = enabled
        self._bar: Any = None
        self._last_line = 0.0
        if not enabled or not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:
            print(
                f"note: tqdm is not installed, so no progress bar ({_INSTALL_HINT})",
                file=sys.stderr,
            )
            return
        self._bar = tqdm(total=total, unit="case", leave=False, dynamic_ncols=True)

    def show(self, label: str) -> None:
        """Name the case being measured now."""
        if self._bar is not None:
            self._bar.set_description_str(label, refresh=False)
            return
        now = time.monotonic()
        if self._enabled and now - self._last_line >= self._LINE_INTERVAL_S:
            self._last_line = now
            print(f"[{self._done}/{self._total}] {label}", file=sys.stderr, flush=True)

    def advance(self, cases: int = 1) -> None:
        """Count ``cases`` more cases as done."""
        self._done += cases
        if self._bar is not None:
            self._bar.update(cases)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
