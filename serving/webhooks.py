"""Verifying MLflow registry webhooks (HMAC-SHA256 over delivery id, timestamp and body).

A verified delivery is only a hint to poll the registry now: deliveries are best effort and
may arrive late or out of order, so their payload is never trusted for what to serve.
"""

import base64
import hashlib
import hmac
import json
import time
from collections import OrderedDict

EVENTS = frozenset({"model_version_alias.created", "model_version_alias.deleted"})
SIGNATURE_VERSION = "v1"


def is_alias_event(body: bytes) -> bool:
    """Whether a verified delivery is about an alias (the only events that move slots)."""
    try:
        payload = json.loads(body)
        return f"{payload['entity']}.{payload['action']}" in EVENTS
    except (ValueError, KeyError, TypeError):
        return False


class BadDelivery(Exception):
    """A delivery that is not signed right, too old, or seen before."""


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The signature MLflow sends in X-MLflow-Signature: `v1,<base64 HMAC-SHA256>`."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


class Verifier:
    """Checks signatures, rejects stale timestamps and replayed delivery ids."""

    def __init__(self, secret: str, *, max_age_s: float = 300, remember: int = 10_000) -> None:
        self._secret = secret
        self._max_age_s = max_age_s
        self._remember = remember
        self._seen: OrderedDict[str, None] = OrderedDict()

    def verify(
        self,
        delivery_id: str | None,
        timestamp: str | None,
        signed: str | None,
        body: bytes,
        now: float | None = None,
    ) -> None:
        """Raise BadDelivery unless the delivery is authentic, fresh and new."""
        if not (delivery_id and timestamp and signed):
            raise BadDelivery(
                "missing X-MLflow-Delivery-Id, X-MLflow-Timestamp or X-MLflow-Signature"
            )
        expected = signature(self._secret, delivery_id, timestamp, body)
        if not hmac.compare_digest(signed.encode(), expected.encode()):
            raise BadDelivery("signature does not match")
        try:
            age = (time.time() if now is None else now) - int(timestamp)
        except ValueError:
            raise BadDelivery("timestamp is not a Unix time") from None
        if abs(age) > self._max_age_s:
            raise BadDelivery(f"timestamp is {age:.0f} s off; more than {self._max_age_s:.0f} s")
        if delivery_id in self._seen:
            raise BadDelivery("delivery id seen before")
        self._seen[delivery_id] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
