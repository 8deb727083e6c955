"""Carrying out deletions (`segment-elt privacy delete` / `privacy run`): every store, resumable.

For the unfinished deletions of each org (control.regulations), in this order:

1. The archive: every object of the org is read; one holding an event of a person is written
   again without it (other requests' bodies byte for byte, other events of a batch body byte for
   byte), put and verified like any archive write, the staged rows of the events it keeps are
   pointed at the new key, the person's staged rows are deleted, and only then is the old object
   removed. Replay and segment_daily's re-landing therefore never meet the person again.
2. raw.segment_events rows that still match (no archive object, or landed meanwhile: their
   objects are rewritten as in 1), the staging model's rows, the rejects log's body excerpts
   and control.outbound_sent, holding the dbt writer role so that no build is halfway through.
3. Every model downstream of staging is rebuilt from what is left (`dbt build --full-refresh
   --exclude stg_segment__events`): traits, stitching, the resolution queue, recent events,
   rollups, indicators, health and audiences then no longer count the person.

Each step is idempotent, so a regulation that stopped midway (state erasing, rebuilding or
failed) is finished by running again; its counts add up over the attempts. Which events are the
person's: Matcher, docs/privacy.md#what-identifies-a-person.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from segment_elt import db
from segment_elt.control import privacy
from segment_elt.errors import UserError
from segment_elt.ingest import landing
from segment_elt.ingest.archive import (
    Archive,
    ArchiveCorrupt,
    ArchiveUnavailable,
    ObjectDigest,
    group_object,
    object_key,
    received_at_of,
    requests_in,
    verify_body,
)
from segment_elt.pipeline import runs
from segment_elt.pipeline.transform import run_dbt

log = logging.getLogger(__name__)
STAGING_MODEL = privacy.STAGING_MODEL
LOCK = "segment_elt.privacy"
OBJECTS_PER_STEP = 500  # archive objects whose staged rows change in one transaction
ARCHIVE_THREADS = 16  # archive reads and writes at once (S3 round trips, fsyncs)


@dataclass
class Rewrite:
    """One archive object holding the people's events, and its rewrite (None: nothing left)."""

    key: str
    connection_id: str
    new_key: str | None = None
    new_digest: ObjectDigest | None = None  # what the put of the rewrite answered, for the kept rows
    kept_ids: list[str] = field(default_factory=list)
    erased: dict[str, str] = field(default_factory=dict)  # messageId -> whose


class Matcher:
    """Whose event an event is, among the people of one org's deletions.

    An event is a person's when its userId is theirs; or it has no userId and its anonymousId is
    one stitched to them (its first linking call names them, docs/identity.md#anonymous-users);
    or, when the deletion gives an email, traits.email, context.traits.email or
    properties.email is that email (trimmed, case-insensitive)."""

    def __init__(self, user_ids: Iterable[str], anonymous: dict[str, str], emails: dict[str, str]):
        self.user_ids, self.anonymous, self.emails = set(user_ids), anonymous, emails

    def whose(self, event: dict) -> str | None:
        user_id = privacy.user_id_of(event)
        if user_id is not None and user_id in self.user_ids:
            return user_id
        if user_id is None:
            anonymous_id = privacy.id_text(event.get("anonymousId"))
            owner = self.anonymous.get(anonymous_id) if anonymous_id is not None else None
            if owner is not None:
                return owner
        if self.emails:
            for email in privacy.emails_of(event):
                if (owner := self.emails.get(email)) is not None:
                    return owner
        return None


