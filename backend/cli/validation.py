"""Checks of command-line input that run before any work starts.

* argparse ``type=`` functions for numbers (:func:`positive_int`, :func:`fraction`, …): a value out
  of range is refused with the allowed range, never reinterpreted (``--stride 0`` is not "the
  default");
* path roles (:func:`output_file`, :func:`output_dir`, :func:`input_file`, :func:`input_path`,
  :data:`cache_file`): the type checks the name (an output's suffix), and :func:`check_paths`
  checks every path of the command that was chosen against the file system (an output's folder can
  be created and written, an input exists) before the handler runs;
* :class:`Parser`: argparse's errors as one line with a pointer to ``--help``.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from backend.errors import SoftMapError

ROLE = "softmap_path_role"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose mistakes are one line: ``softmap embed: error: … (--help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """A whole number ``>= low``."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < low:
            raise argparse.ArgumentTypeError(
                f"must be a whole number, at least {low} (got {value})"
            )
        return value

    parse.__name__ = f"int ≥ {low}"
    return parse


def float_in(
    low: float | None, high: float | None, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (either end open or absent)."""

    def parse(text: str) -> float:
        value = float(_number(text, float))
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            raise argparse.ArgumentTypeError(f"must be {_range_text()} (got {value:g})")
        return value

    def _range_text() -> str:
        if low is not None and high is not None:
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            return f"in {left}{low:g}, {high:g}{right}"
        if low is not None:
            return f"{'>' if low_open else '≥'} {low:g}"
        if high is not None:
            return f"{'<' if high_open else '≤'} {high:g}"
        return "a finite number"

    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
#: A share in [0, 1] (nodata, cloud, labelled share, masking ratio…).
fraction = float_in(0.0, 1.0)
positive_float = float_in(0.0, None, low_open=True)
finite_float = float_in(None, None)
#: A percentage in [0, 100] (STAC ``eo:cloud_cover``).
percent = float_in(0.0, 100.0)
#: A random seed NumPy and PyTorch both take.
seed = int_at_least(0)
#: Files of tiles with values (GeoJSON or GeoParquet).
TILE_SUFFIXES = (".geojson", ".json", ".parquet", ".geoparquet")


def _with_role(role: str, parse: Callable[[str], Path]) -> Callable[[str], Path]:
    setattr(parse, ROLE, role)
    return parse


def output_file(*suffixes: str) -> Callable[[str], Path]:
    """A file to write, with one of ``suffixes`` (any when none is given)."""
    allowed = tuple(s.lower() for s in suffixes)

    def parse(text: str) -> Path:
        path = Path(text).expanduser()
        if allowed and path.suffix.lower() not in allowed:
            found = f"'{path.suffix}'" if path.suffix else "no extension"
            raise argparse.ArgumentTypeError(
                f"{text!r} has {found}; write one of: {', '.join(allowed)}"
            )
        return path

    parse.__name__ = "output file"
    return _with_role("output_file", parse)


def _path_of_role(role: str) -> Callable[[str], Path]:
    def parse(text: str) -> Path:
        if not text:
            raise argparse.ArgumentTypeError("an empty path")
        return Path(text).expanduser()

    parse.__name__ = role.replace("_", " ")
    return _with_role(role, parse)


#: A folder to write into (created when absent).
output_dir = _path_of_role("output_dir")
#: An existing file to read.
input_file = _path_of_role("input_file")
#: An existing file or folder to read.
input_path = _path_of_role("input_path")
#: The DuckDB cache (``--db``); its folder must be writable.
cache_file = _path_of_role("cache")


def path_error(message: str) -> SoftMapError:
    return SoftMapError(message, title="Unusable path")


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check every path option of the chosen command against the file system.

    ``--db`` is checked also when absent (the ``SOFTMAP_DB_PATH`` default). Nothing is left
    behind: the probes create and remove a temporary file or folder.

    Raises:
        SoftMapError: naming the option, the path and what is wrong with it.
    """
    for action in _chosen_actions(parser, args):
        role = getattr(action.type, ROLE, None)
        if role is None:
            continue
        value = getattr(args, action.dest, None)
        option = action.option_strings[-1] if action.option_strings else action.dest.upper()
        if role == "cache":
            if value is None:
                from backend.settings import get_settings

                value = get_settings().db_path
            check_cache_path(Path(value), option)
        elif value is None:
            continue
        elif role == "output_file":
            check_output_file(Path(value), option)
        elif role == "output_dir":
            check_output_dir(Path(value), option)
        else:
            check_input(Path(value), option, folder_ok=role == "input_path")


def check_cache_path(path: Path, option: str = "--db") -> None:
    """The cache file exists as a file, or its folder can be created and written."""
    if path.is_dir():
        raise path_error(
            f"{option} {path} is a folder: give a file, e.g. {path / 'softmap.duckdb'}."
        )
    if path.exists():
        _require_writable(path, option, "the cache")
        return
    _probe_folder(path.parent, option, path, "the cache")


def check_output_file(path: Path, option: str) -> None:
    """An output file: not a folder, and its folder can be created and written."""
    if path.is_dir():
        raise path_error(f"{option} {path} is a folder: give a file name.")
    if path.exists():
        _require_writable(path, option, "the output")
    _probe_folder(path.parent, option, path, "the output")


def check_output_dir(path: Path, option: str) -> None:
    """An output folder: not a file, and it can be created and written."""
    if path.exists() and not path.is_dir():
        raise path_error(f"{option} {path} is a file: give a folder.")
    _probe_folder(path, option, path, "the outputs")


def check_input(path: Path, option: str, *, folder_ok: bool = False) -> None:
    """An input: it exists, is a file (or a folder where allowed) and can be read."""
    if not path.exists():
        raise path_error(f"{option} {path} does not exist.")
    if path.is_dir() and not folder_ok:
        raise path_error(f"{option} {path} is a folder: give a file.")
    if not os.access(path, os.R_OK):
        raise path_error(f"{option} {path} cannot be read (permission denied).")


def _require_writable(path: Path, option: str, what: str) -> None:
    if not os.access(path, os.W_OK):
        raise path_error(f"{option} {path}: {what} exists but cannot be written (permission).")


def _probe_folder(folder: Path, option: str, target: Path, what: str) -> None:
    """Prove that ``folder`` exists or can be created, and that files can be written in it."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise path_error(
            f"{option} {target}: {existing} is a file, so the folder for {what} cannot be created."
        )
    try:
        if existing == folder:
            fd, probe = tempfile.mkstemp(prefix=".softmap-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".softmap-probe-", dir=existing))
    except OSError as e:
        reason = e.strerror or type(e).__name__
        verb = "written" if existing == folder else "created"
        where = folder if existing == folder else f"{folder} (under {existing})"
        raise path_error(
            f"{option} {target}: the folder {where} cannot be {verb} ({reason}). "
            "Choose a writable location."
        ) from None


def _chosen_actions(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> Iterator[argparse.Action]:
    """The actions of the parser and of every subcommand chosen on this command line."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None) if action.dest != argparse.SUPPRESS else None
            sub = action.choices.get(chosen) if chosen is not None else None
            if isinstance(sub, argparse.ArgumentParser):
                yield from _chosen_actions(sub, args)
        else:
            yield action


def report_os_error(e: OSError) -> str:
    """One line for a file-system fault met while working (disk full, permissions, …)."""
    name = f" {e.filename}" if e.filename else ""
    return f"File system error:{name}: {e.strerror or e}"


__all__ = [
    "TILE_SUFFIXES",
    "Parser",
    "cache_file",
    "check_paths",
    "finite_float",
    "float_in",
    "fraction",
    "input_file",
    "input_path",
    "int_at_least",
    "non_negative_int",
    "output_dir",
    "output_file",
    "percent",
    "positive_float",
    "positive_int",
    "seed",
]
