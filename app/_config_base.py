"""Base class for every configuration section: unknown keys are errors, values are validated."""
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A configuration section. Subclasses declare each tunable once: name, default, bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def merge_mappings(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, nested mappings merged key by key (a YAML file over defaults, an
    admin override over a deployment's user_config)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_mappings(merged[key], value)
        else:
            merged[key] = value
    return merged
