"""The receiver's deployment entry point, `receiver:create_app` (gunicorn -c receiver/gunicorn.conf.py).

The app itself is segment_elt.ingest.receiver; this name stays for existing deployments.
"""

from segment_elt.ingest.receiver import create_app

__all__ = ["create_app"]
