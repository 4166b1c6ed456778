"""Option types shared by the commands: argparse turns their ``ArgumentTypeError`` into exit code 2."""

from __future__ import annotations

import argparse
import math

__all__ = ["logarithm_base", "non_negative_int", "positive_float", "positive_int", "unit_fraction"]


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _number(text: str) -> float:
    """``float(text)``, or NaN when it is not a number (NaN then fails every range check)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def positive_int(text: str) -> int:
    value = _integer(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer; got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text!r}")
    return value


def logarithm_base(text: str) -> float:
    """A logarithm's base: a positive number other than 1, or ``e``."""
    if text.strip().lower() == "e":
        return math.e
    value = _number(text)
    if not (value > 0 and value != 1 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number other than 1, or 'e'; got {text!r}")
    return value


def unit_fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = _number(text)
    if not (0 <= value < 1):
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1); got {text!r}")
    return value
