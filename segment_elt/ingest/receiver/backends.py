"""Per-process handles to PostgreSQL and the archive, opened lazily after gunicorn forks."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psycopg

from segment_elt import db
from segment_elt.control import crypto
from segment_elt.ingest.archive import Archive, open_archive
from segment_elt.settings import Settings


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL could not be reached or did not answer in time."""


@dataclass(frozen=True)
class Connection:
    connection_id: str
    org_id: str
    secret: str


class Backends:
    def __init__(self, database_url: str, archive_url: str, settings: Settings):
        self.database_url, self.archive_url, self.settings = database_url, archive_url, settings
        self._local = threading.local()
        self._archive: Archive | None = None
        # connection_id -> Connection. Safe to cache: every request's token take re-checks
        # in PostgreSQL that the connection still exists, so a deletion bites at once.
        self._connections: dict[str, Connection] = {}

    @property
    def archive(self) -> Archive:
        if self._archive is None:
            self._archive = open_archive(self.archive_url, self.settings.archive_timeout_s)
        return self._archive

    def _fresh(self) -> psycopg.Connection:
        try:
            conn = db.connect(self.database_url, timeout_s=self.settings.db_timeout_s)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(_first_line(exc)) from exc
        self._local.conn = conn
        return conn

    def run(self, fn):
        """Run fn(connection) on this thread's connection.

        A connection that broke while idle (the server restarted) is replaced and fn retried
        once, so recovery needs no failed request; otherwise a lost or stuck server becomes
        DatabaseUnavailable (the caller answers 503) and a fresh connection is made next time.
        """
        conn = getattr(self._local, "conn", None)
        reused = conn is not None and not conn.closed and not conn.broken
        for attempt in (1, 2):
            if conn is None or conn.closed or conn.broken:
                conn = self._fresh()
            try:
                return fn(conn)
            except (psycopg.OperationalError, psycopg.errors.QueryCanceled, psycopg.InterfaceError) as exc:
                conn.close()
                self._local.conn = conn = None
                if not (reused and attempt == 1 and not isinstance(exc, psycopg.errors.QueryCanceled)):
                    raise DatabaseUnavailable(_first_line(exc)) from exc

    def connection(self, connection_id: str) -> Connection | None:
        cached = self._connections.get(connection_id)
        if cached is not None:
            return cached
        row = self.run(
            lambda c: c.execute(
                "select org_id, secret_enc from control.connections where connection_id = %s and deleted_at is null",
                (connection_id,),
            ).fetchone()
        )
        if row is None:
            return None
        found = Connection(connection_id, row[0], crypto.decrypt(row[1]))
        self._connections[connection_id] = found
        return found

    def forget(self, connection_id: str) -> None:
        self._connections.pop(connection_id, None)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
