"""Privacy regulations (docs/privacy.md): who is to be erased or suppressed, recorded per org.

A regulation names one person of one org by their userId (and optionally an email), as Segment's
own regulations do: DELETE_ONLY, SUPPRESS_WITH_DELETE, SUPPRESS, UNSUPPRESS. `control.regulations`
keeps its type, a keyed hash of the userId, who asked, when, its state and what was removed per
store; the userId itself is kept only Fernet-encrypted, and only until the work is done.

Suppression is immediate: `control.suppressions` holds the keyed hashes the receiver and the
outbound sync check. Deletion is carried out by segment_elt.pipeline.erasure.
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import hmac
import json
import secrets
import socket
from collections import Counter
from dataclasses import dataclass

import psycopg

from segment_elt import db
from segment_elt.control import crypto
from segment_elt.errors import UserError

DELETE_ONLY, SUPPRESS_WITH_DELETE, SUPPRESS, UNSUPPRESS = (
    "DELETE_ONLY",
    "SUPPRESS_WITH_DELETE",
    "SUPPRESS",
    "UNSUPPRESS",
)
DELETING = (DELETE_ONLY, SUPPRESS_WITH_DELETE)
MAX_ID_CHARS = 256


@dataclass(frozen=True)
class Subject:
    """One person of a deletion that is not done yet, with their ids decrypted."""

    regulation_id: int
    org_id: str
    regulation_type: str
    user_id: str
    email: str | None
    state: str


def hash_key(conn: psycopg.Connection) -> bytes:
    """The key of the keyed hashes, made once per database (random, stored Fernet-encrypted)."""
    conn.execute(
        "insert into control.privacy_key (key_enc) values (%s) on conflict do nothing",
        (crypto.encrypt(secrets.token_hex(32)),),
    )
    (token,) = db.one(conn, "select key_enc from control.privacy_key")
    return bytes.fromhex(crypto.decrypt(token))


def subject_hash(key: bytes, org_id: str, user_id: str) -> str:
    """HMAC-SHA256 of the org and userId: the same person of the same org always hashes alike."""
    return hmac.new(key, f"{org_id}\n{user_id}".encode(), hashlib.sha256).hexdigest()


def user_id_of(event: dict) -> str | None:
    """An event's userId as the staging model reads it (`payload ->> 'userId'`, '' as none)."""
    return id_text(event.get("userId"))


