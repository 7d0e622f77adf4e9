"""argparse types for the command line's numbers: a bad value is argparse's one-line
error naming the option, never a traceback from deep inside a command."""

from __future__ import annotations

import argparse
import math
from typing import Callable

__all__ = ["at_least", "positive_float"]


def at_least(low: float, kind: type = int) -> Callable[[str], float]:
    """A number of type ``kind`` (int or float), finite and at least ``low``."""
    name = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value

    return parse


def positive_float(text: str) -> float:
    """A finite number above zero."""
    value = at_least(-math.inf, float)(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value
