"""The DAG ids, in one place: DAG files, run records, the CLI and the REST calls use these."""

ROLLUPS = "segment_rollups"
DAILY = "segment_daily"
REPLAY = "segment_replay"
RECONCILE = "segment_reconcile"
MAINTENANCE = "segment_maintenance"
PRIVACY = "segment_privacy"
# The DAGs whose runs write dbt models; their 'running' records hold the writer role.
WRITERS = (ROLLUPS, DAILY, RECONCILE, REPLAY, PRIVACY)
