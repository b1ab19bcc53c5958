"""``softmap project``: a 2-D UMAP (or PCA) projection of a scope's embeddings, cached.

Also holds the scope options (``--model`` plus an optional ``--source`` and ``--bbox``/``--aoi``)
that ``label``, ``classify``, ``suggest`` and ``export`` share.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.cli.common import (
    add_db_option,
    add_json_option,
    add_region_options,
    catalog,
    db_path,
    invalid,
    print_json,
)

if TYPE_CHECKING:
    from backend.imagery.regions import Region
    from backend.store.cache import EmbeddingCache
    from backend.store.scopes import Scope

ORDER = 30


def add_scope_options(p: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    """``--model`` and the scope: a region (``--bbox``/``--aoi``), a ``--source``, or all cached."""
    p.add_argument("--model", required=model_required, help="model id whose embeddings to use")
    add_region_options(p, required=False)
    p.epilog = (
        "Scope: the tiles inside --bbox/--aoi (of --source when given), else every tile of "
        "--source, else everything cached for the model."
    )


def region_of(args: argparse.Namespace) -> Region | None:
    """The region named by ``--bbox``/``--aoi``, if any (``--source`` is checked to exist)."""
    from backend.imagery.regions import load_aoi, parse_bbox

    if getattr(args, "source", None):
        catalog(args).get(args.source)
    if getattr(args, "bbox", None):
        return parse_bbox(args.bbox)
    if getattr(args, "aoi", None):
        return load_aoi(args.aoi)
    return None


def scope_of(args: argparse.Namespace, cache: EmbeddingCache) -> Scope:
    """The embedded tiles of ``--model`` in the scope the options name."""
    from backend.store.scopes import resolve_scope

    return resolve_scope(cache, args.model, region=region_of(args), source_id=args.source)


def scope_json(scope: Scope) -> dict[str, Any]:
    return {
        "kind": scope.kind,
        "key": scope.key,
        "source": scope.source_id,
        "model": scope.eset.model_id,
        "preprocessing_hash": scope.eset.preprocessing_hash,
        "tiles": len(scope.tile_ids),
    }


def register(sub: Any) -> None:
    p = sub.add_parser("project", help="2-D UMAP/PCA projection of cached embeddings (cached)")
    add_scope_options(p)
    p.add_argument("--method", choices=["umap", "pca"], default="umap", help="default umap")
    p.add_argument("--pca-dims", type=int, default=50, help="PCA before UMAP (0 = none; 50)")
    p.add_argument("--neighbors", type=int, default=15, help="UMAP n_neighbors (15)")
    p.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist (0.1)")
    p.add_argument("--epochs", type=int, help="UMAP n_epochs (default: UMAP's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--refit", action="store_true", help="fit again even if cached")
    p.add_argument("--out", type=Path, help="write tile, x, y as .geojson or .parquet")
    p.add_argument("--points", action="store_true", help="include the points in --json output")
    add_db_option(p)
    add_json_option(p)
    p.set_defaults(handler=_project)


def _project(args: argparse.Namespace) -> int:
    from backend.analysis.projection import ProjectionParams, project
    from backend.outputs.exports import export_tiles, tile_format
    from backend.store.cache import EmbeddingCache

    if args.pca_dims < 0 or args.neighbors < 2 or (args.epochs is not None and args.epochs < 1):
        raise invalid("--pca-dims must be ≥ 0, --neighbors ≥ 2 and --epochs ≥ 1.")
    if args.out is not None:
        tile_format(args.out)
    params = ProjectionParams(
        method=args.method,
        pca_dims=args.pca_dims,
        n_neighbors=args.neighbors,
        min_dist=args.min_dist,
        n_epochs=args.epochs,
        seed=args.seed,
    )
    with EmbeddingCache(db_path(args)) as cache:
        scope = scope_of(args, cache)
        result = project(cache, scope, params, refit=args.refit)
        written = None
        if args.out is not None:
            written = export_tiles(
                args.out, cache, result.tile_ids, {"x": result.xy[:, 0], "y": result.xy[:, 1]}
            )
    if args.json:
        payload = {"scope": scope_json(scope), **result.to_json(points=args.points)}
        if written is not None:
            payload["file"] = written.to_json()
        print_json(payload)
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
