"""Bounds on decoding one request, checked from its structure before anything is built."""

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate, chain, compress, count, islice, repeat
from operator import is_
from typing import Any

from serving.errors import RequestTooLarge, StringTooLong
from serving.settings import ServingSettings

TEXT_BYTES = 32 * 2**20
"""Decoded bytes allowed beyond 8 per cell: text, string offsets, Parquet levels and headers.
Several times what a JSON body under the default MODELYARD_MAX_BODY_BYTES (5 MiB) can carry."""


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

    @property
    def bytes(self) -> int:
        """Decoded bytes at most: 8 per cell (a float64, the widest number) plus TEXT_BYTES."""
        return 8 * self.cells + TEXT_BYTES

    def check(self, rows: int, columns: int, cells: int | None = None) -> None:
        """413 naming the first count over its limit; `cells` defaults to rows x columns."""
        cells = rows * columns if cells is None else cells
        if rows <= self.rows and columns <= self.columns and cells <= self.cells:
            return
        counts = (
            ("rows", rows, self.rows, "MODELYARD_MAX_ROWS"),
            ("columns", columns, self.columns, "MODELYARD_MAX_COLUMNS"),
            ("cells", cells, self.cells, "MODELYARD_MAX_CELLS"),
        )
        for what, number, limit, setting in counts:
            if number > limit:
                raise RequestTooLarge(what, number, limit, setting)

    def check_bytes(self, size: int) -> None:
        """413 when decoding would take more than `bytes`."""
        if size > self.bytes:
            raise RequestTooLarge(
                "bytes once decoded", size, self.bytes, "8 x MODELYARD_MAX_CELLS + 32 MiB"
            )

    def check_text(self, length: int, where: str) -> None:
        """400 when a string of `length` characters, in `where`, is over the limit."""
        if length > self.string_chars:
            raise StringTooLong(where, length, self.string_chars)


DEFAULT_LIMITS = DecodeLimits()
"""The limits of the settings' defaults."""


@dataclass(frozen=True, slots=True)
class Extent:
    """What a parsed JSON value holds: its scalars, and its longest string and where it is."""

    scalars: int
    longest: int
    path: tuple[Any, ...] = ()
    """Keys and indexes from the value to its longest string."""


_CONTAINERS = frozenset((list, dict))


def extent(value: Any) -> Extent:
    """Count scalars and measure strings level by level, each level in a few C passes."""
    scalars = longest = 0
    found = (0, 0)  # level and index of the longest string
    levels: list[tuple[list[Any], list[int], list[int]]] = []  # containers, positions, ends
    level = [value]
    while level:
        kinds = list(map(type, level))
        texts = list(map(is_, kinds, repeat(str)))
        lengths = list(map(len, compress(level, texts)))
        if lengths and max(lengths) > longest:
            longest = max(lengths)
            found = (len(levels), list(compress(count(), texts))[lengths.index(longest)])
        held = list(map(_CONTAINERS.__contains__, kinds))
        containers = list(compress(level, held))
        scalars += len(level) - len(containers)
        positions = list(compress(count(), held))
        levels.append((containers, positions, list(accumulate(map(len, containers)))))
        level = list(chain.from_iterable(_children(c) for c in containers))
    return Extent(scalars, longest, _path(levels, *found) if longest else ())


def holds_text(value: Any) -> bool:
    """Whether a string is among `value`, its elements or theirs (a JSON table's cells)."""
    if not isinstance(value, (list, dict)):
        return isinstance(value, str)
    elements = list(_children(value))
    kinds = list(map(type, elements))
    lists = compress(elements, map(is_, kinds, repeat(list)))
    dicts = compress(elements, map(is_, kinds, repeat(dict)))
    cells = chain(chain.from_iterable(lists), chain.from_iterable(map(dict.values, dicts)))
    return str in kinds or str in map(type, cells)


def widest(values: Iterable[Any]) -> int:
    """The most elements any list or object among `values` holds."""
    return max((len(v) for v in values if isinstance(v, (list, dict))), default=0)


def _children(container: list[Any] | dict[Any, Any]) -> Any:
    return container.values() if isinstance(container, dict) else container


def _path(
    levels: list[tuple[list[Any], list[int], list[int]]], depth: int, index: int
) -> tuple[Any, ...]:
    """Keys and indexes to element `index` of level `depth`, from the containers above it."""
    path = []
    for containers, positions, ends in reversed(levels[:depth]):
        parent = bisect_right(ends, index)
        offset = index - (ends[parent - 1] if parent else 0)
        container = containers[parent]
        path.append(
            next(islice(container, offset, None)) if isinstance(container, dict) else offset
        )
        index = positions[parent]
    return tuple(reversed(path))


def shown(name: Any, limit: int = 64) -> str:
    """A client-supplied name as a message may quote it: printable, at most `limit` chars."""
    text = "".join(c if c.isprintable() else "?" for c in str(name)[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."
