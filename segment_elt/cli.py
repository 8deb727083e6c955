"""`segment-elt`: connections, the host product's entities, the schema and the pipeline.

Errors go to stderr as one line a person can act on, with exit status 1 (2 for usage).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
from importlib.metadata import version
from pathlib import Path

import psycopg
import psycopg.conninfo
from tabulate import tabulate

from segment_elt import db
from segment_elt.control import connections, crypto, entities, keys, privacy, resolution, schema
from segment_elt.errors import UserError
from segment_elt.ingest.archive import ArchiveCorrupt, ArchiveUnavailable, open_archive
from segment_elt.outbound import sync
from segment_elt.pipeline import erasure, reconcile
from segment_elt.pipeline.transform import DbtFailed
from segment_elt.settings import settings

EXAMPLES = """examples:
  segment-elt db upgrade
  segment-elt connections create --org acme --name "Acme production"
  segment-elt connections allowlist conn_0123 --add "Report Created" '$page' '$identify'
  segment-elt connections list --json
  segment-elt connections resolution conn_0123 --days 30
  segment-elt connections rotate-secret conn_0123
  segment-elt connections rotate-write-key conn_0123
  segment-elt accounts import --org acme accounts.csv --dry-run
  segment-elt pipeline run-once
  segment-elt privacy delete --org acme --user-id u_123 --suppress

Every command and option: docs/cli.md. Configuration (DATABASE_URL, ARCHIVE_URL, ...): docs/configuration.md."""
MAX_INT = 2**31 - 1  # PostgreSQL integer


def whole_number(low: int, high: int = MAX_INT):
    """An argparse type: a whole number in [low, high], else a usage error naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return value

    return parse


