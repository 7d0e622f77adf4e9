"""Progress reports that suit where they go: a live bar on a terminal, sparse lines in a log.

On a terminal :func:`progress` returns a tqdm bar. Anywhere else (a log file, a pipe,
CI) a bar redrawn thousands of times floods the file, so it writes one plain line every
``every`` updates - naming the job, with the count against the real total when there is
one - and a last line when it closes.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def progress(total: int | None, desc: str, unit: str = "it", enabled: bool = True, every: int = 100,
             initial: int = 0, stream: TextIO | None = None):
    """A tqdm bar on a terminal, else a :class:`LineProgress`; ``enabled=False`` silences both."""
    stream = stream or sys.stderr
    if enabled and stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    return LineProgress(total, desc, unit, enabled, every, initial, stream)


class LineProgress:
    """The subset of tqdm's interface the project uses, as one line every ``every`` updates."""

    def __init__(self, total: int | None, desc: str, unit: str, enabled: bool, every: int, initial: int,
                 stream: TextIO):
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.total, self.desc, self.unit, self.enabled, self.every = total, desc, unit, enabled, every
        self.n, self.stream, self.postfix = initial, stream, ""
        self._start_n, self._started, self._last = initial, time.perf_counter(), initial

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._started
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        postfix = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {count} {self.unit} ({elapsed:.0f} s, {rate:.2f} {self.unit}/s{postfix})"

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.enabled and self.n - self._last >= self.every:
            self._last = self.n
            self.write(self._line())

    def set_postfix(self, values: dict[str, Any] | None = None, **kwargs: Any) -> None:
        values = {**(values or {}), **kwargs}
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def write(self, message: str) -> None:
        """Print a message (always, like ``tqdm.write``: silencing covers the count lines)."""
        print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled and self.n != self._last:
            self._last = self.n
            self.write(self._line())

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
