"""The small file next to the cache that tells other processes a service owns it.

``<db>.service.json`` holds the service's URL, PID and (when one is set) its token, readable by
the owner only. It is written when the service starts listening and removed on a clean exit; a
file whose process is gone (a crash, ``kill -9``) is stale and ignored (and removed when found).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path


@dataclass(frozen=True)
class Locator:
    url: str
    pid: int
    db: str
    started_at: str
    token: str | None = None


#: The service a client (and the CLI) uses when set, and its bearer token.
URL_ENV = "SOFTMAP_BACKEND_URL"
TOKEN_ENV = "SOFTMAP_BACKEND_TOKEN"


def locator_path(db_path: Path) -> Path:
    db = Path(db_path)
    return db.with_name(db.name + ".service.json")


def write_locator(db_path: Path, url: str, token: str | None = None) -> Locator:
    """Record that this process serves ``db_path`` at ``url`` (atomic replace, mode 0600)."""
    found = Locator(
        url=url.rstrip("/"),
        pid=os.getpid(),
        db=str(Path(db_path).resolve()),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        token=token,
    )
    path = locator_path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(found), f)
    tmp.replace(path)
    return found


def remove_locator(db_path: Path) -> None:
    """Remove the locator if it is this process's own (never another service's)."""
    path = locator_path(db_path)
    found = _read(path)
    if found is not None and found.pid == os.getpid():
        path.unlink(missing_ok=True)


def read_locator(db_path: Path) -> Locator | None:
    """The live service on ``db_path``, or None (no file, unreadable, or its process is gone)."""
    path = locator_path(db_path)
    found = _read(path)
    if found is None:
        return None
    if not pid_alive(found.pid):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return None
    return found


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped) still answers kill(0): check /proc where there is one.
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def _read(path: Path) -> Locator | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Locator(
            url=str(raw["url"]),
            pid=int(raw["pid"]),
            db=str(raw.get("db", "")),
            started_at=str(raw.get("started_at", "")),
            token=raw.get("token"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
