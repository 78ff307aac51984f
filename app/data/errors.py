"""Data errors name the file, the row and the field at fault."""
from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A malformed or inconsistent data file. `row` is the 1-based line number in the file."""

    def __init__(self, path: str | Path, row: int | None, field: str | None, message: str) -> None:
        self.path = str(path)
        self.row = row
        self.field = field
        where = self.path
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
