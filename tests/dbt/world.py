"""Random worlds for the property test: orgs, connections, entities, rules and messy Segment events."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

AS_OF = dt.datetime(2026, 6, 30, 12, 0, tzinfo=dt.UTC)
TRACK_NAMES = ["Report Created", "Invite Sent", "Export Downloaded", "Login"]
SHARED_IDS = ["ext-1", "ext-2", "ext-3", "ps-1", "ps-2", "vit-1"]  # collide across orgs on purpose
# Worlds tie rule positions on purpose, which the seed's own test refuses: builds skip that test to
# check that resolution is deterministic all the same (as when models are run without their tests).
ALLOW_TIED_POSITIONS = ("--exclude", "test_name:identity_rule_positions_are_set_and_unique")


@dataclass
class World:
    connections: dict[str, str] = field(default_factory=dict)  # connection name -> org
    allowlist: list[tuple[str, str]] = field(default_factory=list)  # (connection name, event name)
    accounts: list[dict] = field(default_factory=list)
    contacts: list[dict] = field(default_factory=list)
    rules: list[dict] = field(default_factory=list)  # connection_id may be a connection name or '*'
    events: list[tuple[str, dict]] = field(default_factory=list)  # (connection name, payload), in arrival order
    features: list[dict] = field(default_factory=list)  # rows of seeds/features.csv


def _iso(rng: random.Random, at: dt.datetime):
    roll = rng.random()
    if roll < 0.6:
        return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if roll < 0.75:
        return at.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat(timespec="seconds")
    if roll < 0.85:
        return at.replace(tzinfo=None).isoformat(timespec="seconds")  # naive: UTC
    if roll < 0.9:  # a device clock far off: the arrival time stands in
        return rng.choice(["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "2099-12-31T23:59:59Z"])
    return rng.choice(["not a date", "2026-13-45T99:00:00Z", 12345, None])


def _rules(rng: random.Random, connection_names: list[str]) -> list[dict]:
    default = [
        ("account", 1, "groupId", "account.external_id"),
        ("account", 2, "groupId", "account.ps_id"),
        ("account", 3, "groupId", "account.vitally_id"),
        ("contact", 1, "userId", "contact.product_external_user_id"),
        ("contact", 2, "email", "contact.email"),
    ]
    rules = [dict(connection_id="*", chain=c, position=p, source=s, target=t) for c, p, s, t in default]
    if rng.random() < 0.7:  # a default rule tied with groupId->ps_id, listed first: the rule name decides
        rules.insert(
            0, dict(connection_id="*", chain="account", position=2, source="groupId", target="account.trait:tier_code")
        )
    extra_sources = [
        ("account", "payload:properties.account_uuid", "account.external_id"),
        ("account", "groupId", "account.trait:tier_code"),
        ("contact", "payload:context.traits.crm", "contact.trait:crm_id"),
        ("contact", "anonymousId", "contact.product_external_user_id"),
        ("account", "userId", "account.trait:owner"),
    ]
    for name in connection_names:
        if rng.random() < 0.5:  # a connection with rules of its own uses only those
            chosen = rng.sample(default + [(c, 0, s, t) for c, s, t in extra_sources], rng.randint(2, 6))
            by_chain: dict[str, int] = {}
            for chain, _, source, target in chosen:
                tied = chain in by_chain and rng.random() < 0.4  # the same position as the rule before
                by_chain[chain] = by_chain.get(chain, 0) + (0 if tied else 1)
                rules.append(
                    dict(connection_id=name, chain=chain, position=by_chain[chain], source=source, target=target)
                )
    return rules


def _visits_then_login(rng: random.Random, world: World, users: dict[str, list[str]]) -> list[tuple[str, dict]]:
    """Anonymous visitors who browse, then log in: events with only an anonymousId, then an
    identify (or an alias from the anonymousId) linking it to a userId. Visitor ids repeat
    across orgs and visitors may log in as different users, so links must stay within an org
    and the first link must win."""
    events = []
    for n in range(rng.randint(2, 4)):
        name = rng.choice(list(world.connections))
        visitor, at = f"visitor-{rng.randint(0, 2)}", AS_OF - dt.timedelta(days=rng.uniform(1, 40))
        for i in range(rng.randint(1, 4)):
            seen = at - dt.timedelta(hours=rng.uniform(0, 48))
            events.append(
                (
                    name,
                    {
                        "type": rng.choice(["track", "page"]),
                        "event": rng.choice(TRACK_NAMES),
                        "messageId": f"visit-{n}-{i}",
                        "anonymousId": visitor,
                        "timestamp": seen.isoformat(),
                        "properties": {"plan": "free"},
                    },
                )
            )
        user = rng.choice(users[world.connections[name]])
        login = {"messageId": f"login-{n}", "userId": user, "timestamp": at.isoformat()}
        if rng.random() < 0.7:
            login |= {
                "type": "identify",
                "anonymousId": visitor,
                "traits": {"email": rng.choice([f"user{rng.randint(0, 4)}@example.com", None])},
            }
        else:
            login |= {"type": "alias", "previousId": visitor}
        events.append((name, login))
    return events


SESSION_GAPS_MINUTES = [1, 5, 12, 29, 30, 31, 45, 120]  # around the default 30-minute gap, exactly 30 included


def _sessions_of_use(rng: random.Random, world: World, users: dict[str, list[str]]) -> list[tuple[str, dict]]:
    """Bursts of allowlisted track, page and screen calls a few minutes apart (gaps around the
    session gap), by known users and by anonymous visitors who may log in later, days before the
    batches arrive: shuffled into the batches, they straddle runs and arrive late and out of order."""
    events = []
    for n in range(rng.randint(3, 6)):
        name = rng.choice(list(world.connections))
        org = world.connections[name]
        allowed = [e for c, e in world.allowlist if c == name and e in [*TRACK_NAMES, "$page", "$screen"]]
        if not allowed:
            continue
        who = (
            {"userId": rng.choice(users[org])}
            if rng.random() < 0.7
            else {"anonymousId": f"visitor-{rng.randint(0, 2)}"}
        )
        at = AS_OF - dt.timedelta(days=rng.uniform(6, 30))
        for i in range(rng.randint(3, 7)):
            event_name = rng.choice(allowed)
            kind = {"$page": "page", "$screen": "screen"}.get(event_name, "track")
            payload = {"type": kind, "messageId": f"use-{n}-{i}", "timestamp": at.isoformat(), **who}
            if kind == "track":
                payload["event"] = event_name
            else:
                payload["name"] = rng.choice(["Dashboard", "Settings", None])
                payload["properties"] = {"name": payload["name"], "path": rng.choice(["/app", "/billing", ""])}
            if rng.random() < 0.3:
                payload["context"] = {"groupId": rng.choice(SHARED_IDS)}
            events.append((name, payload))
            at += dt.timedelta(minutes=rng.choice(SESSION_GAPS_MINUTES))
    return events


def make_world(seed: int, n_events: int = 120) -> World:
    rng = random.Random(seed)
    world = World()
    orgs = ["org-a", "org-b"]
    for org in orgs:
        for i in range(rng.randint(1, 2)):
            world.connections[f"{org}-c{i}"] = org
    names = list(world.connections)
    for name in names:
        for event_name in rng.sample(
            [*TRACK_NAMES, "$page", "$screen", "$identify", "$group", "$alias"], rng.randint(2, 7)
        ):
            world.allowlist.append((name, event_name))
    users = {org: [f"{org}-u{i}" for i in range(5)] + [str(100 + i) for i in range(2)] for org in orgs}
    for org in orgs:
        for i in range(rng.randint(2, 5)):
            world.accounts.append(
                dict(
                    org_id=org,
                    account_id=f"acc-{i}",
                    name=f"Account {i}",
                    external_id=rng.choice([*SHARED_IDS, None]),
                    ps_id=rng.choice([*SHARED_IDS, None]),
                    vitally_id=rng.choice([*SHARED_IDS, None]),
                    traits={"tier_code": rng.choice(["gold", "silver", "grp-9"]), "owner": rng.choice(users[org])},
                )
            )
        for i in range(rng.randint(2, 5)):
            world.contacts.append(
                dict(
                    org_id=org,
                    contact_id=f"con-{i}",
                    account_id=rng.choice([f"acc-{j}" for j in range(3)] + [None]),
                    email=rng.choice([f"  User{i}@Example.COM ", f"user{i}@example.com", None]),
                    product_external_user_id=rng.choice(users[org] + [None]),
                    traits={"crm_id": rng.choice(["crm-1", "crm-2", "crm-3"])},
                )
            )
    world.rules = _rules(rng, names)
    # named features over some event names (one name in two features), thresholds 1-3 or empty
    for feature, event_names in [
        ("Reporting", ["Report Created", "Export Downloaded"]),
        ("Browsing", ["$page", "Report Created"]),
    ]:
        min_users = rng.choice(["", "1", "2", "3"])
        world.features += [dict(feature=feature, event_name=e, min_users=min_users) for e in event_names]
    groups = [*SHARED_IDS, "grp-9", "gold", "unknown-grp", ""]
    for _n in range(n_events):
        name = rng.choice(names)
        org = world.connections[name]
        kind = rng.choice(["track", "track", "track", "page", "screen", "identify", "group", "alias", None])
        at = AS_OF - dt.timedelta(days=rng.uniform(0, 40))
        payload: dict = {"type": kind} if kind else {}
        if rng.random() < 0.9:
            payload["messageId"] = f"m-{rng.randint(0, n_events * 2)}"  # reuse makes duplicates
        if rng.random() < 0.85:
            payload["userId"] = rng.choice(users[org] + [""])
        if rng.random() < 0.6:
            payload["anonymousId"] = f"anon-{rng.randint(0, 6)}"
        for key in ("timestamp", "originalTimestamp", "sentAt", "receivedAt"):
            if rng.random() < 0.5:
                payload[key] = _iso(rng, at)
        context: dict = {"library": {"name": "analytics.js", "version": "1.0"}}
        if rng.random() < 0.15:
            context["groupId"] = rng.choice(groups)
        if rng.random() < 0.15:
            context["traits"] = {
                "email": rng.choice(["user1@example.com", "USER2@example.com "]),
                "crm": rng.choice(["crm-1", "crm-9"]),
            }
        payload["context"] = context
        if kind == "track":
            payload["event"] = rng.choice([*TRACK_NAMES, ""])
        if kind in ("track", "page", "screen"):
            props: dict = {"plan": rng.choice(["pro", "free"])}
            if rng.random() < 0.2:
                props["account_uuid"] = rng.choice(SHARED_IDS)
            if rng.random() < 0.1:
                props["email"] = "User3@example.com"
            payload["properties"] = props
        if kind == "identify":
            payload["traits"] = {
                "email": rng.choice([f" User{rng.randint(0, 4)}@Example.com", None]),
                "plan": rng.choice(["pro", "free", None]),
                "seats": rng.randint(1, 9),
            }
        if kind == "group":
            if rng.random() < 0.9:
                payload["groupId"] = rng.choice(groups)
            payload["traits"] = {"name": f"Group {rng.randint(0, 3)}", "employees": rng.randint(1, 500)}
        if kind == "alias" and rng.random() < 0.8:
            payload["previousId"] = f"anon-{rng.randint(0, 6)}"
        world.events.append((name, payload))
    world.events += _visits_then_login(rng, world, users)
    world.events += _sessions_of_use(rng, world, users)
    for i in rng.sample(range(len(world.events)), k=min(8, len(world.events))):
        world.events.append(world.events[i])  # exact redeliveries
    rng.shuffle(world.events)  # arrival order is not event order: late events
    return world
