"""Faults in what the cache keeps: removed sources leave no rows; heads refuse other embeddings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from backend.errors import CacheError, HeadMismatchError
from backend.imagery.sources import SceneSource
from backend.landcover.heads import check_head_applies
from backend.landcover.labels import N_CLASSES
from backend.landcover.store import ensure_tables, resolve_head, write_predictions
from backend.settings import Settings
from backend.store.cache import EmbeddingCache


def _rows(cache: EmbeddingCache, table: str, prefix: str) -> int:
    with cache.cursor() as cur:
        row = cur.execute(
            f"SELECT count(*) FROM {table} WHERE starts_with(tile_id, ?)", [prefix]
        ).fetchone()
    return int(row[0]) if row else 0


def test_remove_source_drops_every_feature_row(embedded_db: Path, tmp_path: Path) -> None:
    from backend.classes.user_classes import add_labels

    db = tmp_path / "c.duckdb"
    shutil.copy(embedded_db, db)
    with EmbeddingCache(db) as cache:
        (eset,) = cache.embedding_sets()
        ids, _ = cache.embeddings(eset)
        add_labels(cache, "town", ids[:3], positive=True)
        head = resolve_head(cache, "test-vit", None, Settings(offline=True))
        ensure_tables(cache)
        probs = np.full((len(ids), N_CLASSES), 1 / N_CLASSES, dtype=np.float32)
        write_predictions(cache, "landcover_predictions", head, ids, probs)
        # Rows of another source stay.
        with cache.cursor() as cur:
            cur.execute(
                "INSERT INTO user_labels SELECT class_id, 'local/other/112/112/0_0', false, 'id', "
                "NULL FROM user_classes"
            )
        # A feature table added later, keyed by source: covered without being listed anywhere.
        cache.ensure_schema(
            "later", "CREATE TABLE IF NOT EXISTS later_feature (source_id TEXT, note TEXT);"
        )
        with cache.cursor() as cur:
            cur.execute("INSERT INTO later_feature VALUES ('demo/virginia', 'x'), ('b', 'y')")
        assert _rows(cache, "user_labels", "demo/virginia/") == 3
        assert _rows(cache, "landcover_predictions", "demo/virginia/") == len(ids)

        dropped = cache.remove_source("demo/virginia")

        assert dropped >= len(ids)
        for table in ("user_labels", "landcover_predictions", eset.table_name, "tiles"):
            assert _rows(cache, table, "demo/virginia/") == 0, table
        assert _rows(cache, "user_labels", "local/other/") == 1
        with cache.cursor() as cur:
            assert cur.execute("SELECT source_id FROM later_feature").fetchall() == [("b",)]
            assert cur.execute("SELECT count(*) FROM runs").fetchone() == (1,)  # history kept


def test_remove_source_is_one_transaction(embedded_db: Path, tmp_path: Path) -> None:
    """A failure part-way leaves every table as it was."""
    db = tmp_path / "c.duckdb"
    shutil.copy(embedded_db, db)
    with EmbeddingCache(db) as cache:
        cache.ensure_schema("broken", "CREATE TABLE IF NOT EXISTS broken (tile_id INTEGER);")
        before = _rows(cache, "tiles", "demo/virginia/")
        with pytest.raises(CacheError, match="starts_with"):  # not on an INTEGER column
            cache.remove_source("demo/virginia")
        assert _rows(cache, "tiles", "demo/virginia/") == before
        (eset,) = cache.embedding_sets()
        assert _rows(cache, eset.table_name, "demo/virginia/") == 16


def test_head_refuses_embeddings_of_another_preprocessing() -> None:
    head = resolve_head(None, "softmap-default", None, Settings(offline=True))
    fitted = dict(head.training["preprocessing"])
    check_head_applies(head, head.preprocessing_hash, None)  # the same hash
    # Harmonising reader settings (baseline 04.00 DN offset, L2A's missing B10) are tolerated.
    check_head_applies(head, "other", {**fitted, "dn_offset": -1000.0, "fill": {"B10": 22.0}})
    with pytest.raises(HeadMismatchError, match="chip 64 when fitted, 128 here"):
        check_head_applies(head, "other", {**fitted, "chip": 128})
    with pytest.raises(HeadMismatchError, match="resampling"):
        check_head_applies(head, "other", {**fitted, "resampling": "bilinear"})
    with pytest.raises(HeadMismatchError, match="Fit a head"):
        check_head_applies(head, "unknown-hash", None)


def test_bundled_heads_record_the_preprocessing_they_hash() -> None:
    import hashlib
    import json

    for model in ("softmap-default", "test-vit"):
        head = resolve_head(None, model, None, Settings(offline=True))
        blob = json.dumps(head.training["preprocessing"], sort_keys=True).encode()
        assert hashlib.sha256(blob).hexdigest()[:16] == head.preprocessing_hash


@pytest.mark.parametrize("where", ["/proc/softmap/c.duckdb", "{file}/c.duckdb"])
def test_cache_folder_that_cannot_be_created_is_one_error(tmp_path: Path, where: str) -> None:
    """Library callers (the app, the service) get a CacheError, not an OSError."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with pytest.raises(CacheError, match="Cannot create the folder of the cache"):
        EmbeddingCache(where.format(file=plain))


