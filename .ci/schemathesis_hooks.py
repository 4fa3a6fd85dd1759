"""Hooks for .ci/schemathesis (loaded through SCHEMATHESIS_HOOKS).

A message's `expires_at` must come after its `send_at` (else a 400 naming `expires_at`), a rule across
two fields that no JSON schema states. Generated bodies that break it are schema-valid yet rightly
refused, so each is mended here before it is sent: its window moved to close five minutes after it
opens. Everything else schemathesis generates goes out as generated.
"""

from datetime import datetime, timedelta

import schemathesis


def _time(value):
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _mend(message):
    if not isinstance(message, dict):
        return
    send_at, expires_at = _time(message.get("send_at")), _time(message.get("expires_at"))
    if send_at is not None and expires_at is not None and send_at.tzinfo is not None and expires_at.tzinfo is not None:
        if expires_at <= send_at:
            message["expires_at"] = (send_at + timedelta(minutes=5)).isoformat()


@schemathesis.hook
def map_body(context, body):
    operation = context.operation
    if operation is None or operation.method.upper() != "POST":
        return body
    if operation.path == "/messages":
        _mend(body)
    elif operation.path == "/messages/batch" and isinstance(body, dict) and isinstance(body.get("messages"), list):
        for message in body["messages"]:
            _mend(message)
    return body
