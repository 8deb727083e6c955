"""The views of the Segment page, rendered from page_queries' results."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from html import escape
from urllib.parse import quote

from segment_ui.layout import PREFIX, chart, e, link, page, table


def jsonable(data):
    return json.loads(
        json.dumps(
            data,
            default=lambda v: (
                v.isoformat()
                if isinstance(v, (dt.date, dt.datetime))
                else float(v)
                if isinstance(v, decimal.Decimal)
                else str(v)
            ),
        )
    )


def q(value: str) -> str:
    return quote(value, safe="")


def error_page(message: str) -> str:
    return page("Not available", f'<p class="bad" id="error">{escape(message)}</p>')


def _rollups(run: dict | None) -> str:
    if run is None:
        return '<p class="muted" id="rollups">segment_rollups has not run yet.</p>'
    marts = run["detail"].get("marts")  # row counts the rollups run recorded (runs.mart_counts)
    rows = f"; marts: {e(', '.join(f'{k} {v:,}' for k, v in marts.items()))}" if marts else ""
    status = f'<span class="{"ok" if run["status"] == "success" else "bad"}">{e(run["status"])}</span>'
    return (
        f'<p class="box" id="rollups">Last segment_rollups run: {status}, started {e(run["started_at"])}, '
        f"finished {e(run['finished_at'])}, {e(run['staged_rows'])} staged rows{rows}</p>"
    )


def connections_page(items: list[dict], run: dict | None) -> str:
    rows = []
    for c in items:
        cid = c["connection_id"]
        rejected = e(c["rejected_1h"]) + (
            f'<small class="bad">{e(c["top_reject_reason"])}</small>' if c["top_reject_reason"] else ""
        )
        outbound = ("disabled" if not c["outbound_enabled"] else "enabled") if c["outbound_region"] else "off"
        if c["outbound_last_status"]:
            outbound += f", last {e(c['outbound_last_status'])} {e(c['outbound_last_at'])}"
        rows.append(
            [
                f'{link(f"/connections/{q(cid)}/debugger", cid)}<small class="muted">{e(c["name"])}</small>',
                e(c["org_id"]),
                f'<code class="url">{e(c["webhook_url"])}</code>',
                e(c["events_today"]),
                e(c["events_7d"]),
                e(c["last_received_at"]),
                rejected,
                e(c["rate_limit_per_minute"]),
                e(c["allowlisted_events"]),
                outbound,
                f'<form class="inline" method="post" action="{PREFIX}/connections/{q(cid)}/reconcile">'
                f'<button type="submit">Reconcile</button></form>',
            ]
        )
    body = _rollups(run) + table(
        [
            "connection",
            "org",
            "webhook URL",
            "events today",
            "events 7 d",
            "last event received",
            "rejected 1 h, top reason",
            "events / min",
            "allow- list",
            "outbound",
            "",
        ],
        rows,
        "No connections yet: segment-elt connections create --org ORG",
        {3, 4, 7, 8},
        'id="connections"',
    )
    body += (
        '<p class="muted">Events today / 7 d are allowlisted events by event day and the last event received '
        "is the newest in the marts, both as of the last rollups run; the debugger shows staging live.</p>"
    )
    return page("Segment connections", body, "/connections")


DEBUGGER_SCRIPT = """
function cell(v){
  const t=document.createElement('td');
  if(v&&v.href){const a=document.createElement('a');a.href=v.href;a.textContent=v.text;t.appendChild(a)}
  else t.textContent=(v===null||v===undefined)?'-':String(v);
  return t}
