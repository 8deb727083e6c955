"""seeds/features.csv: mistakes stop feature_adoption with one sentence per bad row (file, row,
feature, fix), as identity_rules.csv's do; a valid file groups event names into named features
adopted at their min_users, and other allowlisted events are features of their own name."""

from __future__ import annotations

import datetime as dt

from segment_elt.control import connections
from segment_elt.pipeline.transform import run_dbt
from tests.dbt.harness import Loaded, copy_project, fetch_marts
from tests.dbt.world import AS_OF, World

MISTAKES = """Reporting,Report Created,2
Reporting,Export Downloaded,3
,Invite Sent,
Sharing,,
Browsing,$page,two
Browsing,$screen,
Browsing,$page,
"""


def test_each_mistake_is_one_sentence_and_feature_adoption_does_not_run(db, tmp_path, capfd):
    connections.create(db, "acme")
    project = copy_project(tmp_path)
    (project / "seeds" / "features.csv").write_text("feature,event_name,min_users\n" + MISTAKES)
    results = run_dbt(["build"], project_dir=project, check=False)
    statuses = {r.node.name: str(r.status) for r in results}
    printed = capfd.readouterr().out
    for sentence in [
        "features.csv rows 2, 3 (feature Reporting): these rows give the feature different min_users (2, 3);"
        " give every row of a feature the same one",
        "features.csv row 4 (feature , event Invite Sent): the feature is empty; name the feature this event"
        " belongs to",
        "features.csv row 5 (feature Sharing, event ): the event_name is empty; write an event name as the marts"
        " show it (a track's name, or $page, $screen)",
        "features.csv row 6 (feature Browsing, event $page): min_users 'two' is not a whole number of users,"
        " 1 or more; write how many of an account's users must use the feature for it to count as adopted,"
        " or leave it empty for 1",
        "features.csv rows 6, 8 (feature Browsing, event $page): the same event is listed twice for the feature;"
        " keep one row",
    ]:
        assert sentence in printed
    assert statuses["feature_adoption"] == "skipped"
    assert statuses["product_events"] == "success"


def test_named_features_are_adopted_at_their_min_users(db, tmp_path):
    world = World(
        connections={"web": "org-a"},
        allowlist=[("web", "Report Created"), ("web", "Export Downloaded"), ("web", "Invite Sent")],
        features=[
            dict(feature="Reporting", event_name="Report Created", min_users="2"),
            dict(feature="Reporting", event_name="Export Downloaded", min_users="2"),
        ],
    )
    world.accounts = [
        dict(
            org_id="org-a",
            account_id="acme",
            name="Acme",
            external_id="acme-ext",
            ps_id=None,
            vitally_id=None,
            traits={},
        )
    ]
    world.rules = [dict(connection_id="*", chain="account", position=1, source="groupId", target="account.external_id")]
    loaded = Loaded(db, world, copy_project(tmp_path))
    day = AS_OF - dt.timedelta(days=5)

    def track(message_id, event, user, hours):
        at = (day + dt.timedelta(hours=hours)).isoformat()
        return "web", dict(
            type="track", event=event, messageId=message_id, userId=user, groupId="acme-ext", timestamp=at
        )

    loaded.land([track("a", "Report Created", "ada", 1), track("b", "Invite Sent", "ada", 2)], AS_OF)
    loaded.build()
    adoption = fetch_marts(db)["feature_adoption"]
    assert {k[2]: (v["users"], v["adopted"]) for k, v in adoption.items()} == {
        "Reporting": (1, False),
        "Invite Sent": (1, True),
    }
    loaded.land([track("c", "Export Downloaded", "bob", 3)], AS_OF + dt.timedelta(minutes=1))
    loaded.build()
    reporting = fetch_marts(db)["feature_adoption"][("org-a", "acme", "Reporting")]
    assert (reporting["users"], reporting["adopted"]) == (2, True)
    assert reporting["first_used_at"] == day + dt.timedelta(hours=1)
    assert reporting["last_used_at"] == day + dt.timedelta(hours=3)
