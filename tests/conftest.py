"""Shared fixtures: the bundled demo scenes, small regions on them, a fresh cache per test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from backend.embedding.pipeline import EmbedResult
from backend.imagery.regions import Region, parse_bbox
from backend.imagery.sources import SceneSource, SourceCatalog, demo_catalog
from backend.settings import ASSETS_DIR, PROJECT_ROOT, Settings

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

#: About 3.4 km × 3.3 km of farmland, marsh and town on the Eastern Shore of Virginia.
VIRGINIA_SMALL_BBOX = "-75.66,37.64,-75.625,37.67"
#: About 2 km × 1.5 km of fields and the Beetzsee shore near Brandenburg an der Havel.
BRANDENBURG_SMALL_BBOX = "12.60,52.48,12.63,52.495"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the network: weights come from tmp files or are built in."""
    monkeypatch.setenv("SOFTMAP_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SOFTMAP_WARM_UP", "0")  # no JIT compiler beside the app's test runs
    from backend.settings import get_settings

    get_settings.cache_clear()


@pytest.fixture(scope="session")
def catalog() -> SourceCatalog:
    return demo_catalog(ASSETS_DIR)


@pytest.fixture(scope="session")
def virginia(catalog: SourceCatalog) -> SceneSource:
    return catalog.get("demo/virginia")


@pytest.fixture(scope="session")
def brandenburg(catalog: SourceCatalog) -> SceneSource:
    return catalog.get("demo/brandenburg")


@pytest.fixture
def small_region() -> Region:
    return parse_bbox(VIRGINIA_SMALL_BBOX)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "cache.duckdb", models_dir=tmp_path / "models", offline=True)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cache.duckdb"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The original per-band scenes in ../shared/data (not needed by the product)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: comparisons with the original band files skipped")
    return SHARED_DATA


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    return Path(os.environ.get("VIRTUAL_ENV", PROJECT_ROOT / ".venv")) / "bin"


_HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


@contextmanager
def another_process_holding(db: Path) -> Iterator[int]:
    """Run a second process that holds DuckDB's write lock on ``db``; yields its PID."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def embed_test_vit(db: Path, source: SceneSource, bbox: str) -> EmbedResult:
    """Embed a bbox of ``source`` with ``test-vit`` into the cache at ``db``."""
    from backend.embedding.pipeline import embed_region
    from backend.models import create_model
    from backend.models.inference import EmbeddingEngine
    from backend.store.cache import EmbeddingCache

    model = create_model("test-vit")
    settings = Settings(db_path=db, models_dir=db.parent / "models", offline=True)
    with EmbeddingCache(db) as cache:
        return embed_region(
            parse_bbox(bbox),
            source,
            model,
            cache,
            engine=EmbeddingEngine(model, device="cpu", batch_size=16),
            settings=settings,
        )


@pytest.fixture(scope="module")
def embedded_db(tmp_path_factory: pytest.TempPathFactory, virginia: SceneSource) -> Path:
    """A cache holding the 16 test-vit tiles of the small Virginia region."""
    db = tmp_path_factory.mktemp("embedded") / "embedded.duckdb"
    assert embed_test_vit(db, virginia, VIRGINIA_SMALL_BBOX).tiles == 16
    return db
