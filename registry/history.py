"""Alias moves made through modelyard, recorded in the registry itself.

Each move is one registered-model tag, `modelyard.history.<ms since epoch>.<random hex>`,
whose value is a small JSON object (alias, from, to, actor, at, why, kind, seq, state). The
event is written *before* the alias moves, as `pending`, and rewritten once the move is done
(`applied`, or `not applied` when the move call failed), so no move made through modelyard
goes unrecorded: if the confirmation is lost, the pending event stays and the next promote or
rollback settles it from where the alias points. The random suffix makes two concurrent
appends write two different keys, so neither can overwrite the other.

MLflow stamps neither tag nor alias writes with a time of its own, so events are ordered by
`seq`, one more than the highest the writer read: an event always sorts after every event its
writer saw, whatever the clocks say; events written concurrently tie and fall back to the key.

MLflow has no compare-and-set on aliases: `expect` is checked before the move and read back
after it, which reports a concurrent move but cannot prevent it. A move made elsewhere (the
MLflow UI, another tool) leaves the alias different from the last recorded destination; the
next promote or rollback notices that and records it as an event of its own before moving.
"""

import getpass
import json
import logging
import os
import secrets
import time
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal, get_args

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from registry import versions
from registry.errors import (
    AliasNotFound,
    ModelNotFound,
    NothingToRollBack,
    RegistryError,
    StaleAlias,
)

logger = logging.getLogger(__name__)

TAG_PREFIX = "modelyard.history."
OUTSIDE_ACTOR = "unknown (outside modelyard)"
ACTOR_ENV = "MODELYARD_ACTOR"
TAG_VALUE_LIMIT = 5000
"""Characters a registered-model tag value may hold. MLflow's own check allows 100,000
(`MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH`), but its `registered_model_tags.value` column is
VARCHAR(5000), which PostgreSQL enforces (SQLite does not)."""
CUT_MARKER = " [cut]"
"""Ends a reason or actor shortened to keep the event within TAG_VALUE_LIMIT."""
_MAX_ACTOR = 200

Kind = Literal["promote", "rollback", "outside", "rollout", "rollout-rollback"]
"""`promote`, `rollback` and `outside` move the alias; `rollout` (a step of a progressive
rollout, or its end) and `rollout-rollback` (the candidate's traffic weight set to 0) change
the traffic split and leave the alias where it is."""
MOVE_KINDS: tuple[str, ...] = ("promote", "rollback", "outside")
"""The kinds of event that move an alias: the only ones rollback and drift detection follow."""
State = Literal["pending", "applied", "not applied"]
_STATES: tuple[str, ...] = get_args(State)


class AliasOvertaken(RegistryError):
    """Right after a move, the alias named another version: someone moved it concurrently."""

    def __init__(self, model: str, alias: str, version: str, actual: str | None) -> None:
        now = f"to v{actual}" if actual else "away (deleted it)"
        super().__init__(
            f"model '{model}' alias '{alias}': alias moved by someone else {now} right after "
            f"this command set it to v{version}; both moves are in the history"
        )
        self.model = model
        self.alias = alias
        self.actual = actual


class UnconfirmedMove(RegistryError):
    """The alias moved, but the history event could not be marked applied."""

    def __init__(self, model: str, alias: str, version: str, reason: str) -> None:
        super().__init__(
            f"model '{model}' alias '{alias}' was moved to version {version}, but its history "
            f"event could not be confirmed ({reason}); it shows as unconfirmed until the next "
            "promote or rollback settles it"
        )
        self.model = model
        self.alias = alias


