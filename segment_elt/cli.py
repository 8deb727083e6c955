"""`segment-elt`: the command line of CONTRACT section 4.

Errors go to stderr as one sentence a person can act on, with exit status 1 (2 for usage).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import psycopg

from segment_elt import connections, crypto, db, entities, outbound, reconcile, schema
from segment_elt.connections import UserError


def _print(data, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


def cmd_db_upgrade(args, conn) -> None:
    applied = schema.upgrade(conn)
    print(f"schema at version {schema.LATEST}" + (f" (applied {', '.join(map(str, applied))})" if applied else " (up to date)"))


def cmd_create(args, conn) -> None:
    created = connections.create(conn, args.org, args.name, args.rate_limit)
    data = vars(created)
    _print(data, args.json, "\n".join([
        f"connection {created.connection_id} for org {created.org_id} "
        f"(cap {created.rate_limit_per_minute} events/minute for the org)",
        f"webhook URL: {created.webhook_url}",
        f"shared secret: {created.secret}",
        "The secret is shown only now: paste it into Segment's Webhooks destination settings.",
    ]))


def cmd_list(args, conn) -> None:
    rows = connections.list_connections(conn, args.org)
    lines = [f"{r['connection_id']}  org={r['org_id']}  name={r['name'] or '-'}  cap={r['rate_limit_per_minute']}/min  "
             f"allowlisted={r['allowlisted_events']}  outbound={'on ' + r['outbound_region'] if r['outbound_enabled'] else 'off'}  "
             f"{r['webhook_url']}" for r in rows]
    _print(rows, args.json, "\n".join(lines) or "no connections")


def cmd_delete(args, conn) -> None:
    connections.delete(conn, args.connection_id)
    print(f"deleted {args.connection_id}: its webhook URL now answers 404")


def cmd_allowlist(args, conn) -> None:
    set_to = None
    if args.set_file:
        try:
            set_to = Path(args.set_file).read_text().splitlines()
        except OSError as exc:
            raise UserError(f"cannot read {args.set_file}: {exc.strerror}") from None
    names = connections.allowlist(conn, args.connection_id, set_to=set_to, add=args.add, remove=args.remove)
    _print({"connection_id": args.connection_id, "allowlist": names}, args.json,
           "\n".join(names) if names else "the allowlist is empty: no events reach the rollups")


def cmd_rate_limit(args, conn) -> None:
    org = connections.set_rate_limit(conn, args.connection_id, args.per_minute)
    print(f"org {org} is capped at {args.per_minute} events per minute across all its connections")


def cmd_recent(args, conn) -> None:
    rows = connections.recent_events(conn, args.connection_id, args.limit)
    lines = [f"{r['received_at']}  {r['event_type'] or '?':8}  {str(r['event_name'] or '-')[:40]:40}  "
             f"{'allowed' if r['in_allowlist'] else 'dropped':7}  group={r['external_group_id'] or '-'}  "
             f"user={r['external_user_id'] or '-'}  {r['message_id']}" for r in rows]
    _print(rows, args.json, "\n".join(lines) or "no events staged yet")


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
    org = connections.require_live(conn, args.connection_id)
    existing = conn.execute("select 1 from control.outbound where connection_id = %s", (args.connection_id,)).fetchone()
    if existing is None and not args.write_key:
        raise UserError("--write-key is required the first time (the write key of the Segment source to send to)")
    enabled = args.enable if args.enable or args.disable else None  # None: as it was; a new one starts enabled
    key = crypto.encrypt(args.write_key) if args.write_key else None
    if existing is None:
        conn.execute("insert into control.outbound (connection_id, write_key_enc, region, enabled) values (%s, %s, %s, %s)",
                     (args.connection_id, key, args.region or "us", enabled is not False))
    else:
        conn.execute("update control.outbound set write_key_enc = coalesce(%s, write_key_enc),"
                     " region = coalesce(%s, region), enabled = coalesce(%s, enabled), updated_at = now()"
                     " where connection_id = %s", (key, args.region, enabled, args.connection_id))
    enabled, region = conn.execute("select enabled, region from control.outbound where connection_id = %s",
                                   (args.connection_id,)).fetchone()
    print(f"outbound for {args.connection_id} (org {org}): {'enabled' if enabled else 'disabled'}, "
          f"region {region}; the write key is stored encrypted")


def cmd_outbound_test(args, conn) -> None:
    connections.require_live(conn, args.connection_id)
    try:
        client = outbound.client_for(conn, args.connection_id, retries=0)
    except (LookupError, crypto.SecretKeyError) as exc:
        raise UserError(str(exc)) from None
    status, body = client.probe()
    if status == 0:
        raise UserError(f"Segment did not answer at {client.url} ({body[:200]}); check the network and the region")
    print(f"{client.url} answered {status}: {body.strip()[:500]}")
    if not 200 <= status < 300:
        raise UserError(f"Segment refused the test event (HTTP {status}); check the write key and region")


def _import(entity):
    def run(args, conn) -> None:
        try:
            text = Path(args.file).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}") from None
        count = entities.upsert(conn, args.org, entity, entities.parse_csv(text, entity))
        print(f"upserted {count} rows into {entity.table} for org {args.org}")
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segment-elt", description=__doc__.splitlines()[0])
    top = parser.add_subparsers(dest="group", required=True)

    dbp = top.add_parser("db", help="schema management").add_subparsers(dest="cmd", required=True)
    dbp.add_parser("upgrade", help="create/upgrade the control and staging schema").set_defaults(fn=cmd_db_upgrade)

    con = top.add_parser("connections", help="webhook connections").add_subparsers(dest="cmd", required=True)
    p = con.add_parser("create", help="create a connection; prints its webhook URL and secret once")
    p.add_argument("--org", required=True)
    p.add_argument("--name")
    p.add_argument("--rate-limit", type=int, help="events per minute for the whole org (default 600)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_create)
    p = con.add_parser("list", help="list live connections")
    p.add_argument("--org")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)
    p = con.add_parser("delete", help="delete a connection (its URL answers 404 at once)")
    p.add_argument("connection_id")
    p.set_defaults(fn=cmd_delete)
    p = con.add_parser("allowlist", help="show or edit the event names that reach the rollups")
    p.add_argument("connection_id")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--set-file", metavar="F", help="replace the allowlist with F's lines")
    group.add_argument("--add", nargs="+", metavar="E")
    group.add_argument("--remove", nargs="+", metavar="E")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_allowlist)
    p = con.add_parser("rate-limit", help="set the org's events-per-minute cap")
    p.add_argument("connection_id")
    p.add_argument("per_minute", type=int, metavar="PER_MINUTE")
    p.set_defaults(fn=cmd_rate_limit)
    p = con.add_parser("recent-events", help="the newest staged events (debugging)")
    p.add_argument("connection_id")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_recent)

    p = con.add_parser("outbound", help="send computed traits, audiences and moments back to Segment")
    p.add_argument("connection_id")
    p.add_argument("--write-key", help="the write key of the Segment source to send to (stored encrypted)")
    p.add_argument("--region", choices=["us", "eu"])
    toggle = p.add_mutually_exclusive_group()
    toggle.add_argument("--enable", action="store_true", help="send again (a new connection starts enabled)")
    toggle.add_argument("--disable", action="store_true", help="stop sending; other options leave this as it is")
    p.set_defaults(fn=cmd_outbound)
    p = con.add_parser("outbound-test", help="send one test track event to Segment and print its answer")
    p.add_argument("connection_id")
    p.set_defaults(fn=cmd_outbound_test)
    p = con.add_parser("reconcile", help="re-resolve a connection's stored events under the current rules")
    p.add_argument("connection_id")
    p.set_defaults(fn=cmd_reconcile)

    for name, entity in (("accounts", entities.ACCOUNTS), ("contacts", entities.CONTACTS)):
        sub = top.add_parser(name, help=f"the host product's {name}").add_subparsers(dest="cmd", required=True)
        p = sub.add_parser("import", help=f"upsert {name} from a CSV file")
        p.add_argument("--org", required=True)
        p.add_argument("file", metavar="FILE.csv")
        p.set_defaults(fn=_import(entity))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with db.connect() as conn:
            if args.fn is not cmd_db_upgrade and schema.current_version(conn) is None:
                raise UserError("the database has no segment-elt schema yet: run `segment-elt db upgrade` first")
            args.fn(args, conn)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: cannot reach PostgreSQL ({first}); check DATABASE_URL or start the embedded server "
              "(python -m segment_elt.embedded start)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
