"""Argument types shared by the subcommands (argparse `type=` callables)."""
from __future__ import annotations

import argparse
import json


def json_object(text: str) -> dict:
    """A JSON object given on the command line, such as --planner-options '{"iterations": 4}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value
