"""Drives the agent's ActivityWatch API with ActivityWatch's own Python
client library (aw-client, as its watchers use it). Run by
agent/tests/aw_api.rs with the API's port as the only argument; exits
non-zero on the first mismatch."""

import sys
from datetime import datetime, timedelta, timezone

from aw_client import ActivityWatchClient
from aw_core.models import Event

port = int(sys.argv[1])
client = ActivityWatchClient("aw-watcher-window", host="127.0.0.1", port=port)

info = client.get_info()
assert "hostname" in info, info

bucket = "aw-watcher-window_testhost"
client.create_bucket(bucket, "currentwindow")
client.create_bucket(bucket, "currentwindow")  # already there: 304, no error
assert client.get_buckets()[bucket]["type"] == "currentwindow"

t0 = datetime(2026, 11, 29, 9, 0, 0, tzinfo=timezone.utc)
data = {"app": "Code", "title": "main.rs"}
for s in range(0, 5):
    client.heartbeat(bucket, Event(timestamp=t0 + timedelta(seconds=s), data=data), pulsetime=2.0)
client.heartbeat(
    bucket,
    Event(timestamp=t0 + timedelta(seconds=5), data={"app": "Firefox", "title": "docs"}),
    pulsetime=2.0,
)
client.insert_events(
    bucket,
    [Event(timestamp=t0 - timedelta(hours=1), duration=timedelta(minutes=5), data={"app": "Mail", "title": "Inbox"})],
)

events = client.get_events(bucket)
assert [e.data["app"] for e in events] == ["Firefox", "Code", "Mail"], events
assert events[1].duration == timedelta(seconds=4), events[1]
assert client.get_eventcount(bucket) == 3

window = client.get_events(bucket, start=t0 - timedelta(minutes=1), end=t0 + timedelta(minutes=1))
assert [e.data["app"] for e in window] == ["Firefox", "Code"], window

mail = events[2]
assert client.get_event(bucket, mail.id).data == mail.data
client.delete_event(bucket, mail.id)
assert client.get_eventcount(bucket) == 2

client.delete_bucket(bucket, force=True)
assert bucket not in client.get_buckets()
print("aw-client: ok")
