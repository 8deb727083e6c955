"""Loading a random world through the real tables, running real dbt, and diffing marts with the reference."""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from decimal import Decimal
from pathlib import Path

import psycopg

from segment_elt.control import connections, entities
from segment_elt.ingest import landing
from segment_elt.pipeline.transform import run_dbt
from segment_elt.settings import settings
from tests.dbt.reference import Event, Reference
from tests.dbt.world import AS_OF, World

KEYS = {
    "product_events": ("connection_id", "message_id"),
    "account_event_daily": ("org_id", "account_id", "event_date", "event_name"),
    "account_indicators": ("org_id", "account_id", "event_name"),
    "account_health": ("org_id", "account_id"),
    "user_traits": ("org_id", "user_id"),
    "account_traits": ("org_id", "external_group_id"),
    "recent_events": ("connection_id", "message_id"),
    "sessions": ("org_id", "user_key", "session_number"),
    "account_engagement_daily": ("org_id", "account_id", "event_date"),
    "feature_adoption": ("org_id", "account_id", "feature"),
}
VARS = json.dumps({"as_of": AS_OF.isoformat()})


def copy_project(tmp: Path) -> Path:
    """A copy of the dbt project whose identity_rules seed a test can rewrite."""
    target = tmp / "dbt_project"
    shutil.copytree(settings().dbt_project_dir, target, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    return target


def write_rules(project: Path, rules: list[dict], ids: dict[str, str]) -> list[dict]:
    resolved = [dict(r, connection_id=ids.get(r["connection_id"], r["connection_id"])) for r in rules]
    with (project / "seeds" / "identity_rules.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["connection_id", "chain", "position", "source", "target"])
        writer.writeheader()
        writer.writerows(resolved)
    return resolved


def write_features(project: Path, features: list[dict]) -> None:
    with (project / "seeds" / "features.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["feature", "event_name", "min_users"])
        writer.writeheader()
        writer.writerows(features)


def health_weights(project: Path) -> list[dict]:
    with (project / "seeds" / "health_weights.csv").open() as fh:
        return list(csv.DictReader(fh))


class Loaded:
    """A world loaded into a database: connections, allowlists, entities; events land in batches."""

    def __init__(self, db: psycopg.Connection, world: World, project: Path):
        self.db, self.world, self.project = db, world, project
        self.ids = {name: connections.create(db, org).connection_id for name, org in world.connections.items()}
        for name in world.connections:
            names = [e for c, e in world.allowlist if c == name]
            connections.allowlist(db, self.ids[name], add=names)
        for org in sorted(set(world.connections.values())):
            entities.upsert(db, org, entities.ACCOUNTS, [a for a in world.accounts if a["org_id"] == org])
            entities.upsert(db, org, entities.CONTACTS, [c for c in world.contacts if c["org_id"] == org])
        self.rules = write_rules(project, world.rules, self.ids)
        write_features(project, world.features)
        self.landed: list[Event] = []

    def land(self, batch: list[tuple[str, dict]], received_at: dt.datetime) -> None:
        for i, (name, payload) in enumerate(batch):
            at = received_at + dt.timedelta(milliseconds=i)
            cid, org = self.ids[name], self.world.connections[name]
            landing.insert_events(
                self.db,
                connection_id=cid,
                org_id=org,
                text=json.dumps(payload),
                events=[payload],
                received_at=at,
                archive_key="test",
            )
            self.landed.append(Event(cid, org, landing.message_id(payload), landing.event_type(payload), at, payload))

    def build(self, *extra: str) -> None:
        run_dbt(["build", "--vars", VARS, *extra], project_dir=self.project)

    def reference(self) -> dict[str, list[dict]]:
        allowlist = [(self.ids[c], e) for c, e in self.world.allowlist]
        return Reference(
            self.landed,
            allowlist,
            self.world.accounts,
            self.world.contacts,
            self.rules,
            health_weights(self.project),
            AS_OF,
            features=self.world.features,
        ).marts()


def _norm(value):
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    if isinstance(value, Decimal):
        return round(float(value), 2)
    return value


def fetch_marts(db: psycopg.Connection) -> dict[str, dict[tuple, dict]]:
    out = {}
    for mart, key in KEYS.items():
        with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
            rows = cur.execute(f"select * from analytics.{mart}").fetchall()
        out[mart] = index(rows, key)
    return out


def index(rows: list[dict], key: tuple[str, ...]) -> dict[tuple, dict]:
    indexed = {}
    for row in rows:
        clean = {k: _norm(v) for k, v in row.items() if not k.startswith("_")}
        k = tuple(clean[c] for c in key)
        assert k not in indexed, f"duplicate key {k}"
        indexed[k] = clean
    return indexed


def differences(expected: dict[str, list[dict]], actual: dict[str, dict[tuple, dict]]) -> list[str]:
    diffs = []
    for mart, key in KEYS.items():
        want, got = index(expected[mart], key), actual[mart]
        for k in sorted(set(want) | set(got), key=repr):
            if k not in got:
                diffs.append(f"{mart} {k}: missing, expected {want[k]}")
            elif k not in want:
                diffs.append(f"{mart} {k}: unexpected row {got[k]}")
            else:
                for column, value in want[k].items():
                    if got[k].get(column) != value:
                        diffs.append(f"{mart} {k}.{column}: dbt {got[k].get(column)!r} != reference {value!r}")
    return diffs
