"""Alias moves made through modelyard, recorded in the registry itself, append-only.

Each move is one registered-model tag, `modelyard.history.<ms since epoch>.<random hex>`,
whose value is a small JSON object (alias, from, to, actor, at, why, kind). One tag per
event keeps every value far below the registry's tag-size limit however long the history
grows, and the random suffix makes two concurrent appends write two different keys, so
neither can overwrite the other. Keys sort in time order.

MLflow has no compare-and-set on aliases: `expect` narrows the window in which a concurrent
move can be overtaken but cannot close it. A move made elsewhere (the MLflow UI, another
tool) leaves the alias different from the last recorded destination; the next promote or
rollback notices that and records it as an event of its own before moving.
"""

import getpass
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from registry import versions
from registry.errors import AliasNotFound, ModelNotFound, NothingToRollBack, StaleAlias

logger = logging.getLogger(__name__)

TAG_PREFIX = "modelyard.history."
OUTSIDE_ACTOR = "unknown (outside modelyard)"
ACTOR_ENV = "MODELYARD_ACTOR"
_MAX_TEXT = 1000
"""Reason and actor are cut to this length: an event's value stays below 5,000 characters."""

Kind = Literal["promote", "rollback", "outside"]


@dataclass(frozen=True, slots=True)
class Move:
    """One recorded alias move: `from_version` None means the alias was created, `to_version`
    None that it was deleted."""

    key: str
    alias: str
    from_version: str | None
    to_version: str | None
    actor: str
    at: str
    reason: str
    kind: Kind

    def encode(self) -> str:
        """The tag value: compact JSON."""
        return json.dumps(
            {
                "alias": self.alias,
                "from": self.from_version,
                "to": self.to_version,
                "actor": self.actor,
                "at": self.at,
                "reason": self.reason,
                "kind": self.kind,
            },
            separators=(",", ":"),
        )


def new_move(
    alias: str,
    from_version: str | None,
    to_version: str | None,
    *,
    actor: str,
    reason: str,
    kind: Kind,
    now_ms: int | None = None,
) -> Move:
    """A move with a fresh unique key stamped `now_ms` (default: now)."""
    stamp = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return Move(
        key=f"{TAG_PREFIX}{stamp:015d}.{secrets.token_hex(4)}",
        alias=alias,
        from_version=from_version,
        to_version=to_version,
        actor=actor[:_MAX_TEXT],
        at=datetime.fromtimestamp(stamp / 1000, UTC).isoformat(timespec="milliseconds"),
        reason=reason[:_MAX_TEXT],
        kind=kind,
    )


def decode(tags: dict[str, str]) -> list[Move]:
    """The recorded moves among a model's tags, oldest first; unreadable ones are skipped."""
    moves = []
    for key in sorted(k for k in tags if k.startswith(TAG_PREFIX)):
        try:
            value = json.loads(tags[key])
            moves.append(
                Move(
                    key=key,
                    alias=str(value["alias"]),
                    from_version=_version(value.get("from")),
                    to_version=_version(value.get("to")),
                    actor=str(value.get("actor", "")),
                    at=str(value.get("at", "")),
                    reason=str(value.get("reason", "")),
                    kind=value.get("kind", "promote"),
                )
            )
        except (ValueError, KeyError, TypeError):
            logger.warning("skipping unreadable history tag %s", key)
    return moves


def last_move(moves: list[Move], alias: str) -> Move | None:
    """The most recent recorded move of `alias`."""
    return next((m for m in reversed(moves) if m.alias == alias), None)


def unrecorded_move(
    moves: list[Move], alias: str, current: str | None
) -> tuple[str | None, str | None] | None:
    """(recorded, actual) when the alias is not where its last recorded move left it."""
    last = last_move(moves, alias)
    recorded = last.to_version if last else None
    return None if recorded == current else (recorded, current)


def actor() -> str:
    """Who is moving: $MODELYARD_ACTOR (e.g. the CI user), else the login name."""
    configured = os.environ.get(ACTOR_ENV, "").strip()
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def read(client: MlflowClient, name: str) -> tuple[dict[str, str], list[Move]]:
    """The model's aliases (alias -> version) and its recorded moves, in one registry call."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFound(name) from exc
        raise
    return {k: str(v) for k, v in model.aliases.items()}, decode(dict(model.tags))


def promote(
    client: MlflowClient,
    name: str,
    alias: str,
    version: str,
    *,
    expect: str | None = None,
    reason: str = "",
    who: str | None = None,
) -> Move | None:
    """Point `alias` at `version` and record the move; None if it already pointed there.

    With `expect`, refuse (StaleAlias) unless the alias names that version now. A move made
    outside modelyard since the last recorded one is recorded first.
    """
    versions.get(client, name, version)
    aliases, moves = read(client, name)
    current = aliases.get(alias)
    if expect is not None and current != expect:
        raise StaleAlias(name, alias, expect, current)
    notice_outside_move(client, name, alias, current, moves, noticed_by=who or actor())
    if current == version:
        logger.info("%s@%s already names version %s", name, alias, version)
        return None
    return _move(client, name, alias, current, version, who=who, reason=reason, kind="promote")


def rollback(
    client: MlflowClient, name: str, alias: str, *, reason: str = "", who: str | None = None
) -> Move:
    """Return `alias` to the version it named before its last recorded move.

    A second rollback undoes the first: the last recorded move is then the rollback itself.
    """
    aliases, moves = read(client, name)
    current = aliases.get(alias)
    noticed = notice_outside_move(client, name, alias, current, moves, noticed_by=who or actor())
    last = noticed or last_move(moves, alias)
    if last is None:
        if current is None:
            raise AliasNotFound(name, alias)
        raise NothingToRollBack(name, alias, "no move of it is recorded")
    if last.from_version is None:
        raise NothingToRollBack(name, alias, f"it did not exist before its last move ({last.at})")
    versions.get(client, name, last.from_version)
    why = f"rollback of the move at {last.at} ({last.from_version} -> {last.to_version})"
    reason = f"{why}: {reason}" if reason else why
    return _move(
        client, name, alias, current, last.from_version, who=who, reason=reason, kind="rollback"
    )


def _move(
    client: MlflowClient,
    name: str,
    alias: str,
    from_version: str | None,
    to_version: str,
    *,
    who: str | None,
    reason: str,
    kind: Kind,
) -> Move:
    """Set the alias, then append the event, stamped right after the move it records."""
    client.set_registered_model_alias(name, alias, to_version)
    move = new_move(alias, from_version, to_version, actor=who or actor(), reason=reason, kind=kind)
    client.set_registered_model_tag(name, move.key, move.encode())
    logger.info("%s %s@%s: %s -> %s by %s", kind, name, alias, from_version, to_version, move.actor)
    return move


def notice_outside_move(
    client: MlflowClient,
    name: str,
    alias: str,
    current: str | None,
    moves: list[Move],
    *,
    noticed_by: str,
) -> Move | None:
    """Record, as a move by an unknown actor, an alias change modelyard did not record."""
    drift = unrecorded_move(moves, alias, current)
    if drift is None:
        return None
    recorded, actual = drift
    move = new_move(
        alias,
        recorded,
        actual,
        actor=OUTSIDE_ACTOR,
        reason=f"noticed by {noticed_by}: the alias did not name the last recorded version",
        kind="outside",
    )
    client.set_registered_model_tag(name, move.key, move.encode())
    logger.warning("%s@%s was moved outside modelyard: %s -> %s", name, alias, recorded, actual)
    return move


def _version(value: object) -> str | None:
    return None if value is None else str(value)
