"""Strict parsing of delimited files: every bad value is reported with file, row and field."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from app.data.errors import DataFormatError


def read_delimited(
    path: Path,
    columns: dict[str, str],
    sep: str,
    header: bool,
    source_names: list[str] | None = None,
) -> pd.DataFrame:
    """Read `path` as strings and convert each column to its kind ("int", "float", "str").

    `source_names` are the file's own column names in order, when `header` is False or the
    header names differ from ours (e.g. RecBole's "user_id:token").
    """
    if not path.exists():
        raise DataFormatError(path, None, None, "file not found")
    try:
        raw = pd.read_csv(
            path, sep=sep, header=0 if header else None, dtype=str, keep_default_na=False,
            encoding="latin-1", engine="python" if len(sep) > 1 else "c", quoting=3,
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, None, None, f"cannot parse: {exc}") from exc
    if source_names is not None:
        if len(raw.columns) < len(source_names):
            raise DataFormatError(path, 1, source_names[len(raw.columns)], "missing column")
        raw = raw.iloc[:, : len(source_names)]
        raw.columns = source_names
    first_data_line = 2 if header else 1
    out = {}
    for name, kind in columns.items():
        if name not in raw.columns:
            raise DataFormatError(path, 1 if header else None, name, "missing column")
        values = raw[name]
        if kind == "str":
            out[name] = values.astype(str)
            continue
        converted = pd.to_numeric(values, errors="coerce")
        bad = converted.isna().to_numpy().copy()
        if kind == "int" and not bad.all():
            bad |= ~np.isclose(converted.fillna(0).to_numpy(dtype=float) % 1, 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFormatError(path, i + first_data_line, name, f"expected {kind}, got {values.iloc[i]!r}")
        out[name] = converted.astype(np.int64 if kind == "int" else np.float64)
    return pd.DataFrame(out)