function fill(id, rows, keys){
  const body=document.querySelector('#'+id+' tbody'); if(!body) return;
  body.replaceChildren(...rows.map(r=>{const tr=document.createElement('tr');
    keys.forEach(k=>tr.appendChild(cell(typeof k==='function'?k(r):r[k])));return tr}));
}
async function refresh(){
  try{
    const r=await fetch(SOURCE,{credentials:'same-origin',headers:{accept:'application/json'}});
    if(!r.ok){document.getElementById('status').textContent='refresh failed: HTTP '+r.status;return}
    const d=await r.json();
    fill('accepted', d.accepted, ['received_at','event_type','event_name',r=>r.in_allowlist?'yes':'no',
      'external_group_id','external_user_id',r=>r.account_id?{href:ACCOUNTS+encodeURIComponent(r.account_id),
      text:r.account_id}:null,'matched_by']);
    fill('rejected', d.rejected, ['rejected_at','status','reason','repeats','body_bytes']);
    document.getElementById('status').textContent='updated '+new Date().toISOString().slice(11,19)+' UTC';
  }catch(err){document.getElementById('status').textContent='refresh failed: '+err}
}
setInterval(refresh, REFRESH_MS);
"""


def debugger_page(data: dict, event_name: str, show: str, allowlist: list[str], seen: list[str], refresh_s: int) -> str:
    cid = data["connection_id"]
    source = f"{PREFIX}/api/connections/{q(cid)}/debugger?event_name={q(event_name)}&show={q(show)}"
    options = "".join(
        f'<option value="{v}"{" selected" if v == show else ""}>{v}</option>' for v in ("all", "accepted", "rejected")
    )
    body = (
        f"<p>Connection <code>{e(cid)}</code> of org {e(data['org_id'])} · "
        f'<span id="status" class="muted">refreshes every {refresh_s} s</span></p>'
        f'<form method="get" id="filter">event name <input name="event_name" value="{escape(event_name)}" '
        f'list="seen-names"> <select name="show">{options}</select> <button type="submit">Filter</button></form>'
    )
    if show != "rejected":
        body += "<h2>Newest accepted events</h2>" + live_table(
            "accepted",
            [
                "received",
                "type",
                "event name",
                "in allowlist",
                "externalGroupId",
                "externalUserId",
                "resolved account",
                "matched_by",
            ],
            [
                [
                    e(r["received_at"]),
                    e(r["event_type"]),
                    e(r["event_name"]),
                    e(r["in_allowlist"]),
                    e(r["external_group_id"]),
                    e(r["external_user_id"]),
                    _account(data["org_id"], r["account_id"]),
                    e(r["matched_by"]),
                ]
                for r in data["accepted"]
            ],
        )
    if show != "accepted":
        body += "<h2>Newest rejected requests</h2>" + live_table(
            "rejected",
            ["rejected", "status", "reason", "repeats", "bytes"],
            [
                [e(r["rejected_at"]), e(r["status"]), e(r["reason"]), e(r["repeats"]), e(r["body_bytes"])]
                for r in data["rejected"]
            ],
        )
    suggestions = "".join(f'<option value="{escape(n)}">' for n in seen)
    removes = "".join(
        f'<form class="inline" method="post" action="{PREFIX}/connections/{q(cid)}/allowlist">'
        f'<input type="hidden" name="remove" value="{escape(n)}"><button type="submit" '
        f'title="remove">{escape(n)} ✕</button></form> '
        for n in allowlist
    )
    body += (
        f'<h2>Allowlist</h2><div class="box" id="allowlist">{removes or "<span class=muted>empty</span>"}'
        f'<form method="post" action="{PREFIX}/connections/{q(cid)}/allowlist">add <input name="add" '
        f'list="seen-names" placeholder="event name"> <button type="submit">Add</button></form>'
        f'<datalist id="seen-names">{suggestions}</datalist>'
        f'<p class="muted">Suggested: the names of recent events not on the allowlist'
        f"{': ' + escape(', '.join(seen)) if seen else ' (none)'}.</p></div>"
        f'<form method="post" action="{PREFIX}/connections/{q(cid)}/reconcile"><button type="submit" '
        f'id="reconcile">Reconcile this connection</button></form>'
    )
    accounts = f"{PREFIX}/accounts/{q(data['org_id'])}/"
    script = (
        f"const SOURCE={json.dumps(source)};const ACCOUNTS={json.dumps(accounts)};"
        f"const REFRESH_MS={refresh_s * 1000};" + DEBUGGER_SCRIPT
    )
    return page(f"Debugger · {data['org_id']}", body, "/connections", script)


def _account(org_id: str, account_id: str | None) -> str:
    return link(f"/accounts/{q(org_id)}/{q(account_id)}", account_id) if account_id else e(None)


def live_table(table_id: str, headings: list[str], rows: list[list[str]]) -> str:
    """A table the debugger's script refills; rendered even when empty."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def account_page(data: dict, only: str | None) -> str:
    org, account = data["org_id"], data["account_id"]
    names = sorted({r["event_name"] for r in data["daily"]})
    options = '<option value="">all event names (stacked)</option>' + "".join(
        f'<option value="{escape(n)}"{" selected" if n == only else ""}>{escape(n)}</option>' for n in names
    )
    health = data["health"]
    score = (
        (
            f'<p class="box" id="health">Health score <b>{e(health["health_score"])}</b> '
            f"(computed {e(health['computed_at'])})</p>"
        )
        if health
        else '<p class="muted">No health score yet.</p>'
    )
    body = (
        f"<p>Account <code>{e(account)}</code> {e(data['name'])} of org {e(org)}</p>{score}"
        f"<h2>Daily events, {data['since']} to {data['today']}</h2>"
        f'<form method="get">show <select name="event_name" onchange="this.form.submit()">{options}</select>'
        f'<noscript><button type="submit">Show</button></noscript></form>'
        + chart(data["daily"], data["since"], data["today"], only)
    )
    body += "<h2>Health score components</h2>" + table(
        ["component", "measure", "target", "weight", "score (0-1)"],
        [
            [
                e(c["component"]),
                e(round(c["measure"], 2) if isinstance(c["measure"], float) else c["measure"]),
                e(c["target"]),
                e(c["weight"]),
                e(c["score"]),
            ]
            for c in data["components"]
        ],
        "No score yet.",
        {1, 2, 3, 4},
        'id="components"',
    )
    body += "<h2>Indicators</h2>" + table(
        ["event name", "events 7 d", "events 30 d", "active users 7 d", "active users 30 d", "last seen"],
        [
            [
                e(i["event_name"]),
                e(i["events_7d"]),
                e(i["events_30d"]),
                e(i["active_users_7d"]),
                e(i["active_users_30d"]),
                e(i["last_seen_at"]),
            ]
            for i in data["indicators"]
        ],
        "No indicators yet.",
        {1, 2, 3, 4},
        'id="indicators"',
    )
    body += "<h2>Latest events</h2>" + table(
        ["event time", "event name", "type", "user", "matched_by"],
        [
            [e(t["event_at"]), e(t["event_name"]), e(t["event_type"]), e(t["user_id"]), e(t["matched_by"])]
            for t in data["timeline"]
        ],
        "No events yet.",
        attrs='id="timeline"',
    )
    return page(f"Account {data['name'] or account}", body, "/connections")


