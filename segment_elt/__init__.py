"""segment-elt: Segment product events to customer-success data.

The subpackages follow the data:

- `ingest`: the hot path. The Flask receiver verifies Segment's signature, takes the org's
  tokens, writes the exact body to the archive and the envelope to raw.segment_events.
- `control`: the control plane. Orgs, connections and their secrets, allowlists, the host
  product's accounts and contacts, the schema migrations.
- `pipeline`: what the Airflow DAGs run. Planning and run records, the dbt runner and its
  cosmos task group, replay from the archive, reconcile, retention.
- `outbound`: computed traits, audiences and moments sent back to Segment.
- `local`: the embedded runtime of `make demo`, `make up` and the tests. Nothing outside it imports it.
- `cli`: the `segment-elt` command line, thin over the packages above.

Imports run only downward: the root modules (`settings` reads the environment, `db` opens
PostgreSQL connections, `errors` and `dag_ids` are the shared vocabulary) under control, under
ingest, under pipeline and outbound, under the cli, dags/, plugins/ and receiver/, with `local`
on top (tests/test_architecture.py checks the order).
"""
