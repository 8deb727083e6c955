"""Import the host product's accounts and contacts (app.accounts, app.contacts) from CSV.

An import changes only what its file says, because these records drive identity resolution and
a file exported from another tool rarely carries every column: a column the header does not name
is left as it is, an empty cell clears its column, and traits change key by key (a column that is
not the table's is one trait key; a `traits` column holding a JSON object merges its keys, the
separate columns winning). Rows upsert on (org, id). A malformed file or a bad row stops the
import with its line number and nothing written; a dry run reports what would change.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from segment_elt.errors import UserError

TRAITS = "traits"
CLEARS_TRAITS = "clears_traits"  # a row's flag: its `traits` cell was empty, so the traits start over


@dataclass(frozen=True)
class Entity:
    table: str
    key: str
    columns: tuple[str, ...]


ACCOUNTS = Entity("app.accounts", "account_id", ("name", "external_id", "ps_id", "vitally_id"))
CONTACTS = Entity("app.contacts", "contact_id", ("account_id", "email", "product_external_user_id"))
MAX_FIELD = 1000


@dataclass(frozen=True)
class Change:
    """One record an import writes: as it was (None: new) and as it will be."""

    key: str
    before: dict | None
    after: dict

    def differences(self) -> list[str]:
        """What changes, one `column: old -> new` (or `trait key: ...`) per changed value."""
        before = self.before or {}
        described = [
            f"{c}: {before.get(c)!r} -> {v!r}" for c, v in self.after.items() if c != TRAITS and before.get(c) != v
        ]
        old_traits, new_traits = before.get(TRAITS) or {}, self.after[TRAITS]
        described += [
            f"trait {k}: {old_traits.get(k)!r} -> {new_traits.get(k)!r}"
            for k in sorted(set(old_traits) | set(new_traits))
            if old_traits.get(k) != new_traits.get(k)
        ]
        return described


@dataclass(frozen=True)
class ImportPlan:
    """What an import writes: the new and updated records; unchanged ones are not written."""

    new: list[Change]
    updated: list[Change]
    unchanged: int


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """The file's non-blank records with the line each starts on; a malformed one is a UserError."""
    nul = text.find("\0")
    if nul >= 0:
        raise UserError(
            f"line {text.count(chr(10), 0, nul) + 1}: the file holds a NUL byte, so it is not CSV text "
            "(save it from the spreadsheet as CSV UTF-8); nothing was imported"
        )
    reader = csv.reader(io.StringIO(text), strict=True)
    while True:
        starts = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problem = "a quoted cell that starts here is never closed" if "end of data" in str(exc) else str(exc)
            raise UserError(f"line {starts}: {problem}; nothing was imported") from None
        if fields:
            yield starts, fields


def parse_csv(text: str, entity: Entity) -> list[dict]:
    """The file's rows, each holding only what its header names: {column: value or None (clear)},
    `traits` as {key: value or None (remove)}, and CLEARS_TRAITS when its `traits` cell is empty."""
    records = _records(text)
    header = next(records, (1, []))[1]
    if entity.key not in header:
        raise UserError(f"the CSV has no {entity.key!r} column (its header is: {', '.join(header) or 'empty'})")
    if len(set(header)) != len(header):
        raise UserError("the CSV header repeats a column name")
    rows, seen = [], set()
    for line, fields in records:
        if len(fields) != len(header):
            raise UserError(
                f"line {line}: {'more' if len(fields) > len(header) else 'fewer'} fields than the header has columns"
            )
        record = {column: value.strip() for column, value in zip(header, fields, strict=True)}
        key = record.pop(entity.key)
        if not key:
            raise UserError(f"line {line}: {entity.key} is empty")
        if key in seen:
            raise UserError(f"line {line}: {entity.key} {key!r} appears twice in the file")
        seen.add(key)
        too_long = [k for k, v in record.items() if len(v) > MAX_FIELD]
        if too_long:
            raise UserError(f"line {line}: column {too_long[0]!r} is longer than {MAX_FIELD} characters")
        row: dict = {entity.key: key, TRAITS: {}}
        if TRAITS in record:
            row[TRAITS] = _traits_object(record.pop(TRAITS), line)
            row[CLEARS_TRAITS] = row[TRAITS] is None
            row[TRAITS] = row[TRAITS] or {}
        for column, value in record.items():
            if column in entity.columns:
                row[column] = value or None
            else:
                row[TRAITS][column] = value or None
        if entity is CONTACTS and row.get("email") and "@" not in row["email"]:
            raise UserError(f"line {line}: email {row['email']!r} is not an email address")
        rows.append(row)
    return rows


def _traits_object(cell: str, line: int) -> dict | None:
    """A `traits` cell: None when empty (the traits are cleared), else its JSON object."""
    if not cell:
        return None
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UserError(
            f"line {line}: the traits cell is not a JSON object ({cell[:60]!r}); write it as "
            '{"key": "value", ...} or put each trait in a column of its own'
        )
    return value


def upsert(
    conn: psycopg.Connection, org_id: str, entity: Entity, rows: list[dict], *, dry_run: bool = False
) -> ImportPlan:
    """Apply rows (as parse_csv gives them) to the org's records in one transaction; write nothing on a dry run."""
    if conn.execute("select 1 from control.orgs where org_id = %s", (org_id,)).fetchone() is None:
        raise UserError(
            f"no org {org_id!r}: create a connection for it first (`segment-elt connections create --org {org_id}`)"
        )
    columns = [entity.key, *entity.columns, TRAITS]
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            f"select {', '.join(columns)} from {entity.table} where org_id = %s and {entity.key} = any(%s) for update",
            (org_id, [r[entity.key] for r in rows]),
        )
        existing = {record[0]: dict(zip(columns, record, strict=True)) for record in cur.fetchall()}
        changes = [
            Change(r[entity.key], existing.get(r[entity.key]), _applied(entity, existing.get(r[entity.key]), r))
            for r in rows
        ]
        plan = ImportPlan(
            new=[c for c in changes if c.before is None],
            updated=[c for c in changes if c.before is not None and c.before != c.after],
            unchanged=sum(c.before == c.after for c in changes),
        )
        written = plan.new + plan.updated
        if written and not dry_run:
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
            cur.executemany(
                f"insert into {entity.table} (org_id, {', '.join(columns)}, updated_at) "
                f"values (%s, {', '.join(['%s'] * len(columns))}, now()) "
                f"on conflict (org_id, {entity.key}) do update set {updates}, updated_at = now()",
                [(org_id, *[json.dumps(c.after[k]) if k == TRAITS else c.after[k] for k in columns]) for c in written],
            )
    return plan


def _applied(entity: Entity, before: dict | None, row: dict) -> dict:
    """The record `before` (None: a new one) with what `row` names changed and nothing else."""
    after = dict(before) if before else {entity.key: row[entity.key], **dict.fromkeys(entity.columns), TRAITS: {}}
    after.update({column: row[column] for column in entity.columns if column in row})
    traits = {} if row.get(CLEARS_TRAITS) else dict(after[TRAITS] or {})
    for key, value in (row.get(TRAITS) or {}).items():
        if value is None:
            traits.pop(key, None)
        else:
            traits[key] = value
    after[TRAITS] = traits
    return after
