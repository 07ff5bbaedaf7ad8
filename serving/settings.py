"""Serving settings: MODELYARD_* variables, optionally a YAML file named by MODELYARD_CONFIG."""

import json
import os
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from serving.traffic import BadSplit, validate

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
        1.0, ge=0, description="Predict on the event loop when warm-up shows it is this fast."
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
    admin_token: SecretStr | None = Field(None, description="Bearer token for /admin routes.")
    webhook_secret: SecretStr | None = Field(
        None, description="Secret of the MLflow webhook; unset, /webhooks/mlflow refuses all."
    )

    @model_validator(mode="after")
    def _required_alias_is_served(self) -> "ServingSettings":
        if self.required_alias not in self.aliases:
            raise ValueError(
                f"required_alias '{self.required_alias}' must be one of aliases {self.aliases}"
            )
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
