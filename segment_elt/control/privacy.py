"""Privacy regulations (docs/privacy.md): who is to be erased or suppressed, recorded per org.

A regulation names one person of one org by their userId (and optionally an email), as Segment's
own regulations do: DELETE_ONLY, SUPPRESS_WITH_DELETE, SUPPRESS, UNSUPPRESS. `control.regulations`
keeps its type, a keyed hash of the userId, who asked, when, its state and what was removed per
store; the userId itself is kept only Fernet-encrypted, and only until the work is done.

Suppression is immediate: `control.suppressions` holds the keyed hashes of each suppressed
person's ids (their userId, the anonymousIds stitched to it, their email when given), which the
receiver (Suppressed) and the outbound sync check. Deletion is carried out by
segment_elt.pipeline.erasure; both match a person as docs/privacy.md#what-identifies-a-person says.
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
from dataclasses import dataclass, field

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
SUPPRESSING = (SUPPRESS, SUPPRESS_WITH_DELETE)
MAX_ID_CHARS = 256
USER_ID, ANONYMOUS_ID, EMAIL = "userId", "anonymousId", "email"  # the kinds of id control.suppressions holds
STAGING_MODEL = "staging.stg_segment__events"


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
    return hmac.digest(key, f"{org_id}\n{user_id}".encode(), hashlib.sha256).hex()


def id_hash(key: bytes, org_id: str, kind: str, value: str) -> str:
    """The keyed hash of one id of a person: subject_hash for a userId; for an anonymousId or an
    email the kind is hashed in too, so that a userId never matches an equal anonymousId."""
    if kind == USER_ID:
        return subject_hash(key, org_id, value)
    return hmac.digest(key, f"{org_id}\n{kind}\n{value}".encode(), hashlib.sha256).hex()


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


def emails_of(event: dict) -> list[str]:
    """The normalized emails an event carries: traits.email, context.traits.email, properties.email."""
    context = event.get("context")
    context_traits = context.get("traits") if isinstance(context, dict) else None
    holders = (event.get("traits"), context_traits, event.get("properties"))
    found = []
    for holder in holders:
        if isinstance(holder, dict) and (email := normalized_email(holder.get("email"))) is not None:
            found.append(email)
    return found


def linked_anonymous_id(event: dict) -> str | None:
    """The anonymousId a call links to its userId: an identify's anonymousId, an alias's previousId
    (the staging model's linked_anonymous_id)."""
    kind = event.get("type")
    if kind == "identify":
        return id_text(event.get("anonymousId"))
    if kind == "alias":
        return id_text(event.get("previousId"))
    return None


MATCHED_IDS_KEPT = 100_000  # ids a Suppressed remembers the answer for (then it starts again)


@dataclass(frozen=True)
class Suppressed:
    """An org's suppressed people, as keyed hashes of their ids (docs/privacy.md#suppression).
    Remembers, per id, whether it is suppressed: a receiver sees the same ids again and again,
    and a lookup costs less than a keyed hash."""

    key: bytes
    hashes: frozenset[str]
    by_email: bool  # some person is suppressed by email too (else no email is hashed)
    _seen: dict[tuple[str, str], bool] = field(default_factory=dict, compare=False, repr=False)

    def matches(self, org_id: str, event: dict) -> bool:
        """Whether the event is a suppressed person's: its userId is theirs; or it has none and its
        anonymousId is one of theirs; or (by_email) an email it carries is theirs."""
        user_id = user_id_of(event)
        if user_id is not None:
            if self.holds(org_id, USER_ID, user_id):
                return True
        else:
            anonymous_id = id_text(event.get("anonymousId"))
            if anonymous_id is not None and self.holds(org_id, ANONYMOUS_ID, anonymous_id):
                return True
        return self.by_email and any(self.holds(org_id, EMAIL, email) for email in emails_of(event))

    def holds(self, org_id: str, kind: str, value: str) -> bool:
        """Whether this id (of `kind`) of the org is suppressed."""
        found = self._seen.get((kind, value))
        if found is None:
            if len(self._seen) >= MATCHED_IDS_KEPT:
                self._seen.clear()
            found = self._seen[(kind, value)] = id_hash(self.key, org_id, kind, value) in self.hashes
        return found

    def with_hash(self, digest: str) -> Suppressed:
        return Suppressed(self.key, self.hashes | {digest}, self.by_email)


def stitched_anonymous_ids(conn: psycopg.Connection, org_id: str, user_ids: list[str]) -> dict[str, str]:
    """anonymousId -> userId, for the anonymousIds whose first linking call (in the staging
    model, as the identity models read it) names one of `user_ids`; for anonymousIds the staging
    model does not link at all, any staged identify or alias of theirs not yet modelled."""
    links: dict[str, str] = {}
    if db.relations_exist(conn, STAGING_MODEL):
        rows = conn.execute(
            f"""
            select distinct on (links.linked_anonymous_id) links.linked_anonymous_id, links.user_id
            from {STAGING_MODEL} as links
            where links.org_id = %(org)s and links.linked_anonymous_id in (
                select theirs.linked_anonymous_id from {STAGING_MODEL} as theirs
                where theirs.org_id = %(org)s and theirs.user_id = any(%(ids)s)
                    and theirs.linked_anonymous_id is not null)
            order by links.linked_anonymous_id, links.event_at, links.received_at, links.message_id collate "C"
            """,
            {"org": org_id, "ids": user_ids},
        )
        linked_to_anyone: dict[str, str] = dict(rows.fetchall())
        links = {anon: user for anon, user in linked_to_anyone.items() if user in user_ids}
    else:
        linked_to_anyone = {}
    for anon, user in conn.execute(
        """
        select case payload->>'type' when 'identify' then payload->>'anonymousId' else payload->>'previousId' end,
               payload->>'userId'
        from raw.segment_events
        where org_id = %s and payload->>'userId' = any(%s) and payload->>'type' in ('identify', 'alias')
        """,
        (org_id, user_ids),
    ):
        if anon and anon not in linked_to_anyone:
            links.setdefault(anon, user)
    return links


def first_linked_to(conn: psycopg.Connection, org_id: str, anonymous_id: str) -> str | None:
    """The userId the first call linking `anonymous_id` names: in the staging model (an index
    lookup) when it exists, else in the staged rows; None when nothing links it."""
    if db.relations_exist(conn, STAGING_MODEL):
        row = conn.execute(
            f"select user_id from {STAGING_MODEL} where org_id = %s and linked_anonymous_id = %s"
            ' order by event_at, received_at, message_id collate "C" limit 1',
            (org_id, anonymous_id),
        ).fetchone()
    else:
        row = conn.execute(
            """
            select payload->>'userId' from raw.segment_events
            where org_id = %(org)s and payload->>'userId' <> '' and (
                (payload->>'type' = 'identify' and payload->>'anonymousId' = %(anon)s)
                or (payload->>'type' = 'alias' and payload->>'previousId' = %(anon)s))
            order by received_at, message_id collate "C" limit 1
            """,
            {"org": org_id, "anon": anonymous_id},
        ).fetchone()
    return row[0] if row else None


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
    (the receiver sees them within its refresh interval) for the userId, the anonymousIds
    stitched to it now and the email; deletions are left for pipeline.erasure.run, in state
    'pending'. Raises UserError for an unknown org or no ids."""
    if regulation_type not in (*DELETING, SUPPRESS, UNSUPPRESS):
        raise UserError(f"unknown regulation type {regulation_type!r}")
    _check_org(conn, org_id)
    user_ids = _clean_ids(user_ids)
    email = normalized_email(email)
    if email is not None and len(user_ids) != 1:
        raise UserError("--email names one person: give it with a single --user-id")
    key = hash_key(conn)
    who = requested_by or requester()
    stitched = stitched_anonymous_ids(conn, org_id, user_ids) if regulation_type in SUPPRESSING else {}
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
            if regulation_type in SUPPRESSING:
                ids = [(USER_ID, digest)]
                ids += [
                    (ANONYMOUS_ID, id_hash(key, org_id, ANONYMOUS_ID, a))
                    for a, owner in stitched.items()
                    if owner == user_id
                ]
                ids += [(EMAIL, id_hash(key, org_id, EMAIL, email))] if email is not None else []
                with conn.cursor() as cur:
                    # every id of the person under one suppression: an earlier one's, if still in force
                    cur.executemany(
                        "insert into control.suppressions (org_id, subject_hash, kind, regulation_id)"
                        " select %(org)s, %(hash)s, %(kind)s, coalesce((select held.regulation_id"
                        "  from control.suppressions as held"
                        "  where held.org_id = %(org)s and held.subject_hash = %(user)s), %(regulation)s)"
                        " on conflict (org_id, subject_hash) do nothing",
                        [
                            {"org": org_id, "hash": hashed, "kind": kind, "user": digest, "regulation": regulation_id}
                            for kind, hashed in ids
                        ],
                    )
            elif regulation_type == UNSUPPRESS:
                conn.execute(  # the userId and every id recorded with it
                    "delete from control.suppressions where org_id = %(org)s and regulation_id in ("
                    " select regulation_id from control.suppressions where org_id = %(org)s and subject_hash = %(h)s)",
                    {"org": org_id, "h": digest},
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
            " left join control.suppressions s on s.org_id = o.org_id and s.kind = 'userId'"
            " group by o.org_id order by o.org_id"
        ).fetchall()


def suppressed(conn: psycopg.Connection, org_id: str) -> frozenset[str]:
    """The keyed hashes of the org's suppressed people's ids (userIds, anonymousIds, emails)."""
    rows = conn.execute("select subject_hash from control.suppressions where org_id = %s", (org_id,))
    return frozenset(digest for (digest,) in rows)


def suppressed_ids(conn: psycopg.Connection, org_id: str) -> Suppressed | None:
    """The org's suppressed people for matching events; None when it suppresses nobody."""
    rows = conn.execute("select subject_hash, kind from control.suppressions where org_id = %s", (org_id,)).fetchall()
    if not rows:
        return None
    return Suppressed(hash_key(conn), frozenset(h for h, _ in rows), any(kind == EMAIL for _, kind in rows))


def suppress_linked(conn: psycopg.Connection, org_id: str, user_id: str, anonymous_id: str) -> str | None:
    """A suppressed call of `user_id` links `anonymous_id` to them: suppress it too (with their
    suppression) unless an earlier call linked it to someone else. Returns its hash when it is theirs."""
    first = first_linked_to(conn, org_id, anonymous_id)
    if first is not None and first != user_id:
        return None
    key = hash_key(conn)
    digest = id_hash(key, org_id, ANONYMOUS_ID, anonymous_id)
    conn.execute(
        "insert into control.suppressions (org_id, subject_hash, kind, regulation_id)"
        " select org_id, %s, 'anonymousId', regulation_id from control.suppressions"
        " where org_id = %s and subject_hash = %s on conflict (org_id, subject_hash) do nothing",
        (digest, org_id, subject_hash(key, org_id, user_id)),
    )
    return digest


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
