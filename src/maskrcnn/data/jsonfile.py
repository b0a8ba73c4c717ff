"""Reading a data set's JSON file with errors that name the file and say what is wrong; checking its numbers."""
from __future__ import annotations

import json
import math
import os

from ..errors import DataError


def read_json_file(path: str, kind: str):
    """The parsed JSON of `path`; `kind` names the file in messages ("annotation file", "VIA file")."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: {kind} not found")
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from error
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from error


def is_number(value) -> bool:
    """A finite int or float read from JSON; true and false are not numbers (bool is an int in Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
