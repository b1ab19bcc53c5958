"""App server time over a whole analysed demo scene: every interaction, and how much is the map.

    .venv/bin/python bench/bench_app.py [--pages explore,similar,embedding_space,my_classes]
        [--repeat 2] [--modes before,after]

A cache holding the 900 ``softmap-default`` tiles of the whole Virginia demo scene is built from
the real tile plan (``prepare_run``) with synthetic clustered 384-d vectors in place of the model's
(the app's work after analysis does not depend on the values; embedding the scene for real takes
~25 min on these CPUs). Each page is then driven with ``streamlit.testing.v1.AppTest`` (the
script runs in this process, so its wall time is the server time of a rerun): the first run
(cold ``st.cache_data``), a plain rerun, and the page's interactions. ``map_s`` is the time spent
rendering and sending the Leaflet map (``app.map_view.show_map``) in that run. ``--modes``:
``before`` renders the map on every rerun (``map_view.REUSE_RENDERS = False``, as before the
render was kept), ``after`` reuses the render while the map's content and layers stay the same;
both run in one process, so their ratio holds on a loaded machine.

Results are printed and written to ``bench/results/app.json``. On a shared machine compare the
map's share, not absolute seconds, across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

SOURCE = "demo/virginia"
MODEL = "softmap-default"


def build_scene_cache(db: Path) -> tuple[int, str]:
    """The whole scene's tiles with synthetic embeddings; returns (tiles, scene bbox text)."""
    from shapely.geometry import shape

    from backend.embedding.pipeline import prepare_run
    from backend.imagery.regions import Region
    from backend.imagery.sources import demo_catalog
    from backend.models import create_model
    from backend.settings import Settings
    from backend.store.cache import EmbeddingCache

    source = demo_catalog().get(SOURCE)
    footprint = shape(source.summary()["footprint"])
    model = create_model(MODEL, pretrained=False)
    settings = Settings(db_path=db, max_region_km2=1e6, offline=True)
    with EmbeddingCache(db) as cache:
        run = prepare_run(Region(footprint), source, model, cache, settings=settings,
                          device="cpu", batch_size=32, precision="fp32")  # fmt: skip
        ids = [t.tile_id for t in run.todo]
        rng = np.random.default_rng(0)
        dim = model.meta.embed_dim
        centres = rng.normal(size=(12, dim))
        x = centres[rng.integers(0, 12, len(ids))] + 0.5 * rng.normal(size=(len(ids), dim))
        cache.write_embeddings(run.eset, ids, x.astype(np.float32), run_id=run.run_id,
                               run_progress=len(ids))  # fmt: skip
        cache.finish_run(run.run_id, status="done", computed=len(ids), seconds=1.0,
                         tiles_per_s=1.0)  # fmt: skip
    w, s, e, n = footprint.bounds
    return len(ids), f"{w:.4f},{s:.4f},{e:.4f},{n:.4f}"


class MapClock:
    """Seconds spent rendering the Leaflet map and sending it since the last :meth:`take`."""

    def __init__(self) -> None:
        import streamlit_folium

        import app.map_view as map_view

        self.spent = 0.0

        def timed(original: Callable[..., Any]) -> Callable[..., Any]:
            def run(*args: Any, **kwargs: Any) -> Any:
                t = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.spent += time.perf_counter() - t

            return run

        # show_map renders through _render (skipped when the map is reused) and sends the result
        # with st_folium's component function.
        map_view._render = timed(map_view._render)
        streamlit_folium._component_func = timed(streamlit_folium._component_func)

    def take(self) -> float:
        spent, self.spent = self.spent, 0.0
        return spent


def interactions(page: str, tile: str) -> list[tuple[str, Callable[[Any], Any]]]:
    """What a user does on each page after the first render."""
    steps: list[tuple[str, Callable[[Any], Any]]] = [("rerun", lambda at: at.run())]
    if page == "similar":
        steps += [
            ("k 10 -> 15", lambda at: at.slider(key="similar.k").set_value(15).run()),
            ("suppression off", lambda at: at.toggle(key="similar.suppress").set_value(False)
             .run()),
            ("threshold 0.5", lambda at: at.slider(key="similar.threshold").set_value(0.5).run()),
        ]  # fmt: skip
    return steps


