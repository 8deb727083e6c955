"""segment_reconcile refuses a deleted connection as the CLI and the page do (connections.require_live)."""

from __future__ import annotations

from segment_elt.control import connections


def test_reconcile_refuses_a_deleted_connection(dags, db, acme, capsys):
    connections.delete(db, acme.connection_id)
    result = dags["segment_reconcile"].test(run_conf={"connection_id": acme.connection_id})
    assert result.state == "failed"
    states = {ti.task_id: ti.state for ti in result.get_task_instances()}
    assert states["check"] == "failed"
    assert f"no connection {acme.connection_id!r}: see `segment-elt connections list`" in capsys.readouterr().out
    assert db.execute("select count(*) from control.pipeline_runs").fetchone()[0] == 0
