"""The vector index kept beside the cache: unit vectors, tile ids and the HNSW graph on disk.

Building an HNSW graph over a million vectors takes about 11 minutes on 2 cores, so a graph
that lived only in its process would be rebuilt by every fresh CLI call and app start. An
:class:`IndexStore` keeps it in a folder beside the DuckDB file (``softmap.duckdb.index/``), one
sub-folder per embedding set::

    set-3/manifest.json        what the files hold and which table version they match
    set-3/vectors-2.f32        unit-normalised float32 rows (memory-mapped, append-only)
    set-3/ids-2.txt            the tile id of each row, one a line (append-only)
    set-3/graph-2-1000000.usearch   the usearch graph over the first rows (viewed, not loaded)

The manifest is *keyed* by the embedding set (id, model, preprocessing hash, dimension and the
set's creation time, so a cache file replaced by another never matches) and by the *data version*
of the set's table it reflects (row count and newest ``created_at``). Readers compare that
version with the table before every use and never serve rows the table no longer has (see
:func:`backend.search.index.sync_index`).

Writes are crash-safe and shared between processes: writers hold an ``flock`` on ``lock``; rows
are appended after truncating the files to what the manifest counts (a crashed writer's partial
rows are dropped); a graph is written under a new name; the manifest is replaced atomically last.
A process that has mapped older files keeps reading them (Linux keeps unlinked files alive).
When the folder cannot be written (a read-only file system) the index simply stays in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

#: Bumped when the layout changes: older folders are rebuilt, never misread.
FORMAT = 1


@dataclass(frozen=True)
class SetIdentity:
    """What names an embedding set beyond its number (a recreated set never matches)."""

    set_id: int
    model_id: str
    preprocessing_hash: str
    dim: int
    created: str


@dataclass(frozen=True)
class Manifest:
    """The contents of one set's folder.

    Attributes:
        identity: the embedding set the files belong to.
        generation: number of the vectors/ids files (a rebuild starts a new generation).
        rows: valid rows of the vectors and ids files (anything after them is a crashed write).
        ids_bytes: valid bytes of the ids file.
        table_rows, table_newest: the version of the set's table these rows reflect.
        dead: rows whose tiles left the table (kept in the files, never returned).
        graph: file name of the saved graph, if any, and how many first rows it holds.
        hnsw: the graph's parameters (a graph of other parameters is not reused).
    """

    identity: SetIdentity
    generation: int
    rows: int
    ids_bytes: int
    table_rows: int
    table_newest: int | None
    dead: tuple[int, ...] = ()
    graph: str | None = None
    graph_rows: int = 0
    hnsw: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT

    @property
    def vectors_file(self) -> str:
        return f"vectors-{self.generation}.f32"

    @property
    def ids_file(self) -> str:
        return f"ids-{self.generation}.txt"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["dead"] = list(self.dead)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(**{**data, "identity": SetIdentity(**data["identity"]),
                      "dead": tuple(data.get("dead", ()))})  # fmt: skip


def index_folder(cache_path: Path) -> Path:
    """The folder beside a cache file that holds its vector indexes."""
    return cache_path.with_name(cache_path.name + ".index")


class IndexStore:
    """One embedding set's index files (see the module docstring).

    Args:
        folder: The set's folder (created on first write).
        identity: The set the files must belong to.
    """

    def __init__(self, folder: Path, identity: SetIdentity) -> None:
        self.folder = folder
        self.identity = identity

    @classmethod
    def beside(cls, cache_path: Path, identity: SetIdentity) -> IndexStore:
        return cls(index_folder(cache_path) / f"set-{identity.set_id}", identity)

    def path(self, name: str) -> Path:
        return self.folder / name

    # --- reading ----------------------------------------------------------------------------
    def manifest(self) -> Manifest | None:
        """The manifest if it exists, is readable and belongs to this set; else None."""
        try:
            data = json.loads(self.path("manifest.json").read_text())
            found = Manifest.from_json(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as e:
            log.warning("Ignoring an unreadable vector index in %s: %s", self.folder, e)
            return None
        if found.format != FORMAT or found.identity != self.identity:
            return None
        return found

    def vectors(self, m: Manifest) -> NDArray[np.float32]:
        """The manifest's rows, memory-mapped read-only (``[rows, dim]``)."""
        if m.rows == 0:
            return np.empty((0, self.identity.dim), dtype=np.float32)
        mapped = np.memmap(self.path(m.vectors_file), dtype=np.float32, mode="r",
                           shape=(m.rows, self.identity.dim))  # fmt: skip
        return mapped

    def ids(self, m: Manifest) -> list[str]:
        """The manifest's tile ids, in row order."""
        with self.path(m.ids_file).open("rb") as f:
            text = f.read(m.ids_bytes).decode()
        ids = text.split("\n")[: m.rows]
        if len(ids) != m.rows:
            raise OSError(f"{self.path(m.ids_file)} holds fewer ids than its manifest says")
        return ids

    def view_graph(self, m: Manifest) -> Any:
        """The saved graph memory-mapped (immutable), or None when there is none."""
        if m.graph is None:
            return None
        from usearch.index import Index

        return Index.restore(str(self.path(m.graph)), view=True)

    def load_graph(self, m: Manifest) -> Any:
        """The saved graph read into memory (mutable: rows can be added)."""
        from usearch.index import Index

        assert m.graph is not None
        return Index.restore(str(self.path(m.graph)), view=False)

    # --- writing (callers hold :meth:`lock`) ------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock on the set's folder across processes.

        Raises:
            OSError: the folder cannot be created or written.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path("lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def start_generation(
        self, previous: Manifest | None, table_rows: int, table_newest: int | None
    ) -> Manifest:
        """An empty manifest of a new generation (a rebuild); files are created on append."""
        generation = (previous.generation + 1) if previous is not None else 1
        m = Manifest(self.identity, generation, 0, 0, table_rows, table_newest)
        for name in (m.vectors_file, m.ids_file):
            self.path(name).write_bytes(b"")
        return m

    def append(self, m: Manifest, ids: Sequence[str], unit: NDArray[np.float32]) -> Manifest:
        """Append rows after the manifest's (dropping any partial rows of a crashed writer)."""
        if not len(ids):
            return m
        blob = ("".join(f"{t}\n" for t in ids[:-1]) + ids[-1]).encode()
        if m.rows:
            blob = b"\n" + blob
        vec = np.ascontiguousarray(unit, dtype=np.float32)
        for name, size, data in ((m.vectors_file, m.rows * self.identity.dim * 4, vec.tobytes()),
                                 (m.ids_file, m.ids_bytes, blob)):  # fmt: skip
            with self.path(name).open("r+b" if self.path(name).exists() else "wb") as f:
                f.truncate(size)
                f.seek(size)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        return replace(m, rows=m.rows + len(ids), ids_bytes=m.ids_bytes + len(blob))

    def save_graph(self, m: Manifest, graph: Any, graph_rows: int, hnsw: dict[str, Any]
                   ) -> Manifest:  # fmt: skip
        """Write a graph over the manifest's first ``graph_rows`` rows under a new name."""
        name = f"graph-{m.generation}-{graph_rows}.usearch"
        tmp = self.path(name + ".tmp")
        graph.save(str(tmp))
        os.replace(tmp, self.path(name))
        return replace(m, graph=name, graph_rows=graph_rows, hnsw=dict(hnsw))

    def commit(self, m: Manifest, previous: Manifest | None) -> None:
        """Make ``m`` the manifest (atomically), then delete files no manifest names."""
        tmp = self.path("manifest.json.tmp")
        tmp.write_text(json.dumps(m.to_json()))
        os.replace(tmp, self.path("manifest.json"))
        keep = {"manifest.json", "lock", m.vectors_file, m.ids_file, m.graph}
        if previous is None or previous.generation != m.generation or previous.graph != m.graph:
            for p in self.folder.iterdir():
                if p.name not in keep and not p.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        p.unlink()

    def size_bytes(self) -> int:
        """Bytes of the set's files on disk."""
        if not self.folder.exists():
            return 0
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())
