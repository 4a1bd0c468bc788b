"""Dependencies of the inference API, declared once as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from deploy.auth import Identity
from deploy.service import Service

_bearer = HTTPBearer(auto_error=False, description="An API key from `fedwarden admin issue-key`.")


async def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_identity(
    request: Request,
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """The caller. Missing, malformed and rate-limited keys are refused on the event loop;
    the rest (a revocation check, and for a key not seen lately a store round trip and a
    deliberately slow hash) run in a worker thread."""
    token = f"Bearer {credentials.credentials}" if credentials is not None else None
    client = request.client.host if request.client is not None else "unknown"
    service.authenticator.screen(token, client=client)
    return await run_in_threadpool(service.authenticator.identify, token, client=client)


CurrentIdentity = Annotated[Identity, Depends(get_identity)]
