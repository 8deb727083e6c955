"""Per-process handles to PostgreSQL and the archive, opened lazily after gunicorn forks."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psycopg

from segment_elt import db
from segment_elt.control import crypto, privacy
from segment_elt.ingest.archive import Archive, ArchiveUnavailable, open_archive
from segment_elt.settings import Settings


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL could not be reached or did not answer in time."""


# How long a process trusts its cached copy of a connection's secrets: a rotation's end (or a
# grace period running out) is seen within this; a new secret at once (see webhook.verified).
SECRETS_TTL_S = 10.0
# How long a process trusts its copy of an org's suppressed people (docs/privacy.md#suppression).
SUPPRESSIONS_TTL_S = 10.0


@dataclass(frozen=True)
class Connection:
    connection_id: str
    org_id: str
    secrets: tuple[str, ...]  # the current secret, then the previous one while it still verifies
    read_at: float = field(default_factory=time.monotonic)


class Backends:
    def __init__(self, database_url: str, archive_url: str, settings: Settings):
        self.database_url, self.archive_url, self.settings = database_url, archive_url, settings
        self._local = threading.local()
        self._archive: Archive | None = None
        # connection_id -> Connection, for SECRETS_TTL_S. A deletion bites at once anyway: every
        # request's token take re-checks in PostgreSQL that the connection still exists.
        self._connections: dict[str, Connection] = {}
        self._by_write_key: dict[str, Connection] = {}  # write key digest -> Connection, for SECRETS_TTL_S
        self._suppressed: dict[str, tuple[float, privacy.Suppressed | None]] = {}  # org -> (read at, people)
        self._not_linked: set[tuple[str, str]] = set()  # (org, anonymousId) found linked to someone else

    @property
    def archive(self) -> Archive:
        if self._archive is None:
            self._archive = open_archive(self.archive_url, self.settings.archive_timeout_s)
        return self._archive

    def warm_up(self) -> None:
        """Make this thread's database connection and the archive's client now rather than in a
        request (an S3 client takes ~0.5 s); a backend that is down is left for the requests."""
        try:
            self.run(lambda c: c.execute("select 1"))
            self.archive.check()
        except (DatabaseUnavailable, ArchiveUnavailable):
            pass

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

    def cached_connection(self, connection_id: str) -> Connection | None:
        """The connection if this process read it less than SECRETS_TTL_S ago, without any I/O."""
        return _fresh(self._connections.get(connection_id))

    def cached_connection_by_write_key(self, digest: str) -> Connection | None:
        """connection_by_write_key's answer if this process read it less than SECRETS_TTL_S ago, without any I/O."""
        return _fresh(self._by_write_key.get(digest))

    def connection(self, connection_id: str, reread_older_than_s: float = SECRETS_TTL_S) -> Connection | None:
        cached = self._connections.get(connection_id)
        if cached is not None and time.monotonic() - cached.read_at < reread_older_than_s:
            return cached
        found = self._read("connection_id = %s", connection_id)
        if found is None:
            self.forget(connection_id)
            return None
        self._connections[connection_id] = found
        return found

    def connection_by_write_key(self, digest: str) -> Connection | None:
        """The live connection whose tracking API write key has this SHA-256 digest, cached for
        SECRETS_TTL_S (a rotated-out key is refused within that; an unknown key is never cached)."""
        cached = _fresh(self._by_write_key.get(digest))
        if cached is not None:
            return cached
        found = self._read("write_key_sha256 = %s", digest)
        if found is None:
            self._by_write_key.pop(digest, None)
            return None
        self._by_write_key[digest] = found
        return found

    def _read(self, where: str, value: str) -> Connection | None:
        row = self.run(
            lambda c: c.execute(
                "select connection_id, org_id, secret_enc,"
                " case when previous_secret_until > now() then previous_secret_enc end"
                f" from control.connections where {where} and deleted_at is null",
                (value,),
            ).fetchone()
        )
        if row is None:
            return None
        return Connection(row[0], row[1], tuple(crypto.decrypt(token) for token in row[2:] if token))

    def suppressed(self, org_id: str) -> privacy.Suppressed | None:
        """The org's suppressed people, read at most every SUPPRESSIONS_TTL_S; None when it
        suppresses nobody (then nothing is hashed)."""
        read_at, found = self._suppressed.get(org_id, (-SUPPRESSIONS_TTL_S, None))
        if time.monotonic() - read_at >= SUPPRESSIONS_TTL_S:
            found = self.run(lambda c: privacy.suppressed_ids(c, org_id))
            self._suppressed[org_id] = (time.monotonic(), found)
        return found

    def suppress_linked(self, org_id: str, user_id: str, anonymous_id: str) -> None:
        """A suppressed call of `user_id` linked `anonymous_id` to them (privacy.suppress_linked):
        from now on its anonymous events are theirs, in this process at once, in the others
        within SUPPRESSIONS_TTL_S. An anonymousId found linked to someone else is not looked up again."""
        if (org_id, anonymous_id) in self._not_linked:
            return
        digest = self.run(lambda c: privacy.suppress_linked(c, org_id, user_id, anonymous_id))
        read_at, found = self._suppressed.get(org_id, (-SUPPRESSIONS_TTL_S, None))
        if digest is None:
            self._not_linked.add((org_id, anonymous_id))
        elif found is not None:
            self._suppressed[org_id] = (read_at, found.with_hash(digest))

    def forget(self, connection_id: str) -> None:
        self._connections.pop(connection_id, None)
        for digest in [d for d, found in self._by_write_key.items() if found.connection_id == connection_id]:
            self._by_write_key.pop(digest, None)


def _fresh(cached: Connection | None) -> Connection | None:
    return cached if cached is not None and time.monotonic() - cached.read_at < SECRETS_TTL_S else None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