def _print(data, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


def _table(rows: list[dict], columns: dict[str, str], empty: str) -> str:
    """rows as an aligned table of `columns` (key -> heading); `empty` when there are none."""
    if not rows:
        return empty
    return tabulate(
        [[row[key] for key in columns] for row in rows],
        headers=list(columns.values()),
        missingval="-",
        disable_numparse=True,
    )


def cmd_db_upgrade(args, conn) -> None:
    applied = schema.upgrade(conn)
    print(
        f"schema at version {schema.LATEST}"
        + (f" (applied {', '.join(map(str, applied))})" if applied else " (up to date)")
    )


def cmd_create(args, conn) -> None:
    created = connections.create(conn, args.org, args.name, args.rate_limit)
    data = vars(created)
    _print(
        data,
        args.json,
        "\n".join(
            [
                f"connection {created.connection_id} for org {created.org_id} "
                f"(cap {created.rate_limit_per_minute} events/minute for the org)",
                f"webhook URL: {created.webhook_url}",
                f"shared secret: {created.secret}",
                "The secret is shown only now: paste it into Segment's Webhooks destination settings.",
                "",
                "Or send from Segment's SDKs straight to the tracking API:",
                f"write key: {created.write_key}",
                f"API host: {created.tracking_api_host}",
                "The write key is shown only now: configure it with the API host as the SDK's host.",
            ]
        ),
    )


def cmd_list(args, conn) -> None:
    rows = connections.list_connections(conn, args.org)
    shown = [dict(r, outbound=f"on ({r['outbound_region']})" if r["outbound_enabled"] else "off") for r in rows]
    _print(
        rows,
        args.json,
        _table(
            shown,
            {
                "connection_id": "connection",
                "org_id": "org",
                "name": "name",
                "rate_limit_per_minute": "cap/min",
                "allowlisted_events": "allowlisted",
                "outbound": "outbound",
                "webhook_url": "webhook URL",
            },
            "no connections",
        ),
    )


def cmd_delete(args, conn) -> None:
    connections.delete(conn, args.connection_id)
    print(f"deleted {args.connection_id}: its webhook URL now answers 404")


def cmd_rotate_secret(args, conn) -> None:
    if args.finish:
        connections.finish_rotation(conn, args.connection_id)
        _print(
            {"connection_id": args.connection_id, "previous_secret": "refused"},
            args.json,
            f"{args.connection_id}: only the new secret verifies now",
        )
        return
    rotated = connections.rotate_secret(conn, args.connection_id, dt.timedelta(hours=args.grace_hours))
    _print(
        vars(rotated),
        args.json,
        "\n".join(
            [
                f"new shared secret: {rotated.secret}",
                f"The previous secret keeps verifying until {rotated.previous_until:%Y-%m-%d %H:%M} UTC: "
                "paste the new one into Segment's Webhooks destination settings now, then run",
                f"  segment-elt connections rotate-secret {args.connection_id} --finish",
                "The new secret is shown only now.",
            ]
        ),
    )


def cmd_rotate_write_key(args, conn) -> None:
    write_key = connections.rotate_write_key(conn, args.connection_id)
    _print(
        {"connection_id": args.connection_id, "write_key": write_key},
        args.json,
        "\n".join(
            [
                f"new write key: {write_key}",
                "The previous write key is refused from now on: configure the new one in the SDKs. "
                "It is shown only now.",
            ]
        ),
    )


def cmd_keys_reencrypt(args, conn) -> None:
    done = keys.reencrypt_all(conn)
    print(f"re-encrypted {done} stored secrets with the first key of SEGMENT_ELT_FERNET_KEY; the other keys can go")


def cmd_allowlist(args, conn) -> None:
    set_to = None
    if args.set_file:
        try:
            set_to = Path(args.set_file).read_text(encoding="utf-8-sig").splitlines()
        except OSError as exc:
            raise UserError(f"cannot read {args.set_file}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{args.set_file} is not UTF-8 text (byte {exc.start}): save it as UTF-8, one event name per line"
            ) from None
    names = connections.allowlist(conn, args.connection_id, set_to=set_to, add=args.add, remove=args.remove)
    _print(
        {"connection_id": args.connection_id, "allowlist": names},
        args.json,
        "\n".join(names) if names else "the allowlist is empty: no events reach the rollups",
    )


def cmd_rate_limit(args, conn) -> None:
    org = connections.set_rate_limit(conn, args.connection_id, args.per_minute)
    _print(
        {"org_id": org, "rate_limit_per_minute": args.per_minute},
        args.json,
        f"org {org} is capped at {args.per_minute} events per minute across all its connections",
    )


def cmd_recent(args, conn) -> None:
    if args.rejected:
        rows = connections.rejects(conn, args.connection_id, args.limit)
        shown = [dict(r, body_head=(r["body_head"] or "")[:60] or None) for r in rows]
        _print(
            rows,
            args.json,
            _table(
                shown,
                {
                    "rejected_at": "rejected",
                    "status": "status",
                    "reason": "reason",
                    "repeats": "times",
                    "body_bytes": "bytes",
                    "body_head": "body (400s)",
                },
                "no refusals recorded",
            ),
        )
        return
    rows = connections.recent_events(conn, args.connection_id, args.limit)
    shown = [dict(r, allowlist="allowed" if r["in_allowlist"] else "dropped") for r in rows]
    _print(
        rows,
        args.json,
        _table(
            shown,
            {
                "received_at": "received",
                "event_type": "type",
                "event_name": "event",
                "allowlist": "allowlist",
                "external_group_id": "externalGroupId",
                "external_user_id": "externalUserId",
                "message_id": "messageId",
            },
            "no events staged yet",
        ),
    )


def _percent(share: float) -> str:
    return f"{share:.1%}"


def cmd_resolution(args, conn) -> None:
    found = resolution.report(conn, args.connection_id, args.days)
    none = f"no allowlisted events since {found.since}"
    _print(
        vars(found),
        args.json,
        "\n\n".join(
            [
                f"identity resolution of {found.connection_id} (org {found.org_id}), "
                f"event days since {found.since} (UTC)",
                _table(
                    [dict(r, share=_percent(r["share"])) for r in found.by_rule],
                    {"matched_by": "matched by", "event_count": "events", "share": "share"},
                    none,
                ),
                _table(
                    [dict(r, unresolved_share=_percent(r["unresolved_share"])) for r in found.by_day],
                    {
                        "event_date": "day",
                        "event_count": "events",
                        "unresolved_count": "unresolved",
                        "unresolved_share": "unresolved share",
                    },
                    none,
                ),
                f"most frequent values of unresolved events (top {resolution.TOP_VALUES} per kind):\n"
                + _table(
                    found.unresolved_values,
                    {"kind": "kind", "value": "value", "event_count": "events", "last_seen_at": "last seen"},
                    "no unresolved event carried a groupId, userId or email",
                ),
            ]
        ),
    )


def cmd_run_once(args, conn) -> None:
    from segment_elt.pipeline import run_once

    state, figures = run_once.run_rollups_once()
    _print(
        {"state": state, **figures},
        args.json,
        _table(
            [
                {"figure": k, "value": json.dumps(v, default=str) if isinstance(v, dict) else v}
                for k, v in figures.items()
            ],
            {"figure": "segment_rollups", "value": state},
            "no run was recorded",
        ),
    )
    if state != "success":
        raise UserError(f"segment_rollups ended {state}: see the task log above")


def cmd_reconcile(args, conn) -> None:
    connections.require_live(conn, args.connection_id)
    run_id = reconcile.trigger(args.connection_id)
    if run_id:
        print(f"triggered segment_reconcile run {run_id} on {reconcile.api_url()}")
        return
    print("no Airflow API server answered; running the reconcile build here ...", flush=True)
    reconcile.run_here(args.connection_id)
    print(f"reconciled {args.connection_id}: its events are re-resolved and the rollups they touch rebuilt")


def cmd_outbound(args, conn) -> None:
    enabled = args.enable if args.enable or args.disable else None  # None: as it was
    done = sync.configure(conn, args.connection_id, write_key=args.write_key, region=args.region, enabled=enabled)
    print(
        f"outbound for {done.connection_id} (org {done.org_id}): {'enabled' if done.enabled else 'disabled'}, "
        f"region {done.region}; the write key is stored encrypted"
    )


def cmd_outbound_test(args, conn) -> None:
    connections.require_live(conn, args.connection_id)
    try:
        client = sync.client_for(conn, args.connection_id, retries=0)
    except (LookupError, crypto.SecretKeyError) as exc:
        raise UserError(str(exc)) from None
    status, body = client.probe()
    if status == 0:
        raise UserError(f"Segment did not answer at {client.url} ({body[:200]}); check the network and the region")
    print(f"{client.url} answered {status}: {body.strip()[:500]}")
    if not 200 <= status < 300:
        raise UserError(f"Segment refused the test event (HTTP {status}); check the write key and region")


def _user_ids(args) -> list[str]:
    return [*(args.user_id or []), *(privacy.read_ids_file(args.file) if args.file else [])]


def _regulate(kind: str):
    def run(args, conn) -> None:
        made = privacy.request(conn, args.org, kind, _user_ids(args), email=getattr(args, "email", None))
        what = {privacy.SUPPRESS: "suppressed", privacy.UNSUPPRESS: "no longer suppressed"}[kind]
        print(f"{len(made)} people of org {args.org} {what} (regulations {', '.join(map(str, made))})")

    return run


def cmd_privacy_delete(args, conn) -> None:
    kind = privacy.SUPPRESS_WITH_DELETE if args.suppress else privacy.DELETE_ONLY
    made = privacy.request(conn, args.org, kind, _user_ids(args), email=args.email)
    print(f"recorded {len(made)} {kind} regulations for org {args.org}; erasing ...", file=sys.stderr, flush=True)
    _run_erasure(conn, args.json, made)


def cmd_privacy_run(args, conn) -> None:
    _run_erasure(conn, args.json, None)


def _run_erasure(conn, as_json: bool, made: list[int] | None) -> None:
    conn.execute("set statement_timeout = 0")  # its passes over every staged row of an org take their time
    try:
        with contextlib.redirect_stdout(sys.stderr):  # dbt's log: stdout is the record (or its JSON)
            finished = erasure.run(conn, open_archive(settings().archive_url, settings().archive_timeout_s))
    except (ArchiveUnavailable, ArchiveCorrupt, DbtFailed) as exc:
        raise UserError(
            f"the deletion stopped: {_first_line(exc)}; fix the cause, then `segment-elt privacy run` finishes it"
        ) from None
    ids = {s.regulation_id for s in finished} if made is None else set(made)
    rows = [row for row in privacy.status(conn) if row["regulation_id"] in ids]
    _print(rows, as_json, _regulations_table(rows, "no unfinished deletions"))


def _regulations_table(rows: list[dict], empty: str) -> str:
    shown = [
        dict(
            row,
            subject_hash=row["subject_hash"][:12],
            requested_at=f"{row['requested_at']:%Y-%m-%d %H:%M}",
            counts=", ".join(f"{k} {v}" for k, v in sorted(row["counts"].items())) or "-",
        )
        for row in rows
    ]
    columns = {
        "regulation_id": "id",
        "org_id": "org",
        "regulation_type": "type",
        "subject_hash": "userId hash",
        "requested_by": "by",
        "requested_at": "at (UTC)",
        "state": "state",
        "counts": "removed",
    }
    return _table(shown, columns, empty)


def cmd_privacy_status(args, conn) -> None:
    rows = privacy.status(conn, args.org)
    _print(rows, args.json, _regulations_table(rows, "no regulations"))


def _import(entity):
    def run(args, conn) -> None:
        try:
            text = Path(args.file).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}") from None
        plan = entities.upsert(conn, args.org, entity, entities.parse_csv(text, entity), dry_run=args.dry_run)
        figures = f"{len(plan.new)} new, {len(plan.updated)} updated, {plan.unchanged} unchanged rows"
        if not args.dry_run:
            print(f"{figures} in {entity.table} for org {args.org}")
            return
        changes = [
            {"key": c.key, "change": "new" if c.before is None else "updated", "what": "; ".join(c.differences())}
            for c in plan.new + plan.updated
        ]
        print(_table(changes, {"key": entity.key, "change": "change", "what": "what changes"}, "nothing would change"))
        print(f"dry run: {figures} in {entity.table} for org {args.org}; nothing was written")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segment-elt",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('segment-elt')}")
    top = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def command(group, name: str, fn, help: str, *, json_output: bool = False):
        sub = group.add_parser(name, help=help, description=help)
        sub.set_defaults(fn=fn)
        if json_output:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
        return sub

    def connection_id(sub) -> None:
        sub.add_argument(
            "connection_id", metavar="CONNECTION_ID", help="the connection, conn_... (see `connections list`)"
        )

    dbp = top.add_parser("db", help="the control and staging schema").add_subparsers(
        dest="cmd", required=True, metavar="COMMAND"
    )
    command(dbp, "upgrade", cmd_db_upgrade, "create or upgrade the control and staging schema (safe to repeat)")

    con = top.add_parser(
        "connections", help="webhook connections: create, allowlist, cap, debug, outbound"
    ).add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    p = command(
        con,
        "create",
        cmd_create,
        "create a connection; prints its webhook URL and secret, and its tracking API write key, once",
        json_output=True,
    )
    p.add_argument("--org", required=True, help="the org (customer) the connection's events belong to")
    p.add_argument("--name", help="a label for people, e.g. 'Acme production'")
    p.add_argument(
        "--rate-limit",
        type=whole_number(1),
        metavar="PER_MINUTE",
        help="events per minute for the whole org, across its connections (default 600)",
    )
    p = command(con, "list", cmd_list, "list live connections", json_output=True)
    p.add_argument("--org", help="only this org's connections")
    p = command(con, "delete", cmd_delete, "delete a connection (its URL answers 404 at once)")
    connection_id(p)
    p = command(
        con,
        "rotate-secret",
        cmd_rotate_secret,
        "give the connection a new shared secret; the old one verifies too until --finish or the grace ends",
        json_output=True,
    )
    connection_id(p)
    p.add_argument(
        "--grace-hours",
        type=whole_number(1, 24 * 30),
        default=24,
        help="how long the previous secret keeps verifying (default 24)",
    )
    p.add_argument("--finish", action="store_true", help="refuse the previous secret from now on")
    p = command(
        con,
        "rotate-write-key",
        cmd_rotate_write_key,
        "give the connection a new tracking API write key (prints it once); the previous one is refused",
        json_output=True,
    )
    connection_id(p)
    p = command(
        con, "allowlist", cmd_allowlist, "show or edit the event names that reach the rollups", json_output=True
    )
    connection_id(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--set-file", metavar="FILE", help="replace the allowlist with FILE's lines (UTF-8)")
    group.add_argument(
        "--add", nargs="+", metavar="NAME", help="add event names (track names, or $page, $identify ...)"
    )
    group.add_argument("--remove", nargs="+", metavar="NAME", help="remove event names")
    p = command(con, "rate-limit", cmd_rate_limit, "set the org's events-per-minute cap", json_output=True)
    connection_id(p)
    p.add_argument(
        "per_minute",
        type=whole_number(1),
        metavar="PER_MINUTE",
        help="events per minute for the connection's whole org",
    )
    p = command(
        con,
        "recent-events",
        cmd_recent,
        "the newest staged events, with whether each reaches the rollups",
        json_output=True,
    )
    connection_id(p)
    p.add_argument(
        "--limit", type=whole_number(1, connections.MAX_RECENT), default=50, help="how many events (default 50)"
    )
    p.add_argument(
        "--rejected",
        action="store_true",
        help="the newest requests the receiver refused (4xx/5xx) instead, with status and reason",
    )
    p = command(con, "outbound", cmd_outbound, "send computed traits, audiences and moments back to Segment")
    connection_id(p)
    p.add_argument("--write-key", help="the write key of the Segment source to send to (stored encrypted)")
    p.add_argument("--region", choices=["us", "eu"], help="the Segment workspace's region (default us)")
    toggle = p.add_mutually_exclusive_group()
    toggle.add_argument("--enable", action="store_true", help="send again (a new connection starts enabled)")
    toggle.add_argument("--disable", action="store_true", help="stop sending; other options leave this as it is")
    p = command(
        con,
        "outbound-test",
        cmd_outbound_test,
        "send one test track event to Segment; exits 1 unless Segment answered 2xx",
    )
    connection_id(p)
    p = command(
        con,
        "reconcile",
        cmd_reconcile,
        "re-resolve a connection's stored events under the current identity rules and entities",
    )
    connection_id(p)
    p = command(
        con,
        "resolution",
        cmd_resolution,
        "the identity resolution report: events per matching rule and day, top unresolved values",
        json_output=True,
    )
    connection_id(p)
    p.add_argument(
        "--days",
        type=whole_number(1, resolution.MAX_DAYS),
        default=resolution.DEFAULT_DAYS,
        help=f"the last N UTC event days, today included (default {resolution.DEFAULT_DAYS})",
    )

    for name, entity in (("accounts", entities.ACCOUNTS), ("contacts", entities.CONTACTS)):
        sub = top.add_parser(name, help=f"the host product's {name}, sources of identity resolution").add_subparsers(
            dest="cmd", required=True, metavar="COMMAND"
        )
        p = command(
            sub,
            "import",
            _import(entity),
            f"upsert {name} from a CSV file; columns the file does not name are left as they are",
        )
        p.add_argument("--org", required=True, help=f"the org the {name} belong to")
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="print what would change (new, updated, unchanged rows) and write nothing",
        )
        p.add_argument("file", metavar="FILE.csv", help=f"a header row, then one {name[:-1]} per row (docs/cli.md)")

    key = top.add_parser("keys", help="the Fernet keys secrets are stored with").add_subparsers(
        dest="cmd", required=True, metavar="COMMAND"
    )
    command(
        key,
        "reencrypt",
        cmd_keys_reencrypt,
        "rewrite every stored secret with the first key of SEGMENT_ELT_FERNET_KEY (after adding a new key first)",
    )

    priv = top.add_parser(
        "privacy", help="erase and suppress people's data (GDPR/CCPA regulations, docs/privacy.md)"
    ).add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def people(sub, *, email: bool = False) -> None:
        sub.add_argument("--org", required=True, help="the org whose end users these are")
        sub.add_argument("--user-id", action="append", metavar="U", help="a userId (repeat for several)")
        sub.add_argument("--file", metavar="IDS.csv", help="userIds, one per line (first column; header user_id)")
        if email:
            sub.add_argument("--email", help="the person's email too (with a single --user-id): docs/privacy.md")

    p = command(
        priv,
        "delete",
        cmd_privacy_delete,
        "delete people's events from the archive, staging and every model; with --suppress, land none of theirs again",
        json_output=True,
    )
    people(p, email=True)
    p.add_argument("--suppress", action="store_true", help="also suppress them (SUPPRESS_WITH_DELETE)")
    command(priv, "suppress", _regulate(privacy.SUPPRESS), "accept but land nothing more of these people")
    people(priv.choices["suppress"], email=True)
    command(priv, "unsuppress", _regulate(privacy.UNSUPPRESS), "land these people's events again")
    people(priv.choices["unsuppress"])
    p = command(priv, "status", cmd_privacy_status, "every regulation: type, state, what it removed", json_output=True)
    p.add_argument("--org", help="only this org's regulations")
    command(priv, "run", cmd_privacy_run, "finish deletions that stopped midway (safe to repeat)", json_output=True)

    pipe = top.add_parser("pipeline", help="run the pipeline by hand").add_subparsers(
        dest="cmd", required=True, metavar="COMMAND"
    )
    command(
        pipe,
        "run-once",
        cmd_run_once,
        "run the segment_rollups DAG once in this process and print its figures; exit 1 unless it succeeded",
        json_output=True,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_database_url()
        with db.connect() as conn:
            if args.fn is not cmd_db_upgrade and schema.current_version(conn) is None:
                raise UserError("the database has no segment-elt schema yet: run `segment-elt db upgrade` first")
            args.fn(args, conn)
    except (UserError, crypto.SecretKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(
            f"error: cannot reach PostgreSQL ({_first_line(exc)}); check DATABASE_URL or start the embedded server "
            "(python -m segment_elt.local.embedded start)",
            file=sys.stderr,
        )
        return 1
    return 0


def _check_database_url() -> None:
    try:
        psycopg.conninfo.conninfo_to_dict(settings().require_database_url())
    except psycopg.ProgrammingError as exc:
        raise UserError(
            f"DATABASE_URL is not a PostgreSQL URL ({_first_line(exc)}); "
            "use postgresql://user:password@host:5432/dbname"
        ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
