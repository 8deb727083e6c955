"""The Segment page in Airflow's UI: the FastAPI app of segment_ui at /segment, with nav entries, and the
dbt docs of astronomer-cosmos' plugin behind the auth manager (docs/ui.md)."""

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin
from segment_ui.app import create_app
from segment_ui.docs_guard import RequireDagReader
from segment_ui.links import NAV, PREFIX, page_url


class SegmentPagePlugin(AirflowPlugin):
    name = "segment_page"
    fastapi_apps: ClassVar[list[dict]] = [{"app": create_app(), "url_prefix": PREFIX, "name": "Segment page"}]
    fastapi_root_middlewares: ClassVar[list[dict]] = [
        {"middleware": RequireDagReader, "name": "dbt docs need a DAG reader"}
    ]
    external_views: ClassVar[list[dict]] = [
        {
            "name": name,
            "href": page_url(route),
            "url_route": f"segment-{route.strip('/')}",
            "category": "Segment",
            "destination": "nav",
        }
        for name, route in NAV
    ]
