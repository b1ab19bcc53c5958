"""User-defined classes: named classes and tiles marked positive or negative, in the cache.

Labels belong to tiles, not to a model, so one set of labels trains a classifier for every model
that embedded those tiles. Each label keeps when it was made and how (``origin``: ``id``,
``point``, ``polygon``, ``import`` or whatever the caller names, e.g. ``app``); marking a tile
again replaces its label. Labels export to and import from GeoJSON (tile footprints with
``class``, ``label`` = positive/negative, ``origin`` and ``labelled_at`` properties).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from backend.errors import CacheError, SoftMapError, UnknownClassError
from backend.store.cache import EmbeddingCache
from backend.store.scopes import require_tiles, tile_records

_DDL = """
CREATE TABLE IF NOT EXISTS user_classes (
    class_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS user_labels (
    class_id INTEGER NOT NULL, tile_id TEXT NOT NULL, positive BOOLEAN NOT NULL,
    origin TEXT, labelled_at TIMESTAMPTZ, PRIMARY KEY (class_id, tile_id)
);
"""

#: Tables of other features keyed by ``class_id`` that a deleted class is removed from.
DEPENDENT_TABLES = ("class_predictions", "class_models")


@dataclass(frozen=True)
class UserClass:
    """A named class with its label counts."""

    class_id: int
    name: str
    positives: int
    negatives: int
    created_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Label:
    """One tile marked for one class."""

    class_name: str
    tile_id: str
    positive: bool
    origin: str
    labelled_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class LabelChange:
    """What an add/remove/import did."""

    class_name: str
    tiles: int
    positive: bool | None
    created_class: bool = False

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime | None) -> datetime | None:
    # Read as naive UTC (TIMESTAMPTZ → Python needs pytz, which is not a dependency).
    return value.replace(tzinfo=timezone.utc) if value is not None else None


def _ensure(cache: EmbeddingCache) -> bool:
    return cache.ensure_schema("user_classes", _DDL)


def _check_name(name: str) -> str:
    clean = name.strip()
    if not clean or len(clean) > 100:
        raise SoftMapError("A class name must be 1 to 100 characters.", title="Invalid class name")
    return clean


def classes(cache: EmbeddingCache) -> list[UserClass]:
    """Every class with its positive and negative label counts, by name."""
    if not cache.has_table("user_classes"):  # reading creates nothing
        return []
    with cache.cursor() as cur:
        rows = cur.execute(
            """SELECT c.class_id, c.name,
                count(l.tile_id) FILTER (WHERE l.positive),
                count(l.tile_id) FILTER (WHERE NOT l.positive), timezone('UTC', c.created_at)
            FROM user_classes c LEFT JOIN user_labels l USING (class_id)
            GROUP BY ALL ORDER BY c.name"""
        ).fetchall()
    return [UserClass(int(r[0]), r[1], int(r[2]), int(r[3]), _utc(r[4])) for r in rows]


def get_class(cache: EmbeddingCache, name: str) -> UserClass:
    """One class by name.

    Raises:
        UnknownClassError: no class has that name (the message lists those that exist).
    """
    for c in classes(cache):
        if c.name == name:
            return c
    known = [c.name for c in classes(cache)]
    hint = f" Classes: {', '.join(known)}." if known else " There are no classes yet."
    raise UnknownClassError(
        f"There is no class '{name}'. Create it by labelling tiles "
        f"(`softmap label add '{name}' --tile ID`).{hint}"
    )


def create_class(cache: EmbeddingCache, name: str, *, exist_ok: bool = False) -> UserClass:
    """Create a class (or return it when ``exist_ok`` and it exists)."""
    name = _check_name(name)
    _writable(cache)
    _ensure(cache)
    if any(c.name == name for c in classes(cache)):
        if exist_ok:
            return get_class(cache, name)
        raise SoftMapError(f"A class '{name}' exists already.", title="Class exists")
    with cache.transaction() as cur:
        (class_id,) = cur.execute(
            "SELECT coalesce(max(class_id), 0) + 1 FROM user_classes"
        ).fetchone() or (1,)
        cur.execute("INSERT INTO user_classes VALUES (?, ?, ?)", [class_id, name, _now()])
    return get_class(cache, name)


def rename_class(cache: EmbeddingCache, old: str, new: str) -> UserClass:
    """Rename a class; its labels, classifiers and predictions follow."""
    cls = get_class(cache, old)
    new = _check_name(new)
    if new != old and any(c.name == new for c in classes(cache)):
        raise SoftMapError(f"A class '{new}' exists already.", title="Class exists")
    with cache.cursor() as cur:
        cur.execute("UPDATE user_classes SET name = ? WHERE class_id = ?", [new, cls.class_id])
    return get_class(cache, new)


def delete_class(cache: EmbeddingCache, name: str) -> int:
    """Delete a class with its labels, classifiers and predictions; returns the labels removed."""
    cls = get_class(cache, name)
    with cache.transaction() as cur:
        for table in DEPENDENT_TABLES:
            if cache.has_table(table):
                cur.execute(f"DELETE FROM {table} WHERE class_id = ?", [cls.class_id])
        cur.execute("DELETE FROM user_labels WHERE class_id = ?", [cls.class_id])
        cur.execute("DELETE FROM user_classes WHERE class_id = ?", [cls.class_id])
    return cls.positives + cls.negatives


def add_labels(
    cache: EmbeddingCache,
    name: str,
    tile_ids: Sequence[str],
    *,
    positive: bool,
    origin: str = "id",
    create: bool = True,
) -> LabelChange:
    """Mark tiles positive or negative for a class (created if missing when ``create``).

    Raises:
        NotFoundError: a tile id is not in the cache.
        UnknownClassError: the class does not exist and ``create`` is false.
    """
    if create:
        _check_name(name)  # before anything is created in the cache
    if not tile_ids:
        raise SoftMapError("No tiles to label.", title="Nothing to label")
    ids = sorted(set(require_tiles(cache, tile_ids)))
    existed = any(c.name == name.strip() for c in classes(cache))
    cls = create_class(cache, name, exist_ok=True) if create else get_class(cache, name)
    now = _now()
    with cache.transaction() as cur:
        cur.executemany(
            """INSERT INTO user_labels VALUES (?, ?, ?, ?, ?) ON CONFLICT (class_id, tile_id)
            DO UPDATE SET positive = excluded.positive, origin = excluded.origin,
                labelled_at = excluded.labelled_at""",
            [[cls.class_id, t, positive, origin, now] for t in ids],
        )
    return LabelChange(cls.name, len(ids), positive, created_class=not existed)


def remove_labels(cache: EmbeddingCache, name: str, tile_ids: Sequence[str]) -> LabelChange:
    """Remove the labels of some tiles from a class (tiles without a label are ignored)."""
    cls = get_class(cache, name)
    with cache.transaction() as cur:
        before = _count_labels(cur, cls.class_id)
        cur.execute(
            "DELETE FROM user_labels "
            "WHERE class_id = ? AND tile_id IN (SELECT unnest(?::VARCHAR[]))",
            [cls.class_id, list(tile_ids)],
        )
        removed = before - _count_labels(cur, cls.class_id)
    return LabelChange(cls.name, removed, None)


def _count_labels(cur: Any, class_id: int) -> int:
    row = cur.execute("SELECT count(*) FROM user_labels WHERE class_id = ?", [class_id]).fetchone()
    return int(row[0]) if row else 0


def labels(cache: EmbeddingCache, name: str | None = None) -> list[Label]:
    """The labels of one class (or of all), by class then tile id."""
    if name is not None:
        get_class(cache, name)
    if not _ensure(cache):
        return []
    with cache.cursor() as cur:
        rows = cur.execute(
            """SELECT c.name, l.tile_id, l.positive, l.origin, timezone('UTC', l.labelled_at)
            FROM user_labels l JOIN user_classes c USING (class_id)
            WHERE (?::TEXT IS NULL OR c.name = ?) ORDER BY c.name, l.tile_id""",
            [name, name],
        ).fetchall()
    return [Label(r[0], r[1], bool(r[2]), r[3] or "", _utc(r[4])) for r in rows]


def label_sets(cache: EmbeddingCache, name: str) -> tuple[list[str], list[str]]:
    """(positive tile ids, negative tile ids) of a class."""
    pos = [lb.tile_id for lb in labels(cache, name) if lb.positive]
    neg = [lb.tile_id for lb in labels(cache, name) if not lb.positive]
    return pos, neg


def labels_geojson(cache: EmbeddingCache, name: str | None = None) -> dict[str, Any]:
    """The labels as a GeoJSON FeatureCollection of tile footprints (EPSG:4326)."""
    found = labels(cache, name)
    tiles = {t["tile_id"]: t for t in tile_records(cache, [lb.tile_id for lb in found])}
    features = [
        {
            "type": "Feature",
            "geometry": json.loads(tiles[lb.tile_id]["footprint"]),
            "properties": {
                "class": lb.class_name,
                "tile_id": lb.tile_id,
                "label": "positive" if lb.positive else "negative",
                "origin": lb.origin,
                "labelled_at": lb.labelled_at.isoformat() if lb.labelled_at else None,
            },
        }
        for lb in found
        if lb.tile_id in tiles
    ]
    return {"type": "FeatureCollection", "features": features}


def export_labels(cache: EmbeddingCache, path: str | Path, name: str | None = None) -> int:
    """Write the labels as GeoJSON; returns the number of features."""
    data = labels_geojson(cache, name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return len(data["features"])


def import_labels(
    cache: EmbeddingCache, data: str | Path | Mapping[str, Any], *, origin: str = "import"
) -> list[LabelChange]:
    """Add the labels of a GeoJSON FeatureCollection written by :func:`export_labels`.

    Features need ``class``, ``tile_id`` and ``label`` (positive/negative) properties; classes
    are created as needed. Tiles must be in the cache (ids are checked).

    Raises:
        SoftMapError: the file is not such a FeatureCollection.
    """
    if isinstance(data, (str, Path)):
        try:
            obj: Mapping[str, Any] = json.loads(Path(data).read_text())
        except (OSError, ValueError) as e:
            raise SoftMapError(f"Cannot read labels from {data}: {e}", title="Bad labels") from e
    else:
        obj = data
    features = obj.get("features") if isinstance(obj, Mapping) else None
    if not isinstance(features, list):
        raise SoftMapError(
            "Labels must be a GeoJSON FeatureCollection (as `softmap label export` writes).",
            title="Bad labels",
        )
    groups: dict[tuple[str, bool], list[str]] = {}
    for i, f in enumerate(features):
        props = f.get("properties") or {} if isinstance(f, Mapping) else {}
        cls, tile, lab = props.get("class"), props.get("tile_id"), props.get("label")
        if not isinstance(cls, str) or not isinstance(tile, str) or lab not in _LABELS:
            raise SoftMapError(
                f"Feature {i} lacks the properties class, tile_id and label (positive/negative).",
                title="Bad labels",
            )
        groups.setdefault((cls, _LABELS[lab]), []).append(tile)
    return [
        add_labels(cache, cls, ids, positive=pos, origin=origin)
        for (cls, pos), ids in sorted(groups.items())
    ]


_LABELS = {"positive": True, "negative": False, True: True, False: False}


def _writable(cache: EmbeddingCache) -> None:
    if cache.read_only or not _ensure(cache):
        raise CacheError(f"The cache {cache.path} is open read-only: classes cannot be changed.")
