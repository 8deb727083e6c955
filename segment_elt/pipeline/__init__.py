"""What the DAGs run: planning and run records, dbt through cosmos, replay, reconcile, retention.

Owns control.pipeline_runs and the dbt project's runs. Imports ingest, control and the root;
the DAG files (dags/) and the CLI call it.
"""