def bench_page(db: Path, page: str, bbox: str, tile: str, clock: MapClock, repeat: int,
               mode: str) -> list[dict[str, object]]:  # fmt: skip
    from streamlit.testing.v1 import AppTest

    import app.map_view as map_view
    from backend.settings import get_settings

    map_view.REUSE_RENDERS = mode == "after"
    rows: list[dict[str, object]] = []
    for r in range(repeat):
        copy = db.with_name(f"{page}-{mode}-{r}.duckdb")
        shutil.copy(db, copy)
        os.environ["SOFTMAP_DB_PATH"] = str(copy)
        get_settings.cache_clear()
        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=900)
        for key, value in {"page": page, "model": MODEL, "source": SOURCE, "bbox": bbox}.items():
            at.query_params[key] = value
        if page == "similar":
            at.query_params["q"] = tile
        steps: list[tuple[str, Callable[[Any], Any]]] = [("first run", lambda at: at.run())]
        for name, step in steps + interactions(page, tile):
            clock.take()
            t = time.perf_counter()
            step(at)
            seconds = time.perf_counter() - t
            errors = [str(e.value)[:120] for e in at.exception]
            rows.append({"page": page, "mode": mode, "step": name, "repeat": r,
                         "server_s": round(seconds, 3),
                         "map_s": round(clock.take(), 3), "load": round(os.getloadavg()[0], 1),
                         "errors": errors})  # fmt: skip
            print(f"{mode:6s} {page:16s} {name:18s} {seconds:6.2f} s "
                  f"(map {rows[-1]['map_s']:.2f} s, "
                  f"load {rows[-1]['load']}) {errors[:1]}", flush=True)  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", default="explore,similar,embedding_space,my_classes")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--modes", default="before,after")
    args = ap.parse_args()
    os.environ.setdefault("SOFTMAP_OFFLINE", "1")
    os.environ["SOFTMAP_WARM_UP"] = "0"  # the numba warm-up thread would share the CPU
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "scene.duckdb"
        tiles, bbox = build_scene_cache(db)
        print(f"{tiles} tiles of {MODEL} over {SOURCE} ({bbox})", flush=True)
        from backend.store.cache import EmbeddingCache

        with EmbeddingCache(db, read_only=True) as cache, cache.cursor() as cur:
            row = cur.execute("SELECT tile_id FROM embeddings_1 ORDER BY tile_id").fetchall()
        tile = row[len(row) // 2][0]
        clock = MapClock()
        rows: list[dict[str, object]] = []
        modes = args.modes.split(",")
        for page in args.pages.split(","):
            for mode in modes:
                rows += bench_page(db, page, bbox, tile, clock, args.repeat, mode)
    summary: dict[str, dict[str, float]] = {}
    for page in args.pages.split(","):
        for mode in modes:
            later = [r for r in rows if (r["page"], r["mode"]) == (page, mode)
                     and r["step"] != "first run"]  # fmt: skip
            if later:
                server = statistics.median(float(r["server_s"]) for r in later)  # type: ignore[arg-type]
                share = statistics.median(float(r["map_s"]) / max(float(r["server_s"]), 1e-9)  # type: ignore[arg-type]
                                          for r in later)  # fmt: skip
                summary[f"{page} ({mode})"] = {"median_interaction_s": round(server, 3),
                                               "map_share": round(share, 3)}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"tiles": tiles, "load_avg_end": os.getloadavg(), "rows": rows, "summary": summary}
    (RESULTS / "app.json").write_text(json.dumps(out, indent=2))
    print("\n| page (mode) | median interaction s (server) | share in the map |")
    print("|---|---|---|")
    for page, s in summary.items():
        print(f"| {page} | {s['median_interaction_s']} | {s['map_share']} |")


if __name__ == "__main__":
    main()
