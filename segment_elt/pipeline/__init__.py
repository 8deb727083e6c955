"""What the DAGs run: planning and run records, dbt through cosmos, replay, reconcile, retention."""
