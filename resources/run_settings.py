"""Settings read from the environment when a run starts, never when the code is imported.

Dagster's ``EnvVar`` cannot express these: an unset variable fails the run instead of
meaning the default, and float and ``Literal`` fields have no environment source in
dagster 1.13. So a provider setting is a resource field whose ``None`` means "the named
variable, else the default", resolved here with the field's own type; a malformed value
fails the run with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError


class SettingError(ValueError):
    """A variable whose value the setting it feeds cannot take."""


def read_setting(name: str, annotation: Any, default: Any) -> Any:
    """``$name`` validated as ``annotation`` (pydantic's lax mode: "500" is a float);
    ``default`` when unset or empty."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    return _validated(f"${name}", raw.strip(), annotation)


def resolve(model: BaseModel, variables: Mapping[str, tuple[str, Any, Any]]) -> dict[str, Any]:
    """Every field of ``variables`` (field -> (variable, type, default)): its configured
    value, or when that is ``None`` the variable's, or the default. Both are checked
    against the type: Dagster config has no Literal | None, so the field is a str."""
    values = {}
    for field, (name, annotation, default) in variables.items():
        value = getattr(model, field)
        if value is None:
            values[field] = read_setting(name, annotation, default)
        else:
            values[field] = _validated(f"{type(model).__name__}.{field}", value, annotation)
    return values


def _validated(source: str, value: Any, annotation: Any) -> Any:
    try:
        return TypeAdapter(annotation).validate_python(value)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        # The value helps whoever set it; these settings hold no secrets (tokens are read
        # by name elsewhere and never reach this function).
        raise SettingError(f"{source}={str(value)[:60]!r} is not valid: {problem}") from None
