"""The one error reply: what a caller that set `reply_to` gets when its message could not be
handled and was dead-lettered (docs/messages.md, "Error replies"); and the two exceptions a
handler raises to say which kind of failure it is.

Its shape is portal_auth's `Failure` ({version, ok: false, error, message}), so a caller can tell
every answer apart by `ok`, and a portal_auth caller reads it as a `Failure`.
"""

from __future__ import annotations

from typing import Literal

from shared.contracts.base import Contract

ErrorCode = Literal[
    "bad_request",  # not JSON, not the message's contract, a malformed property or header
    "refused",  # a well-formed command the owning service refuses (the reason says why)
    "unavailable",  # a transient failure outlasted every retry
    "failed",  # an unexpected error (a bug): an operator has the dead letter
]


class BadMessage(ValueError):
    """The message is malformed (a bad property or header, a routing key nobody handles, an
    invalid address): dead-lettered, and a caller is answered `bad_request`."""


class Refused(Exception):
    """A well-formed command the service will never apply (another client's user, an unknown
    delivery): dead-lettered, and a caller is answered `refused` with this text as the reason."""


class ErrorReply(Contract):
    """Sent to the request's `reply_to`, with its `correlation_id`, once the request is in its
    queue's dead-letter queue."""

    version: Literal[1] = 1
    ok: Literal[False] = False
    error: ErrorCode
    message: str
