"""Import the host product's accounts and contacts (app.accounts, app.contacts) from CSV.

Columns are the tables' own; any other column becomes a key of `traits`. Rows upsert on
(org, id). A bad row stops the import with its line number and nothing written.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import psycopg

from segment_elt.control.errors import UserError


@dataclass(frozen=True)
class Entity:
    table: str
    key: str
    columns: tuple[str, ...]


ACCOUNTS = Entity("app.accounts", "account_id", ("name", "external_id", "ps_id", "vitally_id"))
CONTACTS = Entity("app.contacts", "contact_id", ("account_id", "email", "product_external_user_id"))
MAX_FIELD = 1000


def parse_csv(text: str, entity: Entity) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if entity.key not in header:
        raise UserError(f"the CSV has no {entity.key!r} column (its header is: {', '.join(header) or 'empty'})")
    if len(set(header)) != len(header):
        raise UserError("the CSV header repeats a column name")
    rows, seen = [], set()
    for line, record in enumerate(reader, start=2):
        if None in record:
            raise UserError(f"line {line}: more fields than the header has columns")
        key = (record.get(entity.key) or "").strip()
        if not key:
            raise UserError(f"line {line}: {entity.key} is empty")
        if key in seen:
            raise UserError(f"line {line}: {entity.key} {key!r} appears twice in the file")
        seen.add(key)
        too_long = [k for k, v in record.items() if v is not None and len(v) > MAX_FIELD]
        if too_long:
            raise UserError(f"line {line}: column {too_long[0]!r} is longer than {MAX_FIELD} characters")
        row = {entity.key: key}
        for column in entity.columns:
            value = (record.get(column) or "").strip()
            row[column] = value or None
        if entity is CONTACTS and row["email"] and "@" not in row["email"]:
            raise UserError(f"line {line}: email {row['email']!r} is not an email address")
        row["traits"] = {k: v for k, v in record.items() if k not in row and k not in entity.columns and v not in (None, "")}
        rows.append(row)
    return rows


def upsert(conn: psycopg.Connection, org_id: str, entity: Entity, rows: list[dict]) -> int:
    if conn.execute("select 1 from control.orgs where org_id = %s", (org_id,)).fetchone() is None:
        raise UserError(f"no org {org_id!r}: create a connection for it first (`segment-elt connections create --org {org_id}`)")
    columns = [entity.key, *entity.columns, "traits"]
    updates = ", ".join(f"{c} = excluded.{c}" for c in [*entity.columns, "traits"])
    sql = (
        f"insert into {entity.table} (org_id, {', '.join(columns)}, updated_at) "
        f"values (%s, {', '.join(['%s'] * len(columns))}, now()) "
        f"on conflict (org_id, {entity.key}) do update set {updates}, updated_at = now()"
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(sql, [(org_id, *[json.dumps(r[c]) if c == "traits" else r[c] for c in columns]) for r in rows])
    return len(rows)
