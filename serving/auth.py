"""API keys of the prediction endpoints: a file of salted hashes, checked on every request.

A key is a random token; the file holds, per key, a name, an scrypt hash with its salt, what
the key may do, and a `lookup` (the first 16 hex digits of its SHA-256) that finds its entry
without running scrypt. So an unknown key costs one SHA-256, a known key one scrypt per process
(in a thread), and then one SHA-256 and a dict lookup: the verified keys are remembered by
their SHA-256, one entry per key of the file at most.
"""

import asyncio
import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from serving.errors import KeyExhausted, KeyRequired, PermissionDenied
from serving.settings import ServingSettings

ALL_MODELS = "*"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
"""scrypt's cost: ~0.1 s and 16 MiB per hash, paid once per key and process."""
MAX_KEY_CHARS = 256
"""Longer presented keys are refused without hashing."""


def _models(value: object) -> object:
    """`*`, `a,b` or a list."""
    if isinstance(value, str):
        return [m.strip() for m in value.split(",") if m.strip()]
    return value


class ApiKey(BaseModel):
    """One entry of the keys file: who the key is and what it may do; never the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    lookup: str = Field(pattern=r"^[0-9a-f]{16}$")
    salt: str = Field(pattern=r"^[0-9a-f]{32}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    models: Annotated[tuple[str, ...], BeforeValidator(_models)] = Field(min_length=1)
    pin: bool = False
    """May pin an alias other than the required one."""
    max_concurrency: int | None = Field(None, gt=0)
    rate_per_s: float | None = Field(None, gt=0)

    def may_call(self, model: str) -> bool:
        """Whether the key may call `model`."""
        return ALL_MODELS in self.models or model in self.models

    def matches(self, presented: str) -> bool:
        """Whether `presented` is this key (scrypt, compared in constant time)."""
        digest = hash_key(presented, bytes.fromhex(self.salt))
        return hmac.compare_digest(digest, bytes.fromhex(self.hash))


class KeyFileError(ValueError):
    """The keys file cannot be used; the message names the file and the entry."""


def hash_key(key: str, salt: bytes) -> bytes:
    """The stored hash of `key`."""
    return hashlib.scrypt(key.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)


def issue(
    name: str,
    models: tuple[str, ...] = (ALL_MODELS,),
    *,
    pin: bool = False,
    max_concurrency: int | None = None,
    rate_per_s: float | None = None,
) -> tuple[str, ApiKey]:
    """A new random key and its entry. Raises ValidationError for a bad name or limit."""
    key = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    entry = ApiKey(
        name=name,
        lookup=hashlib.sha256(key.encode()).hexdigest()[:16],
        salt=salt.hex(),
        hash=hash_key(key, salt).hex(),
        models=models,
        pin=pin,
        max_concurrency=max_concurrency,
        rate_per_s=rate_per_s,
    )
    return key, entry


def parse_keys(text: str, source: Path) -> list[ApiKey]:
    """The entries of a keys file's text: a YAML list of mappings. KeyFileError names
    `source` and the entry at fault."""
    try:
        document: Any = yaml.safe_load(text)
    except yaml.YAMLError as problem:
        raise KeyFileError(f"{source}: not valid YAML: {problem}") from None
    if document is None:
        return []
    if not isinstance(document, list):
        raise KeyFileError(f"{source}: expected a list of keys, got {type(document).__name__}")
    keys: list[ApiKey] = []
    names: set[str] = set()
    lookups: set[str] = set()
    for number, item in enumerate(document, start=1):
        label = f"entry {number}"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ('{item['name']}')"
        try:
            key = ApiKey.model_validate(item)
        except ValidationError as problem:
            detail = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in problem.errors()
            )
            raise KeyFileError(f"{source}: {label}: {detail}") from None
        if key.name in names:
            raise KeyFileError(f"{source}: {label}: the name is used by an earlier entry")
        if key.lookup in lookups:
            raise KeyFileError(f"{source}: {label}: the same key as an earlier entry")
        names.add(key.name)
        lookups.add(key.lookup)
        keys.append(key)
    return keys


def load_keys(path: Path) -> list[ApiKey]:
    """The entries of the keys file at `path`; KeyFileError when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as problem:
        raise KeyFileError(f"{path}: cannot read the keys file: {problem}") from None
    return parse_keys(text, path)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key sent as `X-API-Key: <key>` or `Authorization: Bearer <key>`, if any."""
    given = headers.get("x-api-key")
    if given is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token if scheme.lower() == "bearer" else ""
    return given.strip() or None


class Allowance:
    """One key's budget in this process: requests in flight, and a token bucket of its rate
    holding one second's worth of requests (at least one)."""

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.in_flight = 0
        self.burst = max(1.0, key.rate_per_s or 0.0)
        self.tokens = self.burst
        self.updated = time.monotonic()

    def take(self, now: float) -> None:
        """Count one more request in flight; KeyExhausted (429) when over a limit."""
        key = self.key
        if key.max_concurrency is not None and self.in_flight >= key.max_concurrency:
            raise KeyExhausted(
                f"API key '{key.name}' already has {key.max_concurrency} requests in flight",
                retry_after_s=1,
            )
        if key.rate_per_s is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * key.rate_per_s)
            self.updated = now
            if self.tokens < 1:
                wait = (1 - self.tokens) / key.rate_per_s
                raise KeyExhausted(
                    f"API key '{key.name}' is over its rate of {key.rate_per_s:g} requests/s",
                    retry_after_s=max(1, math.ceil(wait)),
                )
            self.tokens -= 1
        self.in_flight += 1

    def release(self) -> None:
        """The request counted by `take` has ended."""
        self.in_flight -= 1


