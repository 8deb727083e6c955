import json

import requests

from segment_elt import connections, samples


def test_signed_event_lands_in_archive_and_staging(db, archive_url, receiver_factory):
    created = connections.create(db, "acme")
    receiver = receiver_factory()
    body = json.dumps(samples.event("track", user_id="u1", name="Signed Up")).encode()
    answer = requests.post(receiver.webhook(created.connection_id), data=body, headers=samples.headers(created.secret, body))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1, "duplicates": 0}
    key, = db.execute("select archive_key from raw.segment_events").fetchone()
    from segment_elt.archive import open_archive
    assert open_archive(archive_url).get(key) == body
