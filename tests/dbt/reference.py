"""An independent, plain-Python reading of docs/tables.md and docs/identity.md, to check the dbt marts against.

Event time: the first of timestamp, originalTimestamp, sentAt, receivedAt that is a valid ISO
time (kept as reported_event_at), unless it lies outside [received - 5 years, received + 1 day],
where the arrival time stands in (as it does when none is valid).

It shares no code with the dbt project: it takes the landed events in arrival order, the
allowlists, entities and rules, and computes every mart row the way the contract words it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, getcontext

getcontext().prec = 40
UTC = dt.UTC
NAMES = {"page": "$page", "screen": "$screen", "identify": "$identify", "group": "$group", "alias": "$alias"}
ISO_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def text(value):
    """A JSON value as PostgreSQL's ->> gives it."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, separators=(", ", ": "))


def first_present(*values):
    return next((v for v in values if v is not None), None)


def get(doc, *path):
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def blank_none(value):
    return None if value in (None, "") else value


def email(value):
    return blank_none(value.strip(" ").lower()) if isinstance(value, str) else None


def timestamp(value):
    if not isinstance(value, str) or not ISO_PREFIX.match(value):
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def years_before(at: dt.datetime, years: int) -> dt.datetime:
    """The same instant `years` calendar years earlier; 29 February becomes the 28th."""
    try:
        return at.replace(year=at.year - years)
    except ValueError:
        return at.replace(year=at.year - years, day=28)


@dataclass
class Event:
    connection_id: str
    org_id: str
    message_id: str
    event_type: str | None
    received_at: dt.datetime
    payload: dict

    def __post_init__(self):
        p = self.payload
        self.event_name = text(p.get("event")) if self.event_type == "track" else NAMES.get(self.event_type)
        self.event_name = blank_none(self.event_name)
        self.user_id = blank_none(text(p.get("userId")))
        self.anonymous_id = blank_none(text(p.get("anonymousId")))
        self.user_key = self.user_id or self.anonymous_id
        # the anonymousId an identify (or, by previousId, an alias) with a userId links to it
        linked = {"identify": self.anonymous_id, "alias": blank_none(text(p.get("previousId")))}
        self.linked_anonymous_id = linked.get(self.event_type) if self.user_id else None
        self.group_id = blank_none(text(p.get("groupId"))) or blank_none(text(get(p, "context", "groupId")))
        self.email = (
            email(text(get(p, "traits", "email")))
            or email(text(get(p, "context", "traits", "email")))
            or email(text(get(p, "properties", "email")))
        )
        self.reported_event_at = next(
            (
                t
                for t in (timestamp(text(p.get(k))) for k in ("timestamp", "originalTimestamp", "sentAt", "receivedAt"))
                if t
            ),
            None,
        )
        self.event_at = (
            self.reported_event_at
            if self.reported_event_at is not None
            and years_before(self.received_at, 5) <= self.reported_event_at <= self.received_at + dt.timedelta(days=1)
            else self.received_at
        )
        self.event_date = self.event_at.date()
        self.order = (self.event_at, self.received_at, self.message_id.encode())


def dedupe(landed: list[Event]) -> list[Event]:
    """One event per (connection, messageId): the first to arrive."""
    seen, out = set(), []
    for event in landed:
        key = (event.connection_id, event.message_id)
        if key not in seen:
            seen.add(key)
            out.append(event)
    return out


def entity_keys(accounts: list[dict], contacts: list[dict]) -> dict:
    """(org, target, value) -> (account_id, contact_id); on a tie the smallest id wins."""
    found: dict = {}

    def add(org, target, value, account_id, contact_id):
        if value in (None, ""):
            return
        key, entity = (org, target, value), (account_id, contact_id)
        rank = (contact_id or account_id).encode()
        if key not in found or rank < (found[key][1] or found[key][0]).encode():
            found[key] = entity

    for a in accounts:
        for field in ("external_id", "ps_id", "vitally_id"):
            add(a["org_id"], f"account.{field}", a[field], a["account_id"], None)
        for k, v in a["traits"].items():
            add(a["org_id"], f"account.trait:{k}", text(v), a["account_id"], None)
    for c in contacts:
        add(
            c["org_id"],
            "contact.product_external_user_id",
            c["product_external_user_id"],
            c["account_id"],
            c["contact_id"],
        )
        add(c["org_id"], "contact.email", email(c["email"]), c["account_id"], c["contact_id"])
        for k, v in c["traits"].items():
            add(c["org_id"], f"contact.trait:{k}", text(v), c["account_id"], c["contact_id"])
    return found


def rules_for(rules: list[dict], connection_id: str) -> list[dict]:
    own = [r for r in rules if r["connection_id"] == connection_id]
    chosen = own or [r for r in rules if r["connection_id"] == "*"]
    # account chain first, then position, then (rules sharing a position) the rule name in byte order
    return sorted(chosen, key=lambda r: (r["chain"] != "account", int(r["position"]), rule_name(r).encode()))


