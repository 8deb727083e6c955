"""Nothing Segment should have gets lost: changes that return to an earlier value, long or dated
Retry-After answers, batch and event sizes as Segment counts them, one broken connection among
several, and group calls for accounts Segment knows by the product's own groupId."""

from __future__ import annotations

import email.utils
import json
import time

import pytest

from segment_elt.outbound import segment_api, sync
from tests.outbound.conftest import enable
from tests.outbound.test_sync import FAST, fill, run_sync


def health_of(segment, user_id: str) -> list[float]:
    return [m["traits"]["account_health_score"] for m in segment.messages() if m.get("userId") == user_id]


def test_a_trait_that_returns_to_an_earlier_value_within_a_day_reaches_segment(marts, segment):
    enable(marts, segment, "acme", "wk-1")
    fill(marts, users=("u1",), health=80)
    run_sync(marts)
    for health in (12, 80):
        marts.execute(
            "update analytics.outbound_identify set traits = jsonb_set(traits, '{account_health_score}', %s)",
            (json.dumps(health),),
        )
        run_sync(marts)
    assert health_of(segment, "u1") == [80, 12, 80]
    assert segment.dropped == []


def test_an_audience_left_and_joined_again_reaches_segment(marts, segment):
    enable(marts, segment, "acme", "wk-1")
    fill(marts, users=("u1",))
    for members in (["u1"], [], ["u1"]):
        marts.execute("delete from audiences.power_users")
        for user in members:
            marts.execute("insert into audiences.power_users values ('acme', %s)", (user,))
        run_sync(marts)
    assert [m["traits"]["power_users"] for m in segment.messages() if m.get("userId") == "u1"] == [True, False, True]


def test_a_retried_change_keeps_its_message_id_so_segment_keeps_it_once(marts, segment):
    """Segment kept the batch but its answer was lost: the retry must dedupe, not duplicate."""
    enable(marts, segment, "acme", "wk-1")
    fill(marts, users=("u1",))
    segment.script["wk-1"] = [(500, {}, "kept")] * 10
    with pytest.raises(sync.OutboundFailed):
        run_sync(marts)
    segment.script["wk-1"] = []
    run_sync(marts)
    sent_ids = [m["messageId"] for body in segment.bodies for m in json.loads(body)["batch"]]
    assert len(segment.messages()) == 3 and len(sent_ids) > 3
    assert {m["messageId"] for m in segment.dropped} == {m["messageId"] for m in segment.messages()} == set(sent_ids)


@pytest.mark.timeout(60)
def test_a_huge_retry_after_is_capped(marts, segment):
    enable(marts, segment, "acme", "wk-1")
    fill(marts)
    segment.script["wk-1"] = [(429, {"Retry-After": "100000"})]
    result = sync.sync_all(**FAST, max_retry_after_s=0.5)
    assert [c["sent"] for c in result.values()] == [4]
    assert 0.4 <= segment.arrivals[1] - segment.arrivals[0] < 5
    assert segment_api.SegmentClient("k").max_retry_after_s == 300  # Segment's own library's cap
    assert segment_api.retry_after_s("100000", 300) == 300


def test_a_retry_after_given_as_an_http_date_is_honoured(marts, segment):
    enable(marts, segment, "acme", "wk-1")
    fill(marts)
    segment.script["wk-1"] = [(503, {"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)})]
    result = run_sync(marts)
    assert [c["sent"] for c in result.values()] == [4]
    assert segment.arrivals[1] - segment.arrivals[0] >= 0.9  # the date has one-second resolution


def test_batches_as_received_stay_under_475000_bytes_and_events_under_32_kb(marts, segment):
    enable(marts, segment, "acme", "wk-1")
    for i in range(300):
        traits = {f"note_{n}": "y" * 1000 for n in range(5)} | {"accented": "é" * (i % 50)}
        marts.execute("insert into analytics.outbound_identify values ('acme', %s, %s)", (f"u{i}", json.dumps(traits)))
    marts.execute(
        "insert into analytics.outbound_identify values ('acme', 'edge', %s)",
        (json.dumps({"blob": "z" * (32 * 1024 - 200)}),),
    )
    result = run_sync(marts)
    assert max(len(body) for body in segment.bodies) <= 475_000
    received = [m for body in segment.bodies for m in json.loads(body)["batch"]]
    assert max(len(json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode()) for m in received) <= 32 * 1024
    counts = next(iter(result.values()))
    assert counts["sent"] + counts["oversized"] == 301 and len(segment.messages()) == counts["sent"]


def test_an_undecryptable_write_key_fails_only_its_connection(marts, segment):
    good = enable(marts, segment, "globex", "wk-2")
    bad = enable(marts, segment, "acme", "wk-1")
    marts.execute("update control.outbound set write_key_enc = 'not-a-fernet-token' where connection_id = %s", (bad,))
    fill(marts, "acme")
    fill(marts, "globex")
    with pytest.raises(sync.OutboundFailed, match=f"{bad}: .*cannot be decrypted") as failure:
        run_sync(marts)
    assert good not in str(failure.value)
    runs = dict(marts.execute("select connection_id, status from control.outbound_runs").fetchall())
    assert runs == {bad: "failed", good: "success"}
    assert len(segment.messages("wk-2")) == 4
    failed = marts.execute(
        "select failed, error from control.outbound_runs where connection_id = %s", (bad,)
    ).fetchone()
    assert failed[0] == 4 and "SEGMENT_ELT_FERNET_KEY" in failed[1]


def test_a_connection_whose_models_break_fails_alone(marts, segment):
    good = enable(marts, segment, "globex", "wk-2")
    bad = enable(marts, segment, "acme", "wk-1")
    fill(marts, "globex")
    marts.execute("insert into analytics.outbound_identify values ('acme', 'u1', '\"not an object\"')")
    with pytest.raises(sync.OutboundFailed, match=bad):
        run_sync(marts)
    assert dict(marts.execute("select connection_id, status from control.outbound_runs").fetchall()) == {
        bad: "failed",
        good: "success",
    }
    assert len(segment.messages("wk-2")) == 4


def test_an_account_without_a_product_group_id_is_skipped_and_counted(marts, segment):
    cid = enable(marts, segment, "acme", "wk-1")
    fill(marts, users=())
    marts.execute("insert into analytics.outbound_group values ('acme', 'a2', null, '{\"health_score\": 5}')")
    result = run_sync(marts)
    assert result[cid]["skipped"] == {"group_without_product_group_id": 1}
    assert [m["groupId"] for m in segment.messages() if m["type"] == "group"] == ["ext-1"]
    assert marts.execute("select skipped from control.outbound_runs").fetchone()[0] == {
        "group_without_product_group_id": 1
    }
