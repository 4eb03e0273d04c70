"""The hub's HTTP API: ``create_app(hub)``, and what custom routes need.

A custom route (``api/routes.py`` at the project root, or any module in ``HUB_API_ROUTES``)
gets the hub and an authenticated key from the same dependencies the built-in routes use::

    from typing import Annotated
    from fastapi import APIRouter, Depends
    from hub import Hub
    from hub.api import ApiKey, get_hub, require_scope

    router = APIRouter()

    @router.get("/workflow")
    async def run_it(hub: Annotated[Hub, Depends(get_hub)],
                     key: Annotated[ApiKey, Depends(require_scope("run"))]) -> ...
"""

from hub.api.app import create_app as create_app
from hub.api.app import load_routes as load_routes
from hub.api.auth import api_trigger as api_trigger
from hub.api.auth import get_hub as get_hub
from hub.api.auth import get_service as get_service
from hub.api.auth import require_scope as require_scope
from hub.api.keys import ApiKey as ApiKey
from hub.api.keys import Scope as Scope
from hub.api.keys import create_key as create_key
from hub.api.keys import list_keys as list_keys
from hub.api.keys import revoke_key as revoke_key
from hub.api.service import HubService as HubService
from hub.api.signatures import sign as sign
from hub.api.signatures import signed_headers as signed_headers
from hub.settings import ApiSettings as ApiSettings

__all__ = [
    "ApiKey",
    "ApiSettings",
    "HubService",
    "Scope",
    "api_trigger",
    "create_app",
    "create_key",
    "get_hub",
    "get_service",
    "list_keys",
    "load_routes",
    "require_scope",
    "revoke_key",
    "sign",
]