@dataclass(frozen=True, slots=True)
class Move:
    """One recorded alias move: `from_version` None means the alias was created, `to_version`
    None that it was deleted. `seq` orders events; `state` says whether the move took place."""

    key: str
    alias: str
    from_version: str | None
    to_version: str | None
    actor: str
    at: str
    reason: str
    kind: Kind
    seq: int = 0
    state: State = "applied"

    def encode(self) -> str:
        """The tag value: compact JSON, non-ASCII kept as is (an escape costs six characters)."""
        return json.dumps(
            {
                "alias": self.alias,
                "from": self.from_version,
                "to": self.to_version,
                "actor": self.actor,
                "at": self.at,
                "reason": self.reason,
                "kind": self.kind,
                "seq": self.seq,
                "state": self.state,
            },
            ensure_ascii=False,
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
    seq: int = 1,
    state: State = "pending",
    now_ms: int | None = None,
) -> Move:
    """A move with a fresh unique key stamped `now_ms` (default: now), cut to fit one tag."""
    stamp = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    move = Move(
        key=f"{TAG_PREFIX}{stamp:015d}.{secrets.token_hex(4)}",
        alias=alias,
        from_version=from_version,
        to_version=to_version,
        actor=_cut(_clean(actor), _MAX_ACTOR),
        at=datetime.fromtimestamp(stamp / 1000, UTC).isoformat(timespec="milliseconds"),
        reason=_clean(reason),
        kind=kind,
        seq=seq,
        state=state,
    )
    return _fitted(move)


def _clean(text: str) -> str:
    """`text` as valid UTF-8: a lone surrogate (from undecodable argv bytes) becomes '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - len(CUT_MARKER)] + CUT_MARKER


def _fitted(move: Move) -> Move:
    """`move` with its reason shortened (and marked) until its encoding fits one tag value in
    every state, measured on the encoded JSON: quotes and control characters grow there."""

    def fits(reason: str) -> bool:
        return len(replace(move, reason=reason, state="not applied").encode()) <= TAG_VALUE_LIMIT

    if fits(move.reason):
        return move
    kept, over = 0, len(move.reason)
    while over - kept > 1:
        middle = (kept + over) // 2
        kept, over = (middle, over) if fits(move.reason[:middle] + CUT_MARKER) else (kept, middle)
    return replace(move, reason=move.reason[:kept] + CUT_MARKER)


def decode(tags: dict[str, str]) -> list[Move]:
    """The recorded moves among a model's tags, in order; unreadable ones are skipped."""
    moves = []
    for key in (k for k in tags if k.startswith(TAG_PREFIX)):
        try:
            value = json.loads(tags[key])
            state = value.get("state", "applied")
            if state not in _STATES:
                raise ValueError(state)
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
                    seq=int(value.get("seq", 0)),
                    state=state,
                )
            )
        except (ValueError, KeyError, TypeError):
            logger.warning("skipping unreadable history tag %s", key)
    return sorted(moves, key=lambda m: (m.seq, m.key))


def last_move(moves: list[Move], alias: str) -> Move | None:
    """The most recent recorded move of `alias` that was not refused (traffic events aside)."""
    return next(
        (
            m
            for m in reversed(moves)
            if m.alias == alias and m.state != "not applied" and m.kind in MOVE_KINDS
        ),
        None,
    )


