"""What every route of one receiver process shares, made once by create_app."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from segment_elt.ingest.receiver.backends import Backends
from segment_elt.ingest.receiver.groups import GroupCommitter
from segment_elt.ingest.receiver.rejects import RejectsLog

EXTENSION = "segment_elt"


@dataclass(frozen=True)
class ReceiverState:
    backends: Backends  # the database and the archive, with the connections read from them
    groups: GroupCommitter  # the group commit every accepted request lands through
    rejects: RejectsLog  # the refusals kept for the debugger


def receiver_state(app: Flask | None = None) -> ReceiverState:
    """The state of `app`, else of the app handling the current request."""
    return (app or current_app).extensions[EXTENSION]