class Keyring:
    """The keys of one serving process and their allowances. Used from the event loop only."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys
        self._by_lookup = {key.lookup: key for key in keys}
        self._verified: dict[bytes, ApiKey] = {}
        self._checking: dict[bytes, asyncio.Task[bool]] = {}
        """scrypt checks under way, by the key's SHA-256: one at a time per key."""
        self._allowances = {key.name: Allowance(key) for key in keys}

    async def identify(self, presented: str) -> ApiKey | None:
        """The entry of `presented`, or None when it is no key of the file."""
        if len(presented) > MAX_KEY_CHARS:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            return known
        candidate = self._by_lookup.get(digest.hex()[:16])
        if candidate is None:
            return None
        check = self._checking.get(digest)
        if check is None:  # requests presenting the key meanwhile wait for this one
            check = asyncio.ensure_future(asyncio.to_thread(candidate.matches, presented))
            self._checking[digest] = check
            check.add_done_callback(lambda _: self._checking.pop(digest, None))
        if not await asyncio.shield(check):  # a waiter cancelled does not cancel the others
            return None
        self._verified[digest] = candidate
        return candidate

    async def authenticate(self, headers: Mapping[str, str]) -> ApiKey:
        """The entry of the key the request presents; KeyRequired (401) when none or unknown."""
        presented = presented_key(headers)
        if presented is None:
            raise KeyRequired("an API key is required: Authorization: Bearer <key> or X-API-Key")
        key = await self.identify(presented)
        if key is None:
            raise KeyRequired("the API key is not valid here")
        return key

    def admit(self, key: ApiKey, model: str, alias: str | None, required: str) -> Allowance:
        """Check that `key` may call `model` (pinned to `alias`, if any) now: PermissionDenied
        (403) or KeyExhausted (429) if not. The caller releases the allowance when done."""
        if not key.may_call(model):
            raise PermissionDenied(f"API key '{key.name}' may not call model '{model}'")
        if alias is not None and alias != required and not key.pin:
            raise PermissionDenied(f"API key '{key.name}' may not pin alias '{alias}'")
        allowance = self._allowances[key.name]
        allowance.take(time.monotonic())
        return allowance


def read_keyring(settings: ServingSettings) -> Keyring | None:
    """The keyring of `settings.api_keys_file`; None when no file is set (endpoints open).
    KeyFileError (a ValueError naming the file and entry) when the file cannot be used."""
    if settings.api_keys_file is None:
        return None
    return Keyring(load_keys(settings.api_keys_file))


_USERINFO = re.compile(r"(?<=://)[^/\s@]+@")
_SECRET_VALUE = re.compile(  # a name is tried from its start only, so the time is linear
    r"(?i)(?<![\w.-])(?=[\w.-]*?(?:key|token|password|passwd|secret|signature|credential))"
    r"([\w.-]*+=)[^&\s'\",;]+"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\",;]+")


def scrub(text: str) -> str:
    """`text` without credentials: userinfo in URLs, secret-named query values, bearer tokens."""
    text = _USERINFO.sub("***@", text)
    text = _SECRET_VALUE.sub(r"\1***", text)
    return _BEARER.sub(r"\1***", text)