def rule_name(rule: dict) -> str:
    return f"{rule['chain']}:{rule['source']}->{re.sub(r'^(account|contact)[.]', '', rule['target'])}"


class Reference:
    def __init__(
        self, landed, allowlist, accounts, contacts, rules, weights, as_of, session_gap_minutes=30, features=()
    ):
        self.features = list(features)
        self.session_gap = dt.timedelta(minutes=session_gap_minutes)
        self.events = dedupe(landed)
        self.allowlist = set(allowlist)
        self.accounts, self.contacts, self.rules, self.weights, self.as_of = accounts, contacts, rules, weights, as_of
        self.keys = entity_keys(accounts, contacts)
        self.groups, self.identifies = defaultdict(list), defaultdict(list)
        first_links: dict = {}
        for e in self.events:
            key = (e.org_id, e.linked_anonymous_id)
            if e.linked_anonymous_id and (key not in first_links or e.order < first_links[key].order):
                first_links[key] = e
            if e.event_type == "group" and e.group_id and e.user_key:
                self.groups[(e.org_id, e.user_key)].append(e)
            if e.event_type == "identify" and e.email and e.user_key:
                self.identifies[(e.org_id, e.user_key)].append(e)
        self.links = {key: call.user_id for key, call in first_links.items()}

    def stitched_user(self, e: Event):
        """userId, else the userId the first call linking its anonymousId (in its org) names."""
        return e.user_id or self.links.get((e.org_id, e.anonymous_id))

    def user_of(self, e: Event):
        """Whose group and identify calls the event reads: its stitched user, else its anonymousId."""
        return self.stitched_user(e) or e.anonymous_id

    def group_of(self, e: Event):
        if e.group_id:
            return e.group_id
        calls = self.groups.get((e.org_id, self.user_of(e)), [])
        before = [c for c in calls if c.event_at <= e.event_at]
        if before:
            return max(before, key=lambda c: c.order).group_id
        return min(calls, key=lambda c: c.order).group_id if calls else None

    def email_of(self, e: Event):
        if e.email:
            return e.email
        calls = self.identifies.get((e.org_id, self.user_of(e)), [])
        return max(calls, key=lambda c: c.order).email if calls else None

    def resolve(self, e: Event):
        group, mail = self.group_of(e), self.email_of(e)
        for rule in rules_for(self.rules, e.connection_id):
            source = rule["source"]
            value = {
                "groupId": group,
                "userId": self.stitched_user(e),
                "anonymousId": e.anonymous_id,
                "email": mail,
            }.get(source)
            if source.startswith("payload:"):
                value = text(get(e.payload, *source[len("payload:") :].split(".")))
            if rule["target"] == "contact.email":
                value = email(value)
            match = self.keys.get((e.org_id, rule["target"], value))
            if match:
                return match[0], match[1], rule_name(rule), group, mail
        return None, None, None, group, mail

    def product_events(self) -> list[dict]:
        rows = []
        for e in self.events:
            if (e.connection_id, e.event_name) not in self.allowlist:
                continue
            account_id, contact_id, matched_by, group, mail = self.resolve(e)
            rows.append(
                dict(
                    org_id=e.org_id,
                    connection_id=e.connection_id,
                    message_id=e.message_id,
                    event_type=e.event_type,
                    event_name=e.event_name,
                    user_id=self.stitched_user(e),
                    anonymous_id=e.anonymous_id,
                    external_group_id=group,
                    email=mail,
                    event_at=e.event_at,
                    event_date=e.event_date,
                    reported_event_at=e.reported_event_at,
                    received_at=e.received_at,
                    account_id=account_id,
                    contact_id=contact_id,
                    matched_by=matched_by,
                    properties=e.payload.get("properties"),
                    _order=e.order,
                )
            )
        return rows

    def account_event_daily(self, events) -> list[dict]:
        groups = defaultdict(list)
        for r in events:
            groups[(r["org_id"], r["account_id"], r["event_date"], r["event_name"])].append(r)
        return [
            dict(
                org_id=k[0],
                account_id=k[1],
                event_date=k[2],
                event_name=k[3],
                event_count=len(rs),
                unique_users=len({r["user_id"] or r["anonymous_id"] for r in rs} - {None}),
            )
            for k, rs in groups.items()
        ]

    def account_indicators(self, events) -> list[dict]:
        groups = defaultdict(list)
        for r in events:
            if r["event_at"] <= self.as_of:
                groups[(r["org_id"], r["account_id"], r["event_name"])].append(r)
        out = []
        for (org, account, name), rs in groups.items():

            def window(days, rs=rs):
                return [r for r in rs if r["event_at"] > self.as_of - dt.timedelta(days=days)]

            users = lambda rows: len({r["user_id"] or r["anonymous_id"] for r in rows} - {None})  # noqa: E731
            out.append(
                dict(
                    org_id=org,
                    account_id=account,
                    event_name=name,
                    events_7d=len(window(7)),
                    events_30d=len(window(30)),
                    active_users_7d=users(window(7)),
                    active_users_30d=users(window(30)),
                    last_seen_at=max(r["event_at"] for r in rs),
                )
            )
        return out

    def account_health(self, events) -> list[dict]:
        accounts = {(a["org_id"], a["account_id"]) for a in self.accounts}
        seen = defaultdict(list)
        for r in events:
            if r["account_id"] is not None and r["event_at"] <= self.as_of:
                seen[(r["org_id"], r["account_id"])].append(r)
        out = []
        for key in accounts | set(seen):
            rs = seen.get(key, [])
            recent = [r for r in rs if r["event_at"] > self.as_of - dt.timedelta(days=30)]
            measures = {
                "activity": Decimal(len(recent)),
                "breadth": Decimal(len({r["event_name"] for r in recent})),
                "users": Decimal(len({r["user_id"] or r["anonymous_id"] for r in recent} - {None})),
                "engagement": Decimal(len({r["event_date"] for r in recent})),
            }
            days = (
                Decimal(str((self.as_of - max(r["event_at"] for r in rs)).total_seconds())) / Decimal(86400)
                if rs
                else None
            )
            total = weight_sum = Decimal(0)
            for w in self.weights:
                weight, target = Decimal(str(w["weight"])), Decimal(str(w["target"]))
                if w["component"] == "recency":
                    score = max(Decimal(0), 1 - days / target) if days is not None else Decimal(0)
                else:
                    score = min(Decimal(1), measures[w["component"]] / target)
                total += weight * score
                weight_sum += weight
            score = (100 * total / weight_sum).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            out.append(dict(org_id=key[0], account_id=key[1], health_score=score, computed_at=self.as_of))
        return out

    def user_traits(self, events) -> list[dict]:
        calls = defaultdict(list)
        for e in self.events:
            if e.event_type == "identify" and e.user_id:
                calls[(e.org_id, e.user_id)].append(e)
        out = []
        for (org, user), cs in calls.items():
            traits, mails = {}, [c for c in cs if c.email]
            for c in sorted(cs, key=lambda c: c.order):
                if isinstance(c.payload.get("traits"), dict):
                    traits.update(c.payload["traits"])
            mine = sorted((r for r in events if r["org_id"] == org and r["user_id"] == user), key=lambda r: r["_order"])
            contact = next((r["contact_id"] for r in reversed(mine) if r["contact_id"] is not None), None)
            account = next((r["account_id"] for r in reversed(mine) if r["account_id"] is not None), None)
            out.append(
                dict(
                    org_id=org,
                    user_id=user,
                    email=max(mails, key=lambda c: c.order).email if mails else None,
                    contact_id=contact,
                    account_id=account,
                    traits=traits,
                    last_identified_at=max(c.event_at for c in cs),
                )
            )
        return out

    def account_traits(self) -> list[dict]:
        calls = defaultdict(list)
        for e in self.events:
            if e.event_type == "group" and e.group_id:
                calls[(e.org_id, e.group_id)].append(e)
        out = []
        for (org, group), cs in calls.items():
            traits = {}
            for c in sorted(cs, key=lambda c: c.order):
                if isinstance(c.payload.get("traits"), dict):
                    traits.update(c.payload["traits"])
            latest = max(cs, key=lambda c: c.order)
            account = None
            for rule in rules_for(self.rules, latest.connection_id):
                if rule["chain"] == "account" and rule["source"] == "groupId":
                    match = self.keys.get((org, rule["target"], group))
                    if match:
                        account = match[0]
                        break
            out.append(
                dict(
                    org_id=org,
                    external_group_id=group,
                    account_id=account,
                    traits=traits,
                    last_grouped_at=latest.event_at,
                )
            )
        return out

    def recent_events(self, events) -> list[dict]:
        resolved = {(r["connection_id"], r["message_id"]): r["account_id"] for r in events}
        return [
            dict(
                connection_id=e.connection_id,
                received_at=e.received_at,
                message_id=e.message_id,
                event_type=e.event_type,
                event_name=e.event_name,
                in_allowlist=(e.connection_id, e.event_name) in self.allowlist,
                external_group_id=first_present(
                    text(e.payload.get("groupId")), text(get(e.payload, "context", "groupId"))
                ),
                external_user_id=text(e.payload.get("userId")),
                account_id=resolved.get((e.connection_id, e.message_id)),
            )
            for e in self.events
        ]

    def sessions(self, events) -> list[dict]:
        """A user's allowlisted track, page and screen calls in order; a gap over session_gap starts the next."""
        calls = defaultdict(list)
        for r in events:
            user = r["user_id"] or r["anonymous_id"]
            if r["event_type"] in ("track", "page", "screen") and user is not None:
                calls[(r["org_id"], user)].append(r)
        out = []
        for (org, user), rs in calls.items():
            runs: list[list[dict]] = []
            for r in sorted(rs, key=lambda r: (r["_order"], r["connection_id"].encode())):
                if runs and r["event_at"] - runs[-1][-1]["event_at"] <= self.session_gap:
                    runs[-1].append(r)
                else:
                    runs.append([r])
            for number, run in enumerate(runs, 1):
                start, end = run[0]["event_at"], run[-1]["event_at"]
                pages = [r for r in run if r["event_type"] in ("page", "screen")]
                props = pages[0]["properties"] if pages else None
                accounts = [r["account_id"] for r in run if r["account_id"] is not None]
                out.append(
                    dict(
                        org_id=org,
                        user_key=user,
                        session_number=number,
                        session_start=start,
                        session_end=end,
                        session_date=start.date(),
                        duration_s=Decimal((end - start) // dt.timedelta(microseconds=1)) / 1_000_000,
                        event_count=len(run),
                        first_name=blank_none(text(get(props, "name"))) or blank_none(text(get(props, "path"))),
                        account_id=accounts[0] if accounts else None,
                    )
                )
        return out

    def account_engagement_daily(self, events, sessions) -> list[dict]:
        """Per account and day with events or sessions: active users, the sessions starting that day,
        their minutes, and the days with events among the trailing 7 and 30."""
        users, active, by_day = defaultdict(set), defaultdict(set), defaultdict(list)
        for r in events:
            users[(r["org_id"], r["account_id"], r["event_date"])].add(r["user_id"] or r["anonymous_id"])
            active[(r["org_id"], r["account_id"])].add(r["event_date"])
        for s in sessions:
            by_day[(s["org_id"], s["account_id"], s["session_date"])].append(s["duration_s"] / 60)
        cents = lambda d: d.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)  # noqa: E731
        out = []
        for org, account, day in set(users) | set(by_day):
            minutes = sorted(by_day.get((org, account, day), []))
            middle = len(minutes) // 2
            median = (
                (minutes[middle] if len(minutes) % 2 else (minutes[middle - 1] + minutes[middle]) / 2)
                if minutes
                else None
            )
            days = active.get((org, account), set())
            out.append(
                dict(
                    org_id=org,
                    account_id=account,
                    event_date=day,
                    active_users=len(users.get((org, account, day), set()) - {None}),
                    sessions=len(minutes),
                    session_minutes=cents(sum(minutes, Decimal(0))),
                    median_session_minutes=cents(median) if median is not None else None,
                    active_days_7d=sum(1 for d in days if day - dt.timedelta(days=6) <= d <= day),
                    active_days_30d=sum(1 for d in days if day - dt.timedelta(days=29) <= d <= day),
                )
            )
        return out

    def feature_adoption(self, events) -> list[dict]:
        """Per account and feature (a named group of event names, else an event name of its own):
        first and last use, distinct users, adopted at the feature's min_users (empty: 1)."""
        named = defaultdict(set)
        for f in self.features:
            named[f["event_name"]].add((f["feature"].strip(), int(f["min_users"] or 1)))
        uses = defaultdict(list)
        for r in events:
            user = r["user_id"] or r["anonymous_id"]
            if r["account_id"] is None or user is None:
                continue
            for feature, min_users in named.get(r["event_name"]) or {(r["event_name"], 1)}:
                uses[(r["org_id"], r["account_id"], feature)].append((r, user, min_users))
        return [
            dict(
                org_id=org,
                account_id=account,
                feature=feature,
                first_used_at=min(r["event_at"] for r, _, _ in rs),
                last_used_at=max(r["event_at"] for r, _, _ in rs),
                users=len({user for _, user, _ in rs}),
                adopted=len({user for _, user, _ in rs}) >= rs[0][2],
            )
            for (org, account, feature), rs in uses.items()
        ]

    def marts(self) -> dict[str, list[dict]]:
        events = self.product_events()
        sessions = self.sessions(events)
        return {
            "product_events": events,
            "account_event_daily": self.account_event_daily(events),
            "account_indicators": self.account_indicators(events),
            "account_health": self.account_health(events),
            "user_traits": self.user_traits(events),
            "account_traits": self.account_traits(),
            "recent_events": self.recent_events(events),
            "sessions": sessions,
            "account_engagement_daily": self.account_engagement_daily(events, sessions),
            "feature_adoption": self.feature_adoption(events),
        }