def id_text(value) -> str | None:
    """An id field's value as text, as `->>` reads a JSON string or integer; '' as none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        value = str(value)
    return value if isinstance(value, str) and value else None


def normalized_email(value) -> str | None:
    """Emails match case-insensitively and trimmed (the staging model's normalize_email)."""
    return (value.strip().lower() or None) if isinstance(value, str) else None


def requester() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _clean_ids(user_ids: list[str]) -> list[str]:
    cleaned = []
    for raw in user_ids:
        user_id = raw.strip()
        if not user_id:
            continue
        if len(user_id) > MAX_ID_CHARS or "\x00" in user_id:
            raise UserError(f"userId {user_id[:40]!r}... is not a userId (at most {MAX_ID_CHARS} characters)")
        if user_id not in cleaned:
            cleaned.append(user_id)
    if not cleaned:
        raise UserError("name at least one userId (--user-id U or --file ids.csv)")
    return cleaned


def _check_org(conn: psycopg.Connection, org_id: str) -> None:
    if conn.execute("select 1 from control.orgs where org_id = %s", (org_id,)).fetchone() is None:
        raise UserError(f"no org {org_id!r}: see `segment-elt connections list`")


def request(
    conn: psycopg.Connection,
    org_id: str,
    regulation_type: str,
    user_ids: list[str],
    *,
    email: str | None = None,
    requested_by: str | None = None,
) -> list[int]:
    """Record one regulation per userId; returns their ids. Suppressions take effect at once
    (the receiver sees them within its refresh interval); deletions are left for
    pipeline.erasure.run, in state 'pending'. Raises UserError for an unknown org or no ids."""
    if regulation_type not in (*DELETING, SUPPRESS, UNSUPPRESS):
        raise UserError(f"unknown regulation type {regulation_type!r}")
    _check_org(conn, org_id)
    user_ids = _clean_ids(user_ids)
    email = normalized_email(email)
    if email is not None and len(user_ids) != 1:
        raise UserError("--email names one person: give it with a single --user-id")
    key = hash_key(conn)
    who = requested_by or requester()
    made = []
    with conn.transaction():
        for user_id in user_ids:
            digest = subject_hash(key, org_id, user_id)
            deleting = regulation_type in DELETING
            secret = crypto.encrypt(json.dumps({"user_id": user_id, "email": email})) if deleting else None
            (regulation_id,) = db.one(
                conn,
                "insert into control.regulations"
                " (org_id, regulation_type, subject_hash, subject_enc, requested_by, state, finished_at)"
                " values (%s, %s, %s, %s, %s, %s, case when %s then null else now() end) returning regulation_id",
                (org_id, regulation_type, digest, secret, who, "pending" if deleting else "done", deleting),
            )
            if regulation_type in (SUPPRESS, SUPPRESS_WITH_DELETE):
                conn.execute(
                    "insert into control.suppressions (org_id, subject_hash, regulation_id) values (%s, %s, %s)"
                    " on conflict (org_id, subject_hash) do nothing",
                    (org_id, digest, regulation_id),
                )
            elif regulation_type == UNSUPPRESS:
                conn.execute(
                    "delete from control.suppressions where org_id = %s and subject_hash = %s", (org_id, digest)
                )
            made.append(regulation_id)
    return made


def unfinished(conn: psycopg.Connection) -> list[Subject]:
    """The deletions not done yet (pending, interrupted or failed), oldest first, ids decrypted."""
    found = []
    for regulation_id, org_id, kind, token, state in conn.execute(
        "select regulation_id, org_id, regulation_type, subject_enc, state from control.regulations"
        " where state <> 'done' order by regulation_id"
    ):
        ids = json.loads(crypto.decrypt(token))
        found.append(Subject(regulation_id, org_id, kind, ids["user_id"], ids.get("email"), state))
    return found


def set_state(conn: psycopg.Connection, regulation_ids: list[int], state: str, error: str | None = None) -> None:
    """Move regulations on, in one statement; 'done' forgets their encrypted ids."""
    conn.execute(
        "update control.regulations set state = %(state)s, error = %(error)s,"
        " subject_enc = case when %(state)s = 'done' then null else subject_enc end,"
        " finished_at = case when %(state)s in ('done', 'failed') then now() end"
        " where regulation_id = any(%(ids)s)",
        {"state": state, "error": error, "ids": regulation_ids},
    )


def add_counts(conn: psycopg.Connection, counts: dict[int, Counter]) -> None:
    """Add what each regulation's deletion removed (regulation id -> store -> rows), in one transaction."""
    with conn.transaction():
        for regulation_id, removed in counts.items():
            total = counts_of(conn, regulation_id) + removed
            conn.execute(
                "update control.regulations set counts = %s where regulation_id = %s",
                (json.dumps(dict(total)), regulation_id),
            )


def status(conn: psycopg.Connection, org_id: str | None = None, limit: int | None = None) -> list[dict]:
    """Every regulation (newest first; the newest `limit` if given) with its state and counts per store;
    never a userId."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "select regulation_id, org_id, regulation_type, subject_hash, requested_by, requested_at, state,"
            " finished_at, counts, error from control.regulations"
            " where %(org)s::text is null or org_id = %(org)s order by regulation_id desc limit %(limit)s",
            {"org": org_id, "limit": limit},
        ).fetchall()


def suppressed_counts(conn: psycopg.Connection) -> list[dict]:
    """Every org with how many people it suppresses (0 included), by org id."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "select o.org_id, count(s.subject_hash) as suppressed from control.orgs o"
            " left join control.suppressions s on s.org_id = o.org_id group by o.org_id order by o.org_id"
        ).fetchall()


def suppressed(conn: psycopg.Connection, org_id: str) -> frozenset[str]:
    """The keyed hashes of the org's suppressed userIds."""
    rows = conn.execute("select subject_hash from control.suppressions where org_id = %s", (org_id,))
    return frozenset(digest for (digest,) in rows)


def counts_of(conn: psycopg.Connection, regulation_id: int) -> Counter:
    """What the regulation's deletion has removed so far, per store."""
    row = conn.execute("select counts from control.regulations where regulation_id = %s", (regulation_id,)).fetchone()
    return Counter(row[0] if row else {})


def read_ids_file(path: str) -> list[str]:
    """userIds from a file: the first column of each CSV line; a header `user_id` or `userId` is skipped."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = [row for row in csv.reader(fh) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    ids = [row[0] for row in rows]
    if ids and ids[0].strip() in ("user_id", "userId"):
        ids = ids[1:]
    return ids
