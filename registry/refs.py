"""Immutable references to exact model versions."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelRef:
    """One exact registered model version, and the alias it was reached through (if any)."""

    name: str
    version: str
    run_id: str | None = None
    alias: str | None = None

    @property
    def uri(self) -> str:
        """The immutable URI of this version: `models:/name/version`, never an alias."""
        return f"models:/{self.name}/{self.version}"

    def __str__(self) -> str:
        via = f"@{self.alias}" if self.alias else ""
        return f"{self.name}{via} v{self.version}"
