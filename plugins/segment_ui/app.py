"""The Segment page: a FastAPI app the Airflow API server mounts at /segment (docs/ui.md).

Every route is authorised by Airflow's auth manager: reading needs DAG read access, Reconcile
needs DAG run create access on segment_reconcile, editing an allowlist or recording a privacy
regulation needs DAG edit access on segment_rollups (what reaches the rollups); a deletion then
triggers segment_privacy as the signed-in user. Not signed in: 401;
signed in without the permission: 403. The data comes from page_queries, beside it.
"""

from __future__ import annotations

from contextlib import contextmanager

import psycopg
from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from segment_elt import db
from segment_elt.control import privacy, resolution
from segment_elt.control.lag import marts_lag
from segment_elt.dag_ids import PRIVACY, RECONCILE, ROLLUPS
from segment_elt.errors import UserError
from segment_elt.pipeline import airflow_api, reconcile
from segment_elt.settings import settings
from segment_ui import page_queries, views
from segment_ui.links import page_url, url

READ = Depends(requires_access_dag("GET"))
TRIGGER = Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=RECONCILE))
EDIT = Depends(requires_access_dag("PUT", param_dag_id=ROLLUPS))
REFRESH_S = 3
REGULATIONS_SHOWN = 200
REGULATION_TYPES = {  # the form's choice -> the regulation type (docs/privacy.md)
    "suppress": privacy.SUPPRESS,
    "unsuppress": privacy.UNSUPPRESS,
    "delete": privacy.DELETE_ONLY,
    "delete+suppress": privacy.SUPPRESS_WITH_DELETE,
}


class DatabaseUnavailable(Exception):
    """The project's database (DATABASE_URL) does not answer: 503, in one line."""


@contextmanager
def database():
    try:
        conn = db.connect(timeout_s=5, application_name="segment-ui")
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"the database is not reachable: {str(exc).strip().splitlines()[-1]}") from None
    with conn:
        yield conn