class Erasure:
    """One org's deletions: what they removed, per person and store."""

    def __init__(self, conn: psycopg.Connection, archive: Archive, org_id: str, matcher: Matcher):
        self.conn, self.archive, self.org_id, self.matcher = conn, archive, org_id, matcher
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.seconds: dict[str, float] = {}  # per step, for the log and the benchmark

    def run(self) -> None:
        prefix = "/".join(
            [self.archive.prefix, f"org={self.org_id}/"] if self.archive.prefix else [f"org={self.org_id}/"]
        )
        mark = time.monotonic()

        def took(step: str) -> None:
            nonlocal mark
            now = time.monotonic()
            self.seconds[step] = now - mark
            mark = now

        listed = list(self.archive.list(prefix))
        took("list")
        keys = self.objects_to_read(listed)
        took("find")
        for i in range(0, len(keys), OBJECTS_PER_STEP):
            self.rewrite_objects(keys[i : i + OBJECTS_PER_STEP])
        took("archive")
        self.erase_raw_rows()
        took("raw")
        self.erase_under_writer_role()
        took("staging_and_control")
        log.info(
            "erased org %s: %d of %d archive objects read; seconds per step %s",
            self.org_id,
            len(keys),
            len(listed),
            self.seconds,
        )

    def objects_to_read(self, listed: list[str]) -> list[str]:
        """The listed objects that can hold the people's events: every one but those whose every
        event a staged row names and none of whose staged rows is the people's. An object counts
        as fully named when raw.segment_events names it, its first request's rows are there
        (their receive time is the key's, so retention pruned none of it) and it is not in
        raw.archive_objects_with_duplicates (events staged under another object: a retried
        request's; or written before that record was kept)."""
        theirs = {key for _, _, key, payload in self._raw_candidates() if self.matcher.whose(payload)}
        named = self.conn.execute(
            """
            select rows.archive_key, min(rows.received_at) from raw.segment_events as rows
            where rows.org_id = %s and not exists (
                select from raw.archive_objects_with_duplicates as noted where noted.archive_key = rows.archive_key)
            group by rows.archive_key
            """,
            (self.org_id,),
        )
        accounted = {
            key for key, first in named if key not in theirs and _received_ms(key) == int(first.timestamp() * 1000)
        }
        return [key for key in listed if key not in accounted]

    def rewrite_objects(self, keys: list[str]) -> None:
        """The objects without the people's events (step 1 of the module docstring), a step at a
        time: the new objects are put (ARCHIVE_THREADS at once), then the staged rows change in
        one transaction, then the old objects are removed."""
        with ThreadPoolExecutor(ARCHIVE_THREADS) as pool:
            outcomes = list(pool.map(self._rewritten_or_error, keys))
        failures = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
        rewrites = [outcome for outcome in outcomes if isinstance(outcome, Rewrite)]
        if not rewrites and failures:
            raise failures[0]
        if rewrites:
            with self.conn.transaction():
                self._repoint_and_delete_rows(rewrites)
            self.archive.delete_many([found.key for found in rewrites])
        for found in rewrites:
            for owner in set(found.erased.values()):
                self.counts[owner]["archive_objects"] += 1
            for owner in found.erased.values():
                self.counts[owner]["archive_events"] += 1
        if failures:  # the others are done: a run after the cause is fixed finishes these
            raise failures[0]

    def _repoint_and_delete_rows(self, rewrites: list[Rewrite]) -> None:
        """In the caller's transaction: the kept events' rows name the new objects, the people's
        rows go, and a new object holding events staged under another object is noted as such."""
        kept = [(found, mid) for found in rewrites if found.new_key is not None for mid in found.kept_ids]
        repointed = Counter(
            old_key
            for (old_key,) in self.conn.execute(
                """
                update raw.segment_events as r
                set archive_key = m.new_key, archive_size = m.new_size, archive_md5 = m.new_md5
                from unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bytea[])
                    as m (connection_id, message_id, old_key, new_key, new_size, new_md5)
                where r.connection_id = m.connection_id and r.message_id = m.message_id and r.archive_key = m.old_key
                returning m.old_key
                """,
                (
                    [found.connection_id for found, _ in kept],
                    [mid for _, mid in kept],
                    [found.key for found, _ in kept],
                    [found.new_key for found, _ in kept],
                    [found.new_digest.size if found.new_digest else None for found, _ in kept],
                    [found.new_digest.md5 if found.new_digest else None for found, _ in kept],
                ),
            )
        )
        noted = {
            key
            for (key,) in self.conn.execute(
                "delete from raw.archive_objects_with_duplicates where archive_key = any(%s) returning archive_key",
                ([found.key for found in rewrites],),
            )
        }
        self.conn.execute(
            "insert into raw.archive_objects_with_duplicates (archive_key) select unnest(%s::text[])"
            " on conflict do nothing",
            (
                [
                    found.new_key
                    for found in rewrites
                    if found.new_key is not None and (found.key in noted or repointed[found.key] < len(found.kept_ids))
                ],
            ),
        )
        erased = [(found, mid) for found in rewrites for mid in found.erased]
        owners = {(found.connection_id, mid): found.erased[mid] for found, mid in erased}
        for connection_id, message_id in self.conn.execute(
            "delete from raw.segment_events as r using unnest(%s::text[], %s::text[]) as m (connection_id, message_id)"
            " where r.connection_id = m.connection_id and r.message_id = m.message_id"
            " returning r.connection_id, r.message_id",
            ([found.connection_id for found, _ in erased], [mid for _, mid in erased]),
        ):
            self.counts[owners[(connection_id, message_id)]]["raw_rows"] += 1

    def _rewritten_or_error(self, key: str) -> Rewrite | Exception | None:
        try:
            return self._rewritten(key)
        except (ArchiveUnavailable, ArchiveCorrupt, landing.BadBody) as exc:
            return exc

    def _rewritten(self, key: str) -> Rewrite | None:
        """Read the object; when it holds the people's events, put its rewrite and say what changed."""
        body = self.archive.get(key)
        verify_body(key, body)
        found = Rewrite(key, _connection_of(key))
        kept_requests = []
        for received_at, raw in requests_in(key, body):
            text, events = landing.parse_body(raw)
            owners = [self.matcher.whose(event) for event in events]
            for event, owner in zip(events, owners, strict=True):
                if owner is None:
                    found.kept_ids.append(landing.message_id(event))
                else:
                    found.erased[landing.message_id(event)] = owner
            rest = landing.without_events(text, [owner is not None for owner in owners])
            if rest is not None:
                kept_requests.append((received_at, rest))
        if not found.erased:
            return None
        if kept_requests:
            new_body = group_object(kept_requests)
            # the old key's time: the same dt=/hour= folder, so a replay of its days still finds it
            found.new_key = object_key(
                self.archive.prefix, self.org_id, found.connection_id, received_at_of(key), new_body
            )
            found.new_digest = self.archive.put(found.new_key, new_body)
        return found

    def _raw_candidates(self) -> list[tuple[str, str, str, dict]]:
        emails = list(self.matcher.emails)
        return self.conn.execute(
            """
            select connection_id, message_id, archive_key, payload from raw.segment_events
            where org_id = %(org)s and (
                payload->>'userId' = any(%(ids)s) or payload->>'anonymousId' = any(%(anons)s)
                or (cardinality(%(emails)s::text[]) > 0 and (
                    lower(trim(payload->'traits'->>'email')) = any(%(emails)s)
                    or lower(trim(payload->'context'->'traits'->>'email')) = any(%(emails)s)
                    or lower(trim(payload->'properties'->>'email')) = any(%(emails)s))))
            """,
            {
                "org": self.org_id,
                "ids": list(self.matcher.user_ids),
                "anons": list(self.matcher.anonymous),
                "emails": emails,
            },
        ).fetchall()

    def erase_raw_rows(self) -> None:
        """Staged rows of the people that step 1 did not meet: their objects are rewritten (they
        landed after the listing), and rows without one (pruned or never archived) are deleted."""
        for _ in range(3):
            matches = [row for row in self._raw_candidates() if self.matcher.whose(row[3])]
            if not matches:
                return
            for key in sorted({archive_key for _, _, archive_key, _ in matches}):
                if "connection=" in key and self.archive.exists(key):
                    self.rewrite_objects([key])
            for connection_id, message_id, _, payload in matches:
                deleted = self.conn.execute(
                    "delete from raw.segment_events where connection_id = %s and message_id = %s",
                    (connection_id, message_id),
                ).rowcount
                owner = self.matcher.whose(payload)
                if owner is not None:  # matches holds only rows a person of this deletion owns
                    self.counts[owner]["raw_rows"] += deleted

    def erase_under_writer_role(self) -> None:
        """The staging model's rows, the rejects log's excerpts and outbound's record, while no
        dbt build runs (one that had read the rows could write them back downstream)."""

        def say(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        with db.connect(application_name="segment-elt privacy erasure") as lock_conn, runs.sole_writer(lock_conn, say):
            ids, anons = list(self.matcher.user_ids), list(self.matcher.anonymous)
            emails = list(self.matcher.emails)
            if db.relations_exist(self.conn, STAGING_MODEL):
                rows = self.conn.execute(
                    f"""
                    delete from {STAGING_MODEL}
                    where org_id = %(org)s and (user_id = any(%(ids)s)
                        or (user_id is null and anonymous_id = any(%(anons)s)) or email = any(%(emails)s))
                    returning user_id, anonymous_id, email
                    """,
                    {"org": self.org_id, "ids": ids, "anons": anons, "emails": emails},
                ).fetchall()
                for user_id, anonymous_id, email in rows:
                    owner = (
                        user_id
                        if user_id in self.matcher.user_ids
                        else self.matcher.anonymous.get(anonymous_id) or self.matcher.emails.get(email)
                    )
                    self.counts[owner or next(iter(self.matcher.user_ids))]["staging_rows"] += 1
            for user_id, needles in self._needles().items():
                self.counts[user_id]["reject_excerpts"] += self.conn.execute(
                    "update control.rejects set body_head = null where body_head is not null"
                    " and connection_id in (select connection_id from control.connections where org_id = %s)"
                    " and exists (select 1 from unnest(%s::text[]) as needle where strpos(body_head, needle) > 0)",
                    (self.org_id, needles),
                ).rowcount
                self.counts[user_id]["outbound_sent"] += self.conn.execute(
                    "delete from control.outbound_sent where kind = 'identify' and key = %s"
                    " and connection_id in (select connection_id from control.connections where org_id = %s)",
                    (user_id, self.org_id),
                ).rowcount

    def _needles(self) -> dict[str, list[str]]:
        """Per person, the texts whose presence in a body excerpt makes it theirs: their ids as
        JSON strings, and their email."""
        needles: dict[str, list[str]] = {user_id: [json.dumps(user_id)] for user_id in self.matcher.user_ids}
        for anon, user_id in self.matcher.anonymous.items():
            needles[user_id].append(json.dumps(anon))
        for email, user_id in self.matcher.emails.items():
            needles[user_id].append(email)
        return needles


def _received_ms(key: str) -> int | None:
    """The receive time (ms) an object key names, or None for a key not in the archive's layout."""
    try:
        return int(key.rsplit("/", 1)[-1].split("-", 1)[0])
    except ValueError:
        return None


def _connection_of(key: str) -> str:
    return next(part for part in key.split("/") if part.startswith("connection=")).removeprefix("connection=")


def rebuild_models(
    project_dir: Path | None = None,
    dbt_vars: dict | None = None,
    extra: tuple[str, ...] = (),
    *,
    writer_role: bool = True,
) -> None:
    """Every model downstream of staging, from what staging now holds (step 3). `writer_role`
    False: the caller holds the role already (an Airflow run's record, segment_privacy)."""
    args = ["build", "--full-refresh", "--exclude", "stg_segment__events", *extra]
    if dbt_vars:
        args += ["--vars", json.dumps(dbt_vars)]
    run_dbt(args, project_dir=project_dir, writer_role=writer_role)


class PrivacyRunBusy(UserError):
    """Another privacy run (the CLI's or segment_privacy's) holds the privacy lock."""


@contextmanager
def one_privacy_run(conn: psycopg.Connection) -> Iterator[None]:
    """Hold the privacy lock (a session advisory lock on `conn`) or raise PrivacyRunBusy."""
    if not db.one(conn, "select pg_try_advisory_lock(hashtext(%s))", (LOCK,))[0]:
        raise PrivacyRunBusy(
            "another privacy run is under way; when it ends, `segment-elt privacy run` finishes what it did not take"
        )
    try:
        yield
    finally:
        conn.execute("select pg_advisory_unlock(hashtext(%s))", (LOCK,))


def run(
    conn: psycopg.Connection,
    archive: Archive,
    rebuild: Callable[[], None] = rebuild_models,
    seconds: dict[str, float] | None = None,
) -> list[privacy.Subject]:
    """Finish every unfinished deletion in this process (erase, then finish); returns those it
    finished. One run at a time (PrivacyRunBusy otherwise). A failure leaves the regulations it
    stopped 'failed', with the error, and raises. `seconds`, when given, receives the time each
    step took (summed over orgs)."""
    with one_privacy_run(conn):
        erase(conn, archive, seconds)
        return finish(conn, rebuild, seconds)


def erase(conn: psycopg.Connection, archive: Archive, seconds: dict[str, float] | None = None) -> list[int]:
    """Steps 1 and 2 of every deletion not done whose steps 1 and 2 are not done either (pending,
    interrupted while erasing, or failed), leaving them 'rebuilding'; returns their ids. The
    caller holds one_privacy_run."""
    seconds = {} if seconds is None else seconds
    subjects = [subject for subject in privacy.unfinished(conn) if subject.state != "rebuilding"]
    by_org: dict[str, list[privacy.Subject]] = defaultdict(list)
    for subject in subjects:
        by_org[subject.org_id].append(subject)
    with _failing(conn, [subject.regulation_id for subject in subjects]):
        for org_id, people in by_org.items():
            for step, took in _erase_org(conn, archive, org_id, people).items():
                seconds[step] = seconds.get(step, 0.0) + took
    return [subject.regulation_id for subject in subjects]


def finish(
    conn: psycopg.Connection, rebuild: Callable[[], None] = rebuild_models, seconds: dict[str, float] | None = None
) -> list[privacy.Subject]:
    """Step 3 for the deletions in 'rebuilding': one rebuild of the models, then 'done'; returns
    them. The caller holds one_privacy_run."""
    seconds = {} if seconds is None else seconds
    subjects = [subject for subject in privacy.unfinished(conn) if subject.state == "rebuilding"]
    if not subjects:
        return []
    ids = [subject.regulation_id for subject in subjects]
    with _failing(conn, ids):
        if db.relations_exist(conn, STAGING_MODEL):
            started = time.monotonic()
            rebuild()  # else nothing is modelled yet: the first build reads raw, which no longer holds them
            seconds["rebuild"] = time.monotonic() - started
    privacy.set_state(conn, ids, "done")
    return subjects


@contextmanager
def _failing(conn: psycopg.Connection, regulation_ids: list[int]) -> Iterator[None]:
    """On any failure, the regulations become 'failed' with the error's first line, and it is raised."""
    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500]
        privacy.set_state(conn, regulation_ids, "failed", error=error)
        raise


def _erase_org(
    conn: psycopg.Connection, archive: Archive, org_id: str, people: list[privacy.Subject]
) -> dict[str, float]:
    """Steps 1 and 2 for one org's people; returns the seconds each took."""
    ids = [subject.regulation_id for subject in people]
    privacy.set_state(conn, ids, "erasing")
    started = time.monotonic()
    user_ids = sorted({subject.user_id for subject in people})
    emails = {subject.email: subject.user_id for subject in people if subject.email}
    matcher = Matcher(user_ids, privacy.stitched_anonymous_ids(conn, org_id, user_ids), emails)
    erasure = Erasure(conn, archive, org_id, matcher)
    erasure.seconds["identify"] = time.monotonic() - started
    try:
        erasure.run()
    except ArchiveCorrupt as exc:
        raise ArchiveCorrupt(f"an archive object of org {org_id} cannot be read back intact: {exc}") from exc
    finally:  # what was removed stays counted, even when a later step failed
        privacy.add_counts(
            conn, {subject.regulation_id: erasure.counts.pop(subject.user_id, Counter()) for subject in people}
        )
    privacy.set_state(conn, ids, "rebuilding")
    return erasure.seconds
