"""Key paths through pydantic models: the one walker, and the one way validation errors are told.

Both the run configuration (and the sweep and recipe files) and the data schemas are pydantic models
read from YAML; a user sees their problems as `file: key.path: message`, one per problem.

- `walk_keys(model, path)` follows a key path (a sweep's dotted hyperparameter, a pydantic error's
  location) down the model's annotations and says what each part is: a field, an unknown key (with the
  model that lacks it), an entry of a mapping or list, or a key below a plain value.
- `describe_validation_error(err, source, model)` formats a ValidationError; with the model it drops
  the union-member tags pydantic puts in locations (`tree.list[str].1` is `tree.1` to the user) and
  adds a "did you mean" hint (else the valid keys) to an unknown key.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from crossfed.errors import did_you_mean

Kind = Literal["field", "unknown", "entry", "tag", "value"]


@dataclass(frozen=True)
class KeyStep:
    """One part of a key path. kind: `field` of `model`; `unknown`, not a field of `model`; `entry`, a
    key of a mapping or an index of a list; `tag`, the union member pydantic names in an error location;
    `value`, a part below a plain value or an unknown key (nothing there to look up)."""

    key: str | int
    kind: Kind
    model: type[BaseModel] | None = None

    def valid_keys(self) -> list[str]:
        return list(fields_by_key(self.model)) if self.model is not None else []


def fields_by_key(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields under the keys a file uses for them (the alias where there is one)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def walk_keys(model: type[BaseModel], path: Sequence[str | int], *, tagged: bool = False) -> list[KeyStep]:
    """What each part of `path` is, walking down from `model`. `tagged`: the path is a pydantic error
    location, whose union-typed parts are followed by the name of the member that failed."""
    steps, node = [], model
    for key in path:
        node = _optional_inner(node)
        members = _union_members(node)
        if _is_model(node):
            fields = fields_by_key(node)
            steps.append(KeyStep(key, "field" if key in fields else "unknown", node))
            node = fields[key].annotation if key in fields else None
        elif typing.get_origin(node) in (dict, list, tuple, set) or node in (dict, list):
            steps.append(KeyStep(key, "entry"))
            arguments = typing.get_args(node)
            node = arguments[-1] if arguments else None
        elif members and tagged:
            steps.append(KeyStep(key, "tag"))
            node = next((m for m in members if _tag(m) == key), None)
        else:
            steps.append(KeyStep(key, "value"))
            node = None
    return steps


def describe_validation_error(err: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """Every problem as `source: key.path: message`; several problems as a count, then one per line.

    `model` (the one validated) cleans the key paths of union tags and lets an unknown key name the
    closest valid one; without it the locations are shown as pydantic gives them.
    """
    lines = []
    for e in err.errors():
        if model is not None:
            steps = walk_keys(model, e["loc"], tagged=True)
        else:
            steps = [KeyStep(key, "value") for key in e["loc"]]
        path = ".".join(str(step.key) for step in steps if step.kind != "tag") or "(top level)"
        if e["type"] == "extra_forbidden":
            message = "unknown key" + (_unknown_key_hint(steps[-1]) if steps else "")
        else:
            message = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {path}: {message}")
    return f"{len(lines)} problems\n  " + "\n  ".join(lines) if len(lines) > 1 else lines[0]


def _unknown_key_hint(step: KeyStep) -> str:
    """' (did you mean 'pt'?)' for a misspelt key, else the valid keys at that level."""
    valid = step.valid_keys()
    if step.kind != "unknown" or not valid:
        return ""
    return did_you_mean(str(step.key), valid) or f" (valid keys: {', '.join(valid)})"


def _optional_inner(annotation: Any) -> Any:
    """X for `X | None`; anything else as it is."""
    members = _union_members(annotation)
    if members is not None and len(members) == 1:
        return members[0]
    return annotation


def _union_members(annotation: Any) -> list[Any] | None:
    """The members of a union other than None, or None if `annotation` is not a union."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    return [a for a in typing.get_args(annotation) if a is not type(None)]


def _tag(member: Any) -> str:
    """The name pydantic gives a union member in error locations: `str`, `list[str]`, a model's class name."""
    return member.__name__ if isinstance(member, type) else str(member)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
