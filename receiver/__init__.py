"""The receiver's deployment entry points (gunicorn -c receiver/gunicorn.conf.py serves
`receiver:create_asgi_app()`; `receiver:create_app()` is the same app as plain Flask WSGI).

The app itself is segment_elt.ingest.receiver.
"""

from segment_elt.ingest.receiver import create_app
from segment_elt.ingest.receiver.asgi import create_asgi_app

__all__ = ["create_app", "create_asgi_app"]