def test_sources_remove_through_the_cli_leaves_no_feature_rows(
    tmp_path: Path, brandenburg: SceneSource, capsys: pytest.CaptureFixture[str]
) -> None:
    """Register a scene, embed it, label it, map its land cover, remove it: nothing of it stays."""
    from backend.cli import main
    from backend.store.catalog import open_catalog
    from tests.test_scene_import import build_scenes, inner_region

    (tmp_path / "scenes").mkdir()
    scenes = build_scenes(tmp_path / "scenes", brandenburg)
    db = tmp_path / "c.duckdb"
    assert main(["sources", "add", str(scenes["multiband"]), "--id", "local/crop", "--db",
                 str(db)]) == 0  # fmt: skip
    source = open_catalog(db).get("local/crop")
    w, s, e, n = inner_region(source).geometry.bounds
    region = ["--source", "local/crop", "--bbox", f"{w},{s},{e},{n}", "--model", "test-vit"]
    common = ["--db", str(db)]
    assert main(["landcover", *region, "--device", "cpu", "--quiet", *common]) == 0
    assert main(["label", "add", "field", "--bbox", f"{w},{s},{e},{n}", "--model", "test-vit",
                 *common]) == 0  # fmt: skip
    capsys.readouterr()
    with EmbeddingCache(db, read_only=True) as cache:
        assert _rows(cache, "user_labels", "local/crop/") > 0
        assert _rows(cache, "landcover_predictions", "local/crop/") > 0
    assert main(["sources", "remove", "local/crop", *common]) == 0
    with EmbeddingCache(db, read_only=True) as cache:
        for table in ("user_labels", "landcover_predictions", "landcover_token_predictions",
                      "tiles"):  # fmt: skip
            assert _rows(cache, table, "local/crop/") == 0, table
        assert cache.stats().embeddings == 0


def test_head_refuses_embeddings_of_other_weights() -> None:
    import dataclasses

    head = resolve_head(None, "softmap-default", None, Settings(offline=True))
    fitted = {**head.training["preprocessing"], "weights": "sha256:aaaaaaaaaaaaaaaa"}
    tokens = dataclasses.replace(
        head, uses_embedding=True, training={**head.training, "preprocessing": fitted}
    )
    check_head_applies(tokens, "other", dict(fitted))
    with pytest.raises(HeadMismatchError, match=r"weights .*sha256:aaaa.* when fitted"):
        check_head_applies(tokens, "other", {**fitted, "weights": "sha256:bbbbbbbbbbbbbbbb"})
    # A head that reads band statistics only does not depend on the weights.
    bands_only = dataclasses.replace(tokens, uses_embedding=False)
    check_head_applies(bands_only, "other", {**fitted, "weights": "sha256:bbbbbbbbbbbbbbbb"})


def test_embeddings_of_other_weights_never_mix_in_one_set(
    tmp_path: Path, virginia: SceneSource
) -> None:
    """Retrained weights under the same model id embed into their own set, not the cached one."""
    import torch

    from backend.embedding.pipeline import embed_region
    from backend.imagery.regions import parse_bbox
    from backend.models import create_model
    from backend.models.inference import EmbeddingEngine

    from .conftest import VIRGINIA_SMALL_BBOX

    random = create_model("test-vit")
    state = {k: v + 0.01 for k, v in random.module.state_dict().items()}
    ckpt = tmp_path / "retrained.pt"
    torch.save(state, ckpt)
    retrained = create_model("test-vit", ckpt)
    assert random.weights_id.startswith("random:")
    assert retrained.weights_id.startswith("sha256:")
    assert retrained.weights_id == create_model("test-vit", ckpt).weights_id
    db = tmp_path / "c.duckdb"
    settings = Settings(db_path=db, models_dir=tmp_path / "models", offline=True)
    results = []
    with EmbeddingCache(db) as cache:
        for model in (random, retrained, random):
            engine = EmbeddingEngine(model, device="cpu", batch_size=16)
            results.append(
                embed_region(
                    parse_bbox(VIRGINIA_SMALL_BBOX), virginia, model, cache,
                    engine=engine, settings=settings,
                )
            )  # fmt: skip
        sets = cache.embedding_sets()
    first, second, again = results
    assert len(sets) == 2
    assert first.preprocessing_hash != second.preprocessing_hash
    assert second.computed == second.tiles == 16  # not served from the first weights' set
    assert again.computed == 0 and again.preprocessing_hash == first.preprocessing_hash
    # The set embedded into last is current: searches and scopes that name no preprocessing
    # use it; the other version's set stays reachable by its hash.
    from backend.search.query import model_sets
    from backend.store.scopes import resolve_scope

    by_hash = {s.preprocessing_hash: s for s in sets}
    with EmbeddingCache(db) as cache:
        assert cache.superseded_set_ids() == {by_hash[second.preprocessing_hash].set_id}
        assert [s.preprocessing_hash for s in model_sets(cache, "test-vit")] == [
            first.preprocessing_hash
        ]
        assert resolve_scope(cache, "test-vit").eset.preprocessing_hash == first.preprocessing_hash
        (old,) = model_sets(cache, "test-vit", second.preprocessing_hash)
        assert old.set_id == by_hash[second.preprocessing_hash].set_id
        embed_region(
            parse_bbox(VIRGINIA_SMALL_BBOX), virginia, retrained, cache,
            engine=EmbeddingEngine(retrained, device="cpu", batch_size=16), settings=settings,
        )  # fmt: skip
        assert cache.superseded_set_ids() == {by_hash[first.preprocessing_hash].set_id}
        assert resolve_scope(cache, "test-vit").eset.preprocessing_hash == second.preprocessing_hash
