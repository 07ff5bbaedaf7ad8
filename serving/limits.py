"""Bounds on decoding one request, checked from its structure before anything is built."""

from dataclasses import dataclass

from serving.settings import ServingSettings


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """At most this many rows, columns, cells (rows x columns) and characters per string."""

    rows: int = 100_000
    columns: int = 4_096
    cells: int = 1_000_000
    string_chars: int = 10_000

    @classmethod
    def of(cls, settings: ServingSettings) -> "DecodeLimits":
        """The limits `settings` configure (MODELYARD_MAX_ROWS and the like)."""
        return cls(
            settings.max_rows,
            settings.max_columns,
            settings.max_cells,
            settings.max_string_chars,
        )
