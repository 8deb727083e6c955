"""Outbound sync to Segment's HTTP Tracking API (CONTRACT section 8): not built yet.

The last task of segment_rollups calls sync_all(); until the outbound issue lands it sends
nothing and logs which connections have outbound enabled.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def sync_all(database_url: str | None = None) -> dict:
    """Send what changed for every enabled outbound connection; returns per-connection counts."""
    from segment_elt import db

    with db.connect(database_url) as conn:
        enabled = [r[0] for r in conn.execute("select connection_id from control.outbound where enabled")]
    if not enabled:
        log.info("outbound sync: no connection has outbound enabled")
    return {connection_id: {"sent": 0} for connection_id in enabled}
