"""Base class for every configuration section: unknown keys are errors, values are validated."""
from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A configuration section. Subclasses declare each tunable once: name, default, bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
