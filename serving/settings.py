"""Serving settings: MODELYARD_* variables, optionally a YAML file named by MODELYARD_CONFIG."""

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from registry.split import BadSplit, validate

CONFIG_FILE_VARIABLE = "MODELYARD_CONFIG"


def _names(value: object) -> object:
    """Lists may be given as `a,b` as well as JSON (`["a", "b"]`)."""
    if isinstance(value, str):
        text = value.strip()
        return (
            json.loads(text)
            if text.startswith("[")
            else [v.strip() for v in text.split(",") if v.strip()]
        )
    return value


Names = Annotated[list[str], NoDecode, BeforeValidator(_names)]


class ServingSettings(BaseSettings):
    """What to serve and the limits to serve it under. Validated at start-up."""

    model_config = SettingsConfigDict(env_prefix="MODELYARD_", extra="ignore")

    models: Names | None = Field(
        None, description="Registered models to serve; default: every one with the required alias."
    )
    aliases: Names = Field(
        ["production", "staging"], min_length=1, description="Aliases loaded per model."
    )
    required_alias: str = Field(
        "production", description="Alias that must be loaded for a model to be ready."
    )
    required_models: Names | None = Field(
        None, description="Models that must be ready for /health/ready; default: all served."
    )
    default_model: str | None = Field(
        None, description="Model behind POST /invocations; default: the first served, by name."
    )
    strict_models: Names = Field(
        [], description="Models whose requests may not carry columns outside the signature."
    )
    max_body_bytes: int = Field(5 * 2**20, gt=0, description="Larger bodies get 413 unread.")
    max_in_flight: int = Field(512, gt=0, description="Beyond this, requests get a fast 503.")
    predict_timeout_s: float = Field(10, gt=0, description="Slower predictions get 504.")
    inline_below_ms: float = Field(
        0.0,
        ge=0,
        description="Predict on the event loop when warm-up shows it is this fast; 0: never. "
        "No deadline can cut a predict on the loop short: one that hangs holds every request.",
    )
    model_cache_dir: Path | None = Field(
        None, description="Private (0700) download directory; default: a fresh temporary one."
    )
    poll_interval_s: float = Field(2, gt=0, description="Registry poll interval (jittered).")
    traffic: dict[str, dict[str, float]] = Field(
        {}, description="Per model, weight per alias; the tag modelyard.traffic overrides it."
    )
    shadow: dict[str, float] = Field(
        {}, description="Per model, the share of production requests also scored by staging."
    )
    shadow_alias: str = Field("staging", description="Alias that scores shadow traffic.")
    traffic_salt: str = Field("", description="Salt of the configured splits' sticky hashing.")
    retry_interval_s: float = Field(5, gt=0, description="Wait before retrying a failed load.")
    registry_timeout_s: float = Field(5, gt=0, description="Bound on every registry call.")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    opentelemetry: bool = Field(
        False,
        description="FastAPI's OpenTelemetry spans, metrics and logs, sent to the providers "
        "the process configures (opentelemetry-instrument); off, no request pays for them.",
    )
    admin_token: SecretStr | None = Field(None, description="Bearer token for /admin routes.")
    webhook_secret: SecretStr | None = Field(
        None, description="Secret of the MLflow webhook; unset, /webhooks/mlflow refuses all."
    )

    # Bounds on one request's decoding, checked from its structure before anything is built.
    max_rows: int = Field(100_000, gt=0, description="Rows per request; more get 413.")
    max_columns: int = Field(4_096, gt=0, description="Columns per request; more get 413.")
    max_cells: int = Field(1_000_000, gt=0, description="Rows x columns per request; more get 413.")
    max_string_chars: int = Field(
        10_000, gt=0, description="Characters in one string value; longer ones get 400."
    )
    decode_in_thread_bytes: int = Field(
        64 * 2**10, ge=0, description="Bodies larger than this are decoded off the event loop."
    )
    # Connections: bounded before a body is read.
    max_connections: int = Field(
        2_048, gt=0, description="Open connections and requests at most; beyond, a fast 503."
    )
    max_header_bytes: int = Field(
        16 * 2**10, gt=0, description="Request line and headers together; larger get 431."
    )
    body_timeout_s: float = Field(
        15, gt=0, description="Time allowed to send a whole body; slower clients get 408."
    )
    keep_alive_s: float = Field(5, gt=0, description="Idle keep-alive connections close after it.")
    max_buffered_bytes: int = Field(
        64 * 2**20,
        gt=0,
        description="Prediction bodies held at once beyond the first 64 KiB of each; more: 503.",
    )
    shutdown_grace_s: float = Field(
        20, ge=0, description="On SIGTERM, time in-flight requests get before the process exits."
    )
    # Isolation between versions.
    predict_threads: int = Field(2, gt=0, description="Predict threads per loaded version.")
    # Adaptive batching.
    batching: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Merge concurrent requests into one predict: auto (versions whose warm-up "
        "shows a batch far cheaper per row than single rows), on (every version) or off.",
    )
    batch_max_rows: int = Field(
        64, gt=0, le=10_000, description="Rows one merged predict takes at most."
    )
    # The prediction log.
    prediction_log: str | None = Field(
        None,
        description="Root of the prediction log: an s3:// URI (S3 reached through "
        "MLFLOW_S3_ENDPOINT_URL and AWS_*) or a local directory; unset: nothing is logged.",
    )
    prediction_log_sample: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        {}, description="Per model, the share of requests logged (default 1: all)."
    )
    prediction_log_skip_inputs: Names = Field(
        [], description="Models whose inputs are not stored with their predictions."
    )
    prediction_log_flush_s: float = Field(
        1.0, gt=0, le=60, description="Queued records are written to the spool this often."
    )
    prediction_log_spool: Path | None = Field(
        None,
        description="Local directory of records waiting to be shipped; default: under the "
        "state directory, else the temporary directory. Keep it across restarts.",
    )
    prediction_log_spool_max_bytes: int = Field(
        1 * 2**30, gt=0, description="Spool size past which new records are dropped (counted)."
    )
    prediction_log_queue_rows: int = Field(
        200_000, gt=0, description="Records waiting in memory at most; more are dropped (counted)."
    )
    # Access.
    api_keys_file: Path | None = Field(
        None, description="File of salted key hashes; set, prediction endpoints need a key."
    )
    protect_status: bool = Field(
        False, description="Require a key (or the admin token) for /models, /metrics and /docs."
    )
    log_queue_lines: int = Field(
        10_000, gt=0, description="Log lines waiting to be written at most; more are dropped."
    )
    # Control plane: persistent state and the model cache.
    state_dir: Path | None = Field(
        None, description="Last known good registry state and downloaded versions."
    )
    require_fresh_registry: bool = Field(
        False, description="Never start from saved state: wait for a registry read instead."
    )
    stale_after_s: float = Field(
        60, gt=0, description="Readiness reports degraded when the last good poll is older."
    )
    keep_versions: int = Field(
        2, ge=0, description="Cached versions no alias names that are kept on disk."
    )
    unload_grace_s: float = Field(
        300, ge=0, description="A model whose alias or registration disappears is unloaded after."
    )

    @model_validator(mode="after")
    def _required_alias_is_served(self) -> "ServingSettings":
        if self.required_alias not in self.aliases:
            raise ValueError(
                f"required_alias '{self.required_alias}' must be one of aliases {self.aliases}"
            )
        log = self.prediction_log
        if log is not None and (
            ("://" in log and not log.startswith("s3://")) or log.rstrip("/") == "s3:/"
        ):
            raise ValueError(f"prediction_log {log!r}: an s3://bucket URI or a local directory")
        for model, weights in self.traffic.items():
            try:
                validate(weights)
            except BadSplit as problem:
                raise ValueError(f"traffic for '{model}': {problem}") from None
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit arguments, then the environment, then the YAML file."""
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if config_file := os.environ.get(CONFIG_FILE_VARIABLE):
            if not Path(config_file).is_file():
                raise ValueError(f"{CONFIG_FILE_VARIABLE}: no such file '{config_file}'")
            sources += (YamlConfigSettingsSource(settings_cls, yaml_file=config_file),)
        return sources
