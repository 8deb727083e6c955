"""The Segment page inside Airflow's UI (plugins/segment_page.py registers it; docs/ui.md)."""
