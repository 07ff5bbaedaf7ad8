"""What the gate's and the experiment's reports render alike: one table (the header row first)
as aligned text and as Markdown, JSON without NaN, and the pair of files a report is kept in."""

import json
import math
import re
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any

Table = Sequence[Sequence[str]]
"""The header row, then one row of cells per line."""


def text(summary: Sequence[str], table: Table, right: Container[int], footer: Sequence[str]) -> str:
    """The terminal's page: the summary, the table in aligned columns (those in `right`
    right-aligned), then the footer."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in table
    ]
    return "\n".join([*summary, "", *lines, "", *footer]) + "\n"


def markdown(
    title: str, summary: Sequence[str], table: Table, right: Container[int], footer: Sequence[str]
) -> str:
    """The same page in Markdown: `title` as a heading, summary and footer as bullet lists."""
    header, *body = table
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" if i in right else "---" for i in range(len(header))) + " |",
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body),
    ]
    return (
        "\n".join(
            [
                title,
                "",
                *(f"- {line}" for line in summary),
                "",
                *lines,
                "",
                *(f"- {line}" for line in footer),
            ]
        )
        + "\n"
    )


def json_text(document: Any) -> str:
    """`document` as indented JSON, every NaN or infinity written as null."""
    return json.dumps(_finite(document), indent=2, allow_nan=False) + "\n"


def safe_name(name: str) -> str:
    """`name` fit for a file name: characters other than letters, digits, `._-` become `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def write(directory: Path, stem: str, json_document: str, markdown_page: str) -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.md` under `directory` (made if missing); return both."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json_document, encoding="utf-8")
    markdown_path.write_text(markdown_page, encoding="utf-8")
    return json_path, markdown_path


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: an undefined number is null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
