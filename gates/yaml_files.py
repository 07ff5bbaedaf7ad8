"""YAML files validated by a pydantic model, every problem reported with its file and line.

The gate policy and the rollout guards are read alike: a typo is an error naming the line it is
on, a duplicated key is refused, and the file's sha256 is returned to be recorded.
"""

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, SequenceNode

from gates.errors import PolicyError

M = TypeVar("M", bound=BaseModel)


def read(path: Path, *, unreadable: str, not_text: str) -> tuple[str, str]:
    """The text of `path` and the sha256 of its bytes. PolicyError (line 0) when the file
    cannot be read (`unreadable`: the OS's reason follows) or is not UTF-8 (`not_text`)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), [(0, f"{unreadable}: {exc.strerror}")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(str(path), [(0, not_text)]) from exc
    return text, hashlib.sha256(raw).hexdigest()


def validate(
    text: str,
    source: str,
    model: type[M],
    *,
    not_a_mapping: str,
    message: Callable[[ErrorDetails], str],
) -> tuple[M, MappingNode]:
    """`text` parsed as `model`, with its YAML root node for finding lines. PolicyError for
    invalid YAML, a document that is no mapping, duplicate keys, or values `model` refuses
    (each described by `message`)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise PolicyError(source, [(line, f"not valid YAML: {exc.problem}")]) from exc
    if not isinstance(root, MappingNode) or not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        raise PolicyError(source, [(line, not_a_mapping)])
    problems = duplicate_keys(root)
    if problems:
        raise PolicyError(source, problems)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        problems = [(line_of(root, e["loc"]), message(e)) for e in exc.errors()]
        raise PolicyError(source, sorted(set(problems))) from exc
    return parsed, root


def duplicate_keys(node: Node, path: str = "") -> list[tuple[int, str]]:
    """YAML lets a later key silently replace an earlier one; these files must not."""
    problems: list[tuple[int, str]] = []
    if isinstance(node, MappingNode):
        seen: set[object] = set()
        for key, value in node.value:
            name = f"{path}.{key.value}" if path else str(key.value)
            if key.value in seen:
                problems.append((key.start_mark.line + 1, f"{name}: duplicate key"))
            seen.add(key.value)
            problems.extend(duplicate_keys(value, name))
    elif isinstance(node, SequenceNode):
        for item in node.value:
            problems.extend(duplicate_keys(item, path))
    return problems


def line_of(root: Node, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest node `loc` reaches (a key's own line where it names one)."""
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def allowed_keys(
    model: type[BaseModel],
    path: Sequence[str],
    keyed: Mapping[str, type[BaseModel]] | None = None,
) -> list[str]:
    """The keys `model` allows at `path` (empty when `path` leads to no model). `keyed`: the
    keys of a mapping field (metric names) and the model their values take."""
    for part in path:
        if keyed and part in keyed:
            model = keyed[part]
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        inner = [a for a in (field.annotation, *get_args(field.annotation)) if _is_model(a)]
        if not inner:
            return []
        model = inner[0]
    return list(model.model_fields)


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