def identity_page(reports: list, days: int, missing: str | None) -> str:
    body = (
        f"<p>Identity resolution over the last {days} UTC days. Which account an event belongs to is decided by "
        f"the ordered rules in <code>dbt_project/seeds/identity_rules.csv</code>: "
        f'<a href="{PREFIX}/identity/rules" id="rules-help">how to edit the identity rules</a>.</p>'
    )
    if missing:
        body += f'<p class="muted">{escape(missing)}</p>'
    for report in reports:
        body += (
            f'<h2 id="{escape(report.connection_id)}">{e(report.connection_id)} '
            f'<span class="muted">org {e(report.org_id)}</span></h2>'
        )
        body += table(
            ["matched_by", "events", "share"],
            [[e(r["matched_by"]), e(r["event_count"]), e(f"{r['share']:.1%}")] for r in report.by_rule],
            "No events in the window.",
            {1, 2},
        )
        body += table(
            ["unresolved key", "value", "events", "last seen"],
            [
                [e(v["kind"]), e(v["value"]), e(v["event_count"]), e(v["last_seen_at"])]
                for v in report.unresolved_values
            ],
            "No unresolved keys.",
            {2},
        )
    if not reports and not missing:
        body += '<p class="muted">No connections yet.</p>'
    return page("Identity resolution", body, "/identity")


