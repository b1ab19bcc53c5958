"""Similarity search on real test-vit embeddings of the bundled scenes: queries, scopes, CLI."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import shape

from backend.cli import main
from backend.embedding.pipeline import EmbedResult, embed_region
from backend.errors import EmptyScopeError, NoEmbeddingsError, NotFoundError
from backend.imagery.regions import parse_bbox
from backend.imagery.sources import demo_catalog
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.search.heatmap import heatmap_from_tokens, match_heatmaps, tile_tokens
from backend.search.index_sync import get_index
from backend.search.query import Scope, search
from backend.settings import Settings
from backend.store.cache import EmbeddingCache

#: About 8 km × 7 km of the Eastern Shore (56 test-vit tiles of 1.12 km with data).
VIRGINIA_BBOX = "-75.72,37.62,-75.63,37.68"
BRANDENBURG_BBOX = "12.60,52.48,12.63,52.495"


@pytest.fixture(scope="module")
def engine() -> EmbeddingEngine:
    return EmbeddingEngine(create_model("test-vit"), device="cpu", batch_size=16, readers=0)


def _embed(db: Path, engine: EmbeddingEngine, source: str, bbox: str) -> EmbedResult:
    catalog = demo_catalog()
    with EmbeddingCache(db) as cache:
        return embed_region(parse_bbox(bbox), catalog.get(source), engine.model, cache,
                            engine=engine, settings=Settings(db_path=db, offline=True))  # fmt: skip


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, engine: EmbeddingEngine
             ) -> tuple[Path, EmbedResult, EmbedResult]:  # fmt: skip
    db = tmp_path_factory.mktemp("search") / "cache.duckdb"
    va = _embed(db, engine, "demo/virginia", VIRGINIA_BBOX)
    br = _embed(db, engine, "demo/brandenburg", BRANDENBURG_BBOX)
    assert va.tiles > 40 and br.tiles > 4
    return db, va, br


@pytest.fixture
def cache(embedded: tuple[Path, EmbedResult, EmbedResult]) -> EmbeddingCache:
    return EmbeddingCache(embedded[0], read_only=True)


def _query_tile(va: EmbedResult) -> str:
    return va.tile_ids[len(va.tile_ids) // 2]


def test_a_tile_is_its_own_nearest_neighbour_and_is_excluded(
    cache: EmbeddingCache, embedded: tuple[Path, EmbedResult, EmbedResult]
) -> None:
    _, va, _ = embedded
    index = get_index(cache, cache.embedding_sets()[0])
    for tile in va.tile_ids[::17]:
        vector = index.matrix[index.row_of[tile]]
        for engine in ("exact", "hnsw"):
            top = index.top(vector, 1, engine=engine)  # type: ignore[arg-type]
            assert index.ids[top.rows[0]] == tile and top.scores[0] == pytest.approx(1, abs=1e-5)
    q = _query_tile(va)
    response = search(cache, "test-vit", tiles=[q], k=10)
    ranks = [r.rank for r in response.results]
    scores = [r.score for r in response.results]
    assert ranks == list(range(1, 11)) and scores == sorted(scores, reverse=True)
    assert q not in {r.tile_id for r in response.results}
    assert response.query_tile_ids == (q,) and response.method == "mean"
    assert response.candidates == len(index)


def test_exact_and_hnsw_agree(
    cache: EmbeddingCache, embedded: tuple[Path, EmbedResult, EmbedResult]
) -> None:
    _, va, _ = embedded
    for q in va.tile_ids[5::40]:
        exact = search(cache, "test-vit", tiles=[q], k=10, suppress=False, engine="exact")
        hnsw = search(cache, "test-vit", tiles=[q], k=10, suppress=False, engine="hnsw")
        assert exact.engine == "exact" and hnsw.engine == "hnsw"
        top_e = [r.tile_id for r in exact.results]
        top_h = [r.tile_id for r in hnsw.results]
        assert top_e[:3] == top_h[:3]
        assert len(set(top_e) & set(top_h)) >= 9


def test_negatives_push_results_away(
    cache: EmbeddingCache, embedded: tuple[Path, EmbedResult, EmbedResult]
) -> None:
    _, va, _ = embedded
    index = get_index(cache, cache.embedding_sets()[0])
    q = _query_tile(va)
    plain = search(cache, "test-vit", tiles=[q], k=10, suppress=False)
    negative = plain.results[0].tile_id  # the closest match is the one we do not want
    pushed = search(cache, "test-vit", positives=[q], negatives=[negative], k=10, suppress=False)
    assert pushed.method == "mean-minus-negatives" and pushed.negative_tile_ids == (negative,)
    assert negative not in {r.tile_id for r in pushed.results}
    n = index.matrix[index.row_of[negative]]

    def mean_cos_to_negative(ids: list[str]) -> float:
        return float(np.mean([index.matrix[index.row_of[t]] @ n for t in ids]))

    before = mean_cos_to_negative([r.tile_id for r in plain.results[1:]])
    after = mean_cos_to_negative([r.tile_id for r in pushed.results])
    assert after < before


def test_enough_examples_train_a_classifier(
    cache: EmbeddingCache, embedded: tuple[Path, EmbedResult, EmbedResult]
) -> None:
    _, va, _ = embedded
    pos, neg = list(va.tile_ids[:5]), list(va.tile_ids[-5:])
    response = search(cache, "test-vit", positives=pos, negatives=neg, k=20, suppress=False)
    assert response.method == "classifier"
    scores = [r.score for r in response.results]
    assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    assert not {r.tile_id for r in response.results} & set(pos + neg)


def test_spatial_suppression_keeps_results_apart(
    cache: EmbeddingCache, embedded: tuple[Path, EmbedResult, EmbedResult]
) -> None:
    _, va, _ = embedded
    q = _query_tile(va)

    def touching_pairs(results: tuple[object, ...]) -> int:
        shapes = [shape(r.footprint) for r in results]  # type: ignore[attr-defined]
        return sum(a.intersects(b) for a, b in combinations(shapes, 2))

    loose = search(cache, "test-vit", tiles=[q], k=8, suppress=False)
    assert touching_pairs(loose.results) > 0  # neighbouring tiles look alike
    apart = search(cache, "test-vit", tiles=[q], k=8)
    assert len(apart.results) == 8 and apart.suppressed > 0
    assert touching_pairs(apart.results) == 0
    assert apart.results[0].tile_id == loose.results[0].tile_id


def test_threshold(cache: EmbeddingCache, embedded: tuple[Path, EmbedResult, EmbedResult]) -> None:
    _, va, _ = embedded
    q = _query_tile(va)
    full = search(cache, "test-vit", tiles=[q], k=50, suppress=False)
    cut = full.results[9].score
    kept = search(cache, "test-vit", tiles=[q], k=50, suppress=False, threshold=cut)
    assert [r.tile_id for r in kept.results] == [r.tile_id for r in full.results[:10]]
    assert all(r.score >= cut for r in kept.results)
    assert search(cache, "test-vit", tiles=[q], threshold=1.01).results == ()


def test_point_query_and_point_outside(
    cache: EmbeddingCache, embedded: tuple[Path, EmbedResult, EmbedResult]
) -> None:
    _, va, _ = embedded
    q = _query_tile(va)
    rec = cache.tiles([q])[0]
    by_point = search(cache, "test-vit", point=(rec["lon"], rec["lat"]), k=5)
    assert by_point.query_tile_ids == (q,)
    by_tile = search(cache, "test-vit", tiles=[q], k=5)
    assert [r.tile_id for r in by_point.results] == [r.tile_id for r in by_tile.results]
    with pytest.raises(NotFoundError, match="No embedded test-vit tile contains"):
        search(cache, "test-vit", point=(-75.9, 37.9))


def test_scopes(cache: EmbeddingCache, embedded: tuple[Path, EmbedResult, EmbedResult]) -> None:
    _, va, br = embedded
    q = _query_tile(va)
    everything = search(cache, "test-vit", tiles=[q], k=5, scope=Scope("all"))
    assert everything.candidates == va.tiles + br.tiles
    in_br = search(cache, "test-vit", tiles=[q], k=5,
                   scope=Scope("source", "demo/brandenburg"))  # fmt: skip
    assert in_br.candidates == br.tiles
    assert {r.source_id for r in in_br.results} == {"demo/brandenburg"}
    region = parse_bbox("-75.70,37.63,-75.67,37.66")
    small = search(cache, "test-vit", tiles=[q], k=5, scope=Scope("region", region=region))
    assert 0 < small.candidates < va.tiles
    assert all(shape(r.footprint).intersects(region.geometry) for r in small.results)
    with pytest.raises(EmptyScopeError):
        search(cache, "test-vit", tiles=[q],
               scope=Scope("region", region=parse_bbox("-75.60,37.55,-75.58,37.57")))  # fmt: skip


def test_user_mistakes(cache: EmbeddingCache, embedded: tuple[Path, EmbedResult, EmbedResult]
                       ) -> None:  # fmt: skip
    with pytest.raises(NotFoundError, match="demo/virginia/112/112/999_999"):
        search(cache, "test-vit", tiles=["demo/virginia/112/112/999_999"])
    with pytest.raises(NoEmbeddingsError, match="softcon-vits14-s2"):
        search(cache, "softcon-vits14-s2", tiles=["demo/virginia/224/224/1_1"])


def test_index_follows_new_embeddings(tmp_path: Path, engine: EmbeddingEngine) -> None:
    db = tmp_path / "sync.duckdb"
    first = _embed(db, engine, "demo/virginia", "-75.70,37.63,-75.67,37.66")
    with EmbeddingCache(db) as cache:
        eset = cache.embedding_sets()[0]
        index = get_index(cache, eset)
        index.build_hnsw()
        assert len(index) == first.tiles
        before = search(cache, "test-vit", tiles=[first.tile_ids[0]], k=5)
        assert before.candidates == first.tiles
    second = _embed(db, engine, "demo/virginia", "-75.67,37.63,-75.64,37.66")
    new = set(second.tile_ids) - set(first.tile_ids)
    assert new
    with EmbeddingCache(db) as cache:
        same = get_index(cache, eset)
        assert same is index and len(index) == first.tiles + len(new)
        assert index.has_hnsw and len(index.matrix) == len(index)
        # a new tile is found by the graph as its own nearest neighbour
        t = sorted(new)[0]
        top = index.top(index.matrix[index.row_of[t]], 1, engine="hnsw")
        assert index.ids[top.rows[0]] == t
        after = search(cache, "test-vit", tiles=[t], k=5)
        assert after.candidates == first.tiles + len(new)


def test_heatmap_shape_and_best_token(
    cache: EmbeddingCache, engine: EmbeddingEngine, embedded: tuple[Path, EmbedResult, EmbedResult]
) -> None:
    _, va, _ = embedded
    q = _query_tile(va)
    response = search(cache, "test-vit", tiles=[q], k=3)
    eset = cache.embedding_set("test-vit", response.preprocessing_hash)
    assert eset is not None and response.query is not None
    ids = [r.tile_id for r in response.results]
    maps = match_heatmaps(cache, engine, eset, ids, response.query.vector)
    g = engine.model.meta.token_grid
    assert [m.tile_id for m in maps] == ids
    assert all(m.scores.shape == (g, g) and np.isfinite(m.scores).all() for m in maps)
    assert maps[0].footprint == response.results[0].footprint
    # the query tile's best token, used as the query, scores highest on itself
    tokens = tile_tokens(cache, engine, eset, [q])[q]
    own = heatmap_from_tokens(q, tokens, response.query.vector)
    best = tokens[own.best_row, own.best_col]
    self_map = heatmap_from_tokens(q, tokens, best)
    assert (self_map.best_row, self_map.best_col) == (own.best_row, own.best_col)
    assert self_map.best_score == pytest.approx(1.0, abs=1e-5)
    assert maps[0].to_json()["scores"][0][0] == pytest.approx(float(maps[0].scores[0, 0]), 1e-4)


# --- CLI ------------------------------------------------------------------------------------
def test_cli_json(embedded: tuple[Path, EmbedResult, EmbedResult],
                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    db, va, _ = embedded
    q = _query_tile(va)
    code = main(["search", "--model", "test-vit", "--tile", q, "--k", "5", "--db", str(db),
                 "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == 5
    first = out["results"][0]
    assert {"tile_id", "score", "lon", "lat", "footprint"} <= set(first)
    assert first["footprint"]["type"] == "Polygon"
    assert [r["score"] for r in out["results"]] == sorted(
        (r["score"] for r in out["results"]), reverse=True
    )
    rec_lon, rec_lat = first["lon"], first["lat"]
    code = main(["search", "--model", "test-vit", "--point", f"{rec_lon},{rec_lat}",
                 "--source", "demo/virginia", "--bbox", VIRGINIA_BBOX, "--no-suppress",
                 "--db", str(db), "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query_tile_ids"] == [first["tile_id"]] and out["scope"].startswith("region")
    assert main(["search", "--model", "test-vit", "--tile", q, "--db", str(db)]) == 0
    assert "RANK" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--tile", "demo/virginia/112/112/999_999"], "999_999 has no embedding"),
        (["--point", "-75.9,37.9"], "No embedded test-vit tile contains"),
        (["--tile", "QUERY", "--bbox", "-75.60,37.55,-75.58,37.57"], "No test-vit embeddings in"),
        (["--tile", "QUERY", "--model", "softcon-rn50-s2"], "no embeddings of softcon-rn50-s2"),
        (["--k", "3"], "Give a query"),
        (["--tile", "QUERY", "--scope", "source"], "--scope source needs --source"),
    ],
)
def test_cli_user_mistakes_exit_2(
    embedded: tuple[Path, EmbedResult, EmbedResult],
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    fragment: str,
) -> None:
    db, va, _ = embedded
    options = [_query_tile(va) if o == "QUERY" else o for o in options]
    model = [] if "--model" in options else ["--model", "test-vit"]
    assert main(["search", *model, *options, "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("softmap: ") and err.count("\n") == 1 and fragment in err