def unrecorded_move(
    moves: list[Move], alias: str, current: str | None
) -> tuple[str | None, str | None] | None:
    """(recorded, actual) when the alias is not where its last recorded move left it.

    An unconfirmed move explains the alias naming either of its two ends.
    """
    last = last_move(moves, alias)
    if last is not None and last.state == "pending" and current == last.from_version:
        return None
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

    With `expect`, refuse (StaleAlias) unless the alias names that version now, and raise
    AliasOvertaken if it names another right after the move. A move made outside modelyard
    since the last recorded one is recorded first.
    """
    versions.get(client, name, version)
    aliases, moves = read(client, name)
    current = aliases.get(alias)
    if expect is not None and current != expect:
        raise StaleAlias(name, alias, expect, current)
    moves = _settle(client, name, alias, current, moves, noticed_by=who or actor())
    if current == version:
        logger.info("%s@%s already names version %s", name, alias, version)
        return None
    return _move(
        client,
        name,
        alias,
        current,
        version,
        moves,
        who=who,
        reason=reason,
        kind="promote",
        strict=expect is not None,
    )


def rollback(
    client: MlflowClient, name: str, alias: str, *, reason: str = "", who: str | None = None
) -> Move:
    """Return `alias` to the version it named before its last recorded move.

    A second rollback undoes the first: the last recorded move is then the rollback itself.
    """
    aliases, moves = read(client, name)
    current = aliases.get(alias)
    moves = _settle(client, name, alias, current, moves, noticed_by=who or actor())
    last = last_move(moves, alias)
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
        client,
        name,
        alias,
        current,
        last.from_version,
        moves,
        who=who,
        reason=reason,
        kind="rollback",
    )


def _move(
    client: MlflowClient,
    name: str,
    alias: str,
    from_version: str | None,
    to_version: str,
    moves: list[Move],
    *,
    who: str | None,
    reason: str,
    kind: Kind,
    strict: bool = False,
) -> Move:
    """Record the move as pending, set the alias, mark the event applied, read the alias back.

    A failed pending write moves nothing; a failed move is marked not applied (or, if even
    that write fails, left pending for the next command to settle); a failed confirmation
    raises UnconfirmedMove. With `strict`, another version read back raises AliasOvertaken.
    """
    who = who or actor()
    move = new_move(
        alias, from_version, to_version, actor=who, reason=reason, kind=kind, seq=_next(moves)
    )
    _write(client, name, move)
    try:
        client.set_registered_model_alias(name, alias, to_version)
    except Exception:
        with suppress(Exception):
            _write(client, name, replace(move, state="not applied"))
        raise
    move = replace(move, state="applied")
    try:
        _write(client, name, move)
    except Exception as exc:
        raise UnconfirmedMove(name, alias, to_version, f"{type(exc).__name__}: {exc}") from exc
    logger.info("%s %s@%s: %s -> %s by %s", kind, name, alias, from_version, to_version, move.actor)
    now = read(client, name)[0].get(alias)
    if now != to_version:
        logger.warning("%s@%s names %s right after it was set to %s", name, alias, now, to_version)
        if strict:
            raise AliasOvertaken(name, alias, to_version, now)
    return move


def _settle(
    client: MlflowClient,
    name: str,
    alias: str,
    current: str | None,
    moves: list[Move],
    *,
    noticed_by: str,
) -> list[Move]:
    """The moves once the alias's last pending event is settled from where the alias points
    (applied if at its destination, not applied if still at its origin) and a move made
    outside modelyard is recorded."""
    last = next((m for m in reversed(moves) if m.alias == alias and m.kind in MOVE_KINDS), None)
    if last is not None and last.state == "pending":
        state: State | None = None
        if current == last.to_version:
            state = "applied"
        elif current == last.from_version:
            state = "not applied"
        if state is not None:
            settled = replace(last, state=state)
            _write(client, name, settled)
            moves = [settled if m.key == last.key else m for m in moves]
    noticed = notice_outside_move(client, name, alias, current, moves, noticed_by=noticed_by)
    return moves if noticed is None else [*moves, noticed]


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
        seq=_next(moves),
        state="applied",
    )
    _write(client, name, move)
    logger.warning("%s@%s was moved outside modelyard: %s -> %s", name, alias, recorded, actual)
    return move


def record_traffic(
    client: MlflowClient,
    name: str,
    alias: str,
    version: str,
    *,
    kind: Literal["rollout", "rollout-rollback"],
    reason: str,
    who: str | None = None,
) -> Move:
    """Record a change of the traffic split that concerns `alias` (naming `version`, which it
    keeps naming): a rollout step or end, or the candidate's weight set to 0. Written once the
    split is written, as applied; rollback and drift detection skip it."""
    _, moves = read(client, name)
    move = new_move(
        alias,
        version,
        version,
        actor=who or actor(),
        reason=reason,
        kind=kind,
        seq=_next(moves),
        state="applied",
    )
    _write(client, name, move)
    logger.info("%s %s@%s v%s: %s", kind, name, alias, version, move.reason)
    return move


def _next(moves: list[Move]) -> int:
    """The seq of an event written after all of `moves`."""
    return max((m.seq for m in moves), default=0) + 1


def _write(client: MlflowClient, name: str, move: Move) -> None:
    client.set_registered_model_tag(name, move.key, move.encode())


def _version(value: object) -> str | None:
    return None if value is None else str(value)