def outbound_page(items: list[dict]) -> str:
    body = ""
    for item in items:
        state = (
            ("enabled" if item["enabled"] else "disabled") + f" ({item['region']})"
            if item["configured"]
            else "not configured (segment-elt connections outbound CONN --write-key KEY)"
        )
        body += (
            f'<h2>{e(item["connection_id"])} <span class="muted">org {e(item["org_id"])}</span></h2>'
            f"<p>Outbound: <b>{escape(state)}</b></p>"
        )
        body += table(
            ["started", "finished", "status", "sent", "unchanged", "oversized", "failed", "last error"],
            [
                [
                    e(r["started_at"]),
                    e(r["finished_at"]),
                    e(r["status"]),
                    e(r["sent"]),
                    e(r["skipped_unchanged"]),
                    e(r["oversized"]),
                    e(r["failed"]),
                    e(r["error"]),
                ]
                for r in item["runs"]
            ],
            "No syncs yet.",
            {3, 4, 5, 6},
            'class="outbound-runs"',
        )
    return page("Outbound syncs", body or '<p class="muted">No connections yet.</p>', "/outbound")


def reconcile_page(connection_id: str, run_id: str, run_url: str) -> str:
    body = (
        f'<p id="triggered">Triggered <code>segment_reconcile</code> for <code>{e(connection_id)}</code>: run '
        f'<a href="{escape(run_url)}" id="run-link">{e(run_id)}</a>.</p>'
        f"<p>{link('/connections', 'Back to the connections')}</p>"
    )
    return page("Reconcile", body, "/connections", OPEN_IN_AIRFLOW_SCRIPT)


# Airflow shows the page in a sandboxed iframe that may not navigate the top window; being of the
# same origin, it asks Airflow's own router (history + popstate) to open the run instead.
OPEN_IN_AIRFLOW_SCRIPT = """
document.getElementById('run-link').addEventListener('click', function (event) {
  try {
    if (window.top === window) return;
    window.top.history.pushState({}, '', this.getAttribute('href'));
    window.top.dispatchEvent(new PopStateEvent('popstate'));
    event.preventDefault();
  } catch (err) { /* another origin: follow the link inside the frame */ }
});
"""


RULES_HELP = """
<p>The rules are the CSV file <code>dbt_project/seeds/identity_rules.csv</code> of the project (no SQL): one row per
rule, <code>connection_id,chain,position,source,target</code>. <code>connection_id</code> <code>*</code> is the
default chain; a connection with any row of its own uses only its own rows. <code>account</code> rules are tried
first in <code>position</code> order, then <code>contact</code> rules (a matched contact gives its account).
Sources: <code>groupId</code>, <code>userId</code>, <code>anonymousId</code>, <code>email</code>,
<code>payload:&lt;dot.path&gt;</code>; targets: <code>account.external_id</code>, <code>account.ps_id</code>,
<code>account.vitally_id</code>, <code>account.trait:&lt;key&gt;</code>, <code>contact.product_external_user_id</code>,
<code>contact.email</code>, <code>contact.trait:&lt;key&gt;</code>. The full reference is
<code>docs/identity.md</code> of the project.</p>
<p>After editing the file, deploy it with the DAGs (the next segment_rollups run loads it) and press
<b>Reconcile</b> on a connection to re-resolve its stored events under the new rules; this page then shows how
they resolved.</p>
"""


def rules_page(rules_csv: str | None) -> str:
    current = (
        f'<h2>The rules in effect</h2><pre id="rules">{escape(rules_csv)}</pre>'
        if rules_csv is not None
        else '<p class="muted">identity_rules.csv was not found next to the DAGs.</p>'
    )
    return page("How to edit the identity rules", RULES_HELP + current, "/identity")
