"""FastAPI dependencies shared by the routers: the service state and the token check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from backend.server.security import token_matches
from backend.server.state import ServiceState


async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.softmap
    return state


State = Annotated[ServiceState, Depends(get_state)]


async def require_token(request: Request) -> None:
    """Refuse a request without the bearer token when the service has one.

    (Dependencies and endpoints that never block are ``async``: they run on the event loop, not
    in the thread pool where DuckDB reads queue behind each other under load.)
    """
    state: ServiceState = request.app.state.softmap
    token = state.config.token
    if token and not token_matches(request.headers.get("authorization"), token):
        raise HTTPException(
            status_code=401,
            detail="This service needs a token: send 'Authorization: Bearer TOKEN' "
            "(softmap: --token or SOFTMAP_BACKEND_TOKEN).",
            headers={"WWW-Authenticate": "Bearer"},
        )