def create_app() -> FastAPI:
    app = FastAPI(title="Segment", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=views.STATIC), name="static")

    def one_line(request: Request, message: str, status: int):
        json_route = getattr(request.scope.get("route"), "path", "").startswith("/api/")
        if json_route or "json" in request.headers.get("accept", ""):
            return JSONResponse({"error": message}, status_code=status)
        return HTMLResponse(views.error_page(message), status_code=status)

    app.add_exception_handler(UserError, lambda request, exc: one_line(request, str(exc), 400))
    app.add_exception_handler(DatabaseUnavailable, lambda request, exc: one_line(request, str(exc), 503))

    @app.get("/", dependencies=[READ])
    def index():
        return RedirectResponse(page_url("/connections"), status_code=303)

    @app.get("/connections", response_class=HTMLResponse, dependencies=[READ])
    def connections_page():
        with database() as conn:
            return views.connections_page(
                page_queries.connections_overview(conn), page_queries.last_rollups_run(conn), marts_lag(conn)
            )

    @app.get("/api/connections", dependencies=[READ])
    def connections_json():
        with database() as conn:
            return JSONResponse(
                views.jsonable(
                    {
                        "connections": page_queries.connections_overview(conn),
                        "last_rollups_run": page_queries.last_rollups_run(conn),
                        "marts_lag": marts_lag(conn).as_dict(),
                    }
                )
            )

    @app.get("/connections/{connection_id}/debugger", response_class=HTMLResponse, dependencies=[READ])
    def debugger_page(connection_id: str, event_name: str = "", show: str = "all"):
        with database() as conn:
            data = page_queries.debugger(conn, connection_id, event_name or None, show)
            return views.debugger_page(
                data,
                event_name,
                show,
                page_queries.allowlist(conn, connection_id),
                page_queries.seen_event_names(conn, connection_id),
                REFRESH_S,
            )

    @app.get("/api/connections/{connection_id}/debugger", dependencies=[READ])
    def debugger_json(connection_id: str, event_name: str = "", show: str = "all"):
        with database() as conn:
            return JSONResponse(views.jsonable(page_queries.debugger(conn, connection_id, event_name or None, show)))

    @app.get("/accounts/{org_id}/{account_id}", response_class=HTMLResponse, dependencies=[READ])
    def account_page(org_id: str, account_id: str, event_name: str = ""):
        with database() as conn:
            return views.account_page(page_queries.account_view(conn, org_id, account_id), event_name or None)

    @app.get("/api/accounts/{org_id}/{account_id}", dependencies=[READ])
    def account_json(org_id: str, account_id: str):
        with database() as conn:
            return JSONResponse(views.jsonable(page_queries.account_view(conn, org_id, account_id)))

    @app.get("/identity", response_class=HTMLResponse, dependencies=[READ])
    def identity_page(days: int = resolution.DEFAULT_DAYS):
        with database() as conn:
            reports, missing = [], None
            for item in page_queries.connections.list_connections(conn):
                try:
                    reports.append(resolution.report(conn, item["connection_id"], days))
                except UserError as exc:
                    missing = str(exc)
                    break
            return views.identity_page(reports, days, missing)

    @app.get("/identity/rules", response_class=HTMLResponse, dependencies=[READ])
    def identity_rules_page():
        rules = settings().dbt_project_dir / "seeds" / "identity_rules.csv"
        return views.rules_page(rules.read_text() if rules.exists() else None)

    @app.get("/outbound", response_class=HTMLResponse, dependencies=[READ])
    def outbound_page():
        with database() as conn:
            return views.outbound_page(page_queries.outbound_view(conn))

    @app.post("/connections/{connection_id}/reconcile", dependencies=[TRIGGER])
    def reconcile_action(
        connection_id: str,
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Depends(HTTPBearer(auto_error=False)),
    ):
        with database() as conn:
            page_queries.connections.require_live(conn, connection_id)
        token = bearer.credentials if bearer else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
        run_id = reconcile.trigger_as(reconcile.api_url(), token, connection_id)
        run_url = url("/dags/{}/runs/{}", RECONCILE, run_id)
        if "json" in request.headers.get("accept", ""):
            return JSONResponse({"dag_id": RECONCILE, "dag_run_id": run_id, "url": run_url})
        return HTMLResponse(views.reconcile_page(connection_id, run_id, run_url))

    @app.post("/connections/{connection_id}/allowlist", dependencies=[EDIT])
    def allowlist_action(connection_id: str, request: Request, add: str = Form(""), remove: str = Form("")):
        with database() as conn:
            names = page_queries.connections.allowlist(
                conn, connection_id, add=[add] if add else [], remove=[remove] if remove else []
            )
        if "json" in request.headers.get("accept", ""):
            return JSONResponse({"connection_id": connection_id, "allowlist": names})
        return RedirectResponse(page_url("/connections/{}/debugger", connection_id, show="all"), status_code=303)

    @app.get("/privacy", response_class=HTMLResponse, dependencies=[READ])
    def privacy_page(recorded: str = "", kind: str = "", run_id: str = "", not_started: str = ""):
        with database() as conn:
            return views.privacy_page(
                privacy.status(conn, limit=REGULATIONS_SHOWN),
                privacy.suppressed_counts(conn),
                REGULATION_TYPES,
                recorded,
                REGULATION_TYPES.get(kind),
                run_url=url("/dags/{}/runs/{}", PRIVACY, run_id) if run_id else "",
                run_id=run_id,
                not_started=not_started,
            )

    @app.get("/api/privacy", dependencies=[READ])
    def privacy_json():
        with database() as conn:
            return JSONResponse(
                views.jsonable(
                    {
                        "regulations": privacy.status(conn, limit=REGULATIONS_SHOWN),
                        "suppressed": privacy.suppressed_counts(conn),
                    }
                )
            )

    @app.post("/privacy", dependencies=[EDIT])
    def privacy_action(
        request: Request,
        user: GetUserDep,
        org_id: str = Form(""),
        kind: str = Form(""),
        user_ids: str = Form(""),
        bearer: HTTPAuthorizationCredentials | None = Depends(HTTPBearer(auto_error=False)),
    ):
        """Record regulations as `segment-elt privacy suppress / unsuppress / delete` do; a deletion is
        then carried out by segment_privacy, triggered here as the signed-in user (when Airflow refuses,
        its next hourly run does it)."""
        if kind not in REGULATION_TYPES:
            raise UserError(f"unknown regulation {kind!r}: one of {', '.join(REGULATION_TYPES)}")
        ids = [line for line in user_ids.splitlines() if line.strip()]
        if not ids:
            raise UserError("name at least one userId, one per line")
        regulation_type = REGULATION_TYPES[kind]
        with database() as conn:
            made = privacy.request(conn, org_id.strip(), regulation_type, ids, requested_by=user.get_name())
        run_id, not_started = "", ""
        if regulation_type in privacy.DELETING:
            token = bearer.credentials if bearer else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
            try:
                run_id = airflow_api.trigger_as(settings().airflow_api_url, token or "", PRIVACY, {})
            except UserError as exc:
                not_started = str(exc)
        if "json" in request.headers.get("accept", ""):
            state = "pending" if regulation_type in privacy.DELETING else "done"
            answer = {"regulation_ids": made, "regulation_type": regulation_type, "state": state}
            if regulation_type in privacy.DELETING:
                answer |= {"dag_id": PRIVACY, "dag_run_id": run_id or None, "not_started": not_started or None}
            return JSONResponse(answer)
        shown = page_url(
            "/privacy", recorded=",".join(map(str, made)), kind=kind, run_id=run_id, not_started=not_started
        )
        return RedirectResponse(shown, status_code=303)

    return app
