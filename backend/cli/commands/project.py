"""``softmap project``: a 2-D UMAP (or PCA) projection of a scope's embeddings, cached.

Also holds the scope options (``--model`` plus an optional ``--source`` and ``--bbox``/``--aoi``)
that ``label``, ``classify``, ``suggest`` and ``export`` share.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from backend.cli.common import (
    add_db_option,
    add_json_option,
    add_region_options,
    invalid,
    print_json,
    region_of,
    request,
    workspace,
)
from backend.cli.validation import (
    TILE_SUFFIXES,
    fraction,
    int_at_least,
    non_negative_int,
    output_file,
    positive_int,
    seed,
)

if TYPE_CHECKING:
    from backend.service import ScopeRequest

ORDER = 30


def add_scope_options(p: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    """``--model`` and the scope: a region (``--bbox``/``--aoi``), a ``--source``, or all cached."""
    p.add_argument("--model", required=model_required, help="model id whose embeddings to use")
    add_region_options(p, required=False)
    p.epilog = (
        "Scope: the tiles inside --bbox/--aoi (of --source when given), else every tile of "
        "--source, else everything cached for the model."
    )


def scope_request(args: argparse.Namespace) -> ScopeRequest:
    """The scope the options name: ``--model`` with ``--source`` and ``--bbox``/``--aoi``."""
    from backend.service import ScopeRequest

    return request(ScopeRequest, model=args.model, source=args.source, region=region_of(args))


def register(sub: Any) -> None:
    p = sub.add_parser("project", help="2-D UMAP/PCA projection of cached embeddings (cached)")
    add_scope_options(p)
    p.add_argument("--method", choices=["umap", "pca"], default="umap", help="default umap")
    p.add_argument(
        "--pca-dims", type=non_negative_int, default=50, help="PCA before UMAP (0 = none; 50)"
    )
    p.add_argument("--neighbors", type=int_at_least(2), default=15, help="UMAP n_neighbors (15)")
    p.add_argument("--min-dist", type=fraction, default=0.1, help="UMAP min_dist (0.1)")
    p.add_argument("--epochs", type=positive_int, help="UMAP n_epochs (default: UMAP's)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (0)")
    p.add_argument("--refit", action="store_true", help="fit again even if cached")
    p.add_argument(
        "--out", type=output_file(*TILE_SUFFIXES), help="write tile, x, y as .geojson or .parquet"
    )
    p.add_argument("--points", action="store_true", help="include the points in --json output")
    add_db_option(p)
    add_json_option(p)
    p.set_defaults(handler=_project)


def _project(args: argparse.Namespace) -> int:
    from backend.service import ProjectRequest, project_scope

    if args.pca_dims < 0 or args.neighbors < 2 or (args.epochs is not None and args.epochs < 1):
        raise invalid("--pca-dims must be ≥ 0, --neighbors ≥ 2 and --epochs ≥ 1.")
    req = request(
        ProjectRequest,
        scope=scope_request(args),
        method=args.method,
        pca_dims=args.pca_dims,
        neighbors=args.neighbors,
        min_dist=args.min_dist,
        epochs=args.epochs,
        seed=args.seed,
        refit=args.refit,
        out=args.out,
    )
    outcome = project_scope(workspace(args), req)
    scope, result, written = outcome.scope, outcome.projection, outcome.written
    if args.json:
        print_json(outcome.to_json(points=args.points))
        return 0
    how = (
        "from the cache"
        if result.cached
        else f"{result.transformed} new tiles placed by transform"
        if result.transformed
        else f"fitted on {result.fitted} tiles"
    )
    print(
        f"{result.method} projection of {scope.describe()}: {how} in {result.seconds:.2f} s "
        f"(id {result.projection_id})" + (f" → {written.path}" if written else "")
    )
    return 0
