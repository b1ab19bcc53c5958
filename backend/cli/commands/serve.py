"""``softmap serve``: the HTTP API (FastAPI + uvicorn) over the cache and the models."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from backend.cli.common import add_db_option, invalid

ORDER = 90


def register(sub: Any) -> None:
    s = sub.add_parser(
        "serve",
        help="serve the HTTP API (OpenAPI docs at /docs); other softmap commands find it",
        description="Run SoftMap as a service that owns the cache file and the models: "
        "notebooks, scripts and other machines call it over HTTP (backend.client), and "
        "`softmap runs/embed/search` on the same --db go through it. Long work runs as "
        "resumable jobs. Loopback only unless --host is given with a --token. See "
        "docs/service.md.",
    )
    s.add_argument("--host", help="bind address (default 127.0.0.1; others need --token)")
    s.add_argument("--port", type=int, help="port (default 8600; 0 = any free port)")
    s.add_argument(
        "--token",
        help="bearer token clients must send (default: SOFTMAP_SERVER_TOKEN); prefer the "
        "environment variable, a command line is visible to other users",
    )
    s.add_argument("--data-dir", type=Path, help="uploads and outputs (default: <db>/../service)")
    s.add_argument(
        "--no-resume", action="store_true", help="leave interrupted jobs interrupted at start"
    )
    add_db_option(s)
    s.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from backend.server.config import ServerConfig
    from backend.server.run import serve
    from backend.service import SoftMapError

    try:
        config = ServerConfig()
    except ValidationError as e:
        first = e.errors()[0]
        name = "SOFTMAP_SERVER_" + str(first["loc"][-1]).upper() if first["loc"] else "settings"
        raise SoftMapError(f"{name}: {first['msg']}.", title="Invalid setting") from None
    updates: dict[str, Any] = {}
    if args.host is not None:
        updates["host"] = args.host
    if args.port is not None:
        updates["port"] = args.port
    if args.token is not None:
        updates["token"] = args.token
    if args.data_dir is not None:
        updates["data_dir"] = args.data_dir
    if args.db is not None:
        updates["db_path"] = args.db
    if args.no_resume:
        updates["resume_interrupted"] = False
    try:
        config = ServerConfig.model_validate({**config.model_dump(), **updates})
    except ValidationError as e:
        first = e.errors()[0]
        name = str(first["loc"][-1]).replace("_", "-") if first["loc"] else "options"
        raise invalid(f"--{name}: {first['msg']}.") from None
    serve(config)
    return 0
