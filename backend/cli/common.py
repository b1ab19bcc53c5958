"""What every ``softmap`` command shares: output helpers and the common options.

Commands are modules in ``backend.cli.commands``; each defines ``ORDER`` (its place in
``softmap --help``) and ``register(subparsers)``, which adds its parser(s) and sets
``handler=<function(args) -> int>`` as a default. Heavy imports stay inside the handlers so
``softmap --help`` and mistakes in options answer at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from backend.cli.validation import cache_file, input_file, non_negative_int, positive_int
from backend.errors import SoftMapError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from backend.service import EngineOptions, RegionSpec, Workspace


def add_db_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=cache_file, help="DuckDB cache file (default: SOFTMAP_DB_PATH)")


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_region_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--source`` plus one of ``--bbox``/``--aoi`` (the region), as in ``softmap embed``."""
    p.add_argument("--source", required=required, help="source id, e.g. demo/virginia")
    where = p.add_mutually_exclusive_group(required=required)
    where.add_argument("--bbox", help="W,S,E,N in lon/lat degrees")
    where.add_argument(
        "--aoi", type=input_file, help="GeoJSON file (Polygon/MultiPolygon/Feature…)"
    )


def add_model_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="model id (see `softmap models`)")
    p.add_argument("--checkpoint", type=input_file, help="weights file (overrides the lookup)")


def add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="auto, cuda, cuda:N, mps or cpu (default: SOFTMAP_DEVICE)")
    p.add_argument(
        "--batch-size", type=positive_int, help="tiles per batch (default: SOFTMAP_BATCH_SIZE)"
    )
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto = bf16 autocast on CUDA, fp32 elsewhere")  # fmt: skip
    p.add_argument(
        "--readers", type=non_negative_int, help="reader threads (0 = read in line; default: auto)"
    )
    p.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="embed on a Ray cluster: ADDRESS (host:port, ray://host:10001, auto) or none for "
        "RAY_ADDRESS, else a cluster started here (needs pip install 'softmap[ray]')",
    )  # fmt: skip
    p.add_argument(
        "--ray-actors", type=positive_int, help="model replicas on the cluster (default: 1/GPU)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """``--checkpoint`` and the options of ``add_engine_options`` as the service's type."""
    from backend.service import EngineOptions

    if getattr(args, "batch_size", None) is not None and args.batch_size < 1:
        raise invalid("--batch-size must be at least 1.")
    return request(
        EngineOptions,
        checkpoint=getattr(args, "checkpoint", None),
        device=getattr(args, "device", None),
        batch_size=getattr(args, "batch_size", None),
        precision=getattr(args, "precision", "auto"),
        readers=getattr(args, "readers", None),
        ray_address=getattr(args, "ray", None),
        ray_actors=getattr(args, "ray_actors", None),
    )


def db_path(args: argparse.Namespace) -> Path:
    from backend.service import Workspace

    return Path(args.db) if getattr(args, "db", None) else Workspace().db_path


def workspace(args: argparse.Namespace | None = None) -> Workspace:
    """The workspace of one command: the settings and the ``--db`` cache file."""
    from backend.service import Workspace

    return Workspace(db_path=db_path(args) if args is not None else None)


def region_of(args: argparse.Namespace) -> RegionSpec | None:
    """The region named by ``--bbox``/``--aoi`` (None when neither is given)."""
    from backend.service import region_spec

    return region_spec(bbox=getattr(args, "bbox", None), path=getattr(args, "aoi", None))


def required_region(args: argparse.Namespace) -> RegionSpec:
    """The region of a command that needs one."""
    spec = region_of(args)
    if spec is None:
        raise invalid("Give a region: --bbox W,S,E,N or --aoi FILE.")
    return spec


R = TypeVar("R", bound="BaseModel")


def request(cls: type[R], **fields: Any) -> R:
    """Build a service request; a value out of range is one line naming its option."""
    from pydantic import ValidationError

    try:
        return cls(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        names = [str(x) for x in first["loc"] if isinstance(x, str)]
        option = "--" + names[-1].replace("_", "-") if names else "options"
        raise invalid(f"{option}: {first['msg']}.") from None


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())


def invalid(message: str) -> SoftMapError:
    """A user mistake in the options (exit 2, one line)."""
    return SoftMapError(message, title="Invalid option")


class ProgressBar:
    """A tqdm bar on stderr fed by the engine's progress callback.

    Created on the first update, so a run refused up front prints only its error line.
    """

    def __init__(self, *, disable: bool) -> None:
        self._disable = disable
        self._bar: Any = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, p: Any) -> None:
        if self._disable:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=p.total, unit="tile", file=sys.stderr, leave=False)
        self._bar.n = p.done
        if getattr(p, "workers", None) is not None:  # a cluster run: how much of the pool works
            self._bar.set_postfix_str(f"{p.workers_busy}/{p.workers} workers busy", refresh=False)
        self._bar.refresh()
