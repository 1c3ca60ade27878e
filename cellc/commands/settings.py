"""Settings given on the command line, as users wrote them: pydantic's errors in their flags' names."""

from __future__ import annotations

from pydantic import ValidationError


def flag_errors(err: ValidationError) -> str:
    """A pydantic error as '--flag: message (got value)' items on one line."""
    parts = []
    for item in err.errors():
        flag = "--" + "-".join(str(part) for part in item["loc"]).replace("_", "-")
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        parts.append(f"{flag}: {item['msg'].removeprefix('Value error, ')}{shown}")
    return "; ".join(parts)
