"""A root middleware that puts astronomer-cosmos' dbt docs (/cosmos/...) behind Airflow's auth manager.

cosmos serves the docs it is configured with (AIRFLOW__COSMOS__DBT_DOCS_PROJECTS) to anyone who
can reach the API server; the docs show every model's SQL and columns, so here they need what
the Segment page needs: a signed-in user with DAG read access (401 / 403 otherwise).
"""

from __future__ import annotations

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.core_api.security import resolve_user_from_token
from fastapi import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

DBT_DOCS_PREFIX = "/cosmos/"


def route_path(scope) -> str:
    """The path Airflow routes: under a base_url path (root_path '/airflow'), the request path without it."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(f"{root}/") else path


class RequireDagReader:
    def __init__(self, app, prefix: str = DBT_DOCS_PREFIX):
        self.app, self.prefix = app, prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and route_path(scope).startswith(self.prefix):
            request = Request(scope)
            scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
            token = credentials if scheme.lower() == "bearer" else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
            try:
                user = await resolve_user_from_token(token)
                if not get_auth_manager().is_authorized_dag(method="GET", user=user):
                    raise HTTPException(403, "Forbidden")
            except HTTPException as exc:
                await JSONResponse({"detail": exc.detail}, status_code=exc.status_code)(scope, receive, send)
                return
        await self.app(scope, receive, send)
