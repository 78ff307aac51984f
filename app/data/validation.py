"""Validation of a dataset in the table contract, reported, never raised.

Every problem is one row of the report: table, column, check, severity, how many rows, and up to
ten examples (row numbers and values). Errors stop training; warnings are printed and training
goes on. The checks, in the order they run:

    table      missing (a required table), empty
    column     missing (a required column), wrong type (a value of the wrong kind; CSV cells are
               converted here, so each bad cell is counted), uneven embedding length
    values     null or non-finite in a required column, unknown event type, timestamps out of
               range (before 1970 or in the future), positions < 1, negative values
    keys       duplicate keys (items, users, social edges)
    links      interactions naming unknown items (error) or users without a users row
               (warning, with the share), items created after their first interaction (warning),
               social edges naming unknown users (warning)

Passing validation returns the tables normalised for `app/data/from_tables.py`: timestamps as
float seconds, lists as tuples, positions as int (-1 unknown), a rating log's rating kept.

    tables, report = validate_tables(read_raw_tables(uri), TablesConfig(), now=time.time())
    print(report.render()); sys.exit(report.exit_code)
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from app.data.contract import EVENT_TYPES, LIST_SEPARATOR, TABLES, Column, TableSpec

Severity = Literal["error", "warning"]
MAX_EXAMPLES = 10
EPOCH_FLOOR = 0.0  # timestamps before 1970 are out of range
FUTURE_SLACK_S = 86_400.0  # clocks differ; a day ahead is still "now"

EXIT_OK, EXIT_WARNINGS, EXIT_ERRORS = 0, 1, 2


@dataclass(frozen=True)
class Problem:
    table: str
    column: str | None
    check: str
    severity: Severity
    count: int
    examples: tuple[str, ...] = ()
    detail: str = ""

    def render(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        line = f"{self.severity.upper():7} {where:28} {self.check:26} {self.count:>8} row(s)"
        if self.detail:
            line += f"  {self.detail}"
        if self.examples:
            line += "\n" + " " * 8 + "e.g. " + "; ".join(self.examples)
        return line


@dataclass
class Report:
    source: str
    problems: list[Problem] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def exit_code(self) -> int:
        """0: clean; 1: warnings only (training may proceed); 2: errors (training refused)."""
        return EXIT_ERRORS if self.errors else EXIT_WARNINGS if self.warnings else EXIT_OK

    def render(self) -> str:
        head = f"{self.source}: " + ", ".join(f"{name} {n} rows" for name, n in self.rows.items())
        if not self.problems:
            return head + "\nOK: every check passed"
        verdict = (f"{len(self.errors)} error(s): training cannot proceed" if self.errors
                   else f"{len(self.warnings)} warning(s): training may proceed")
        return "\n".join([head, *(p.render() for p in self.problems), verdict])


@dataclass
class ContractTables:
    """The tables after validation, with normalised types (see the module docstring)."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None
    social_edges: pd.DataFrame | None = None
    item_features: tuple[str, ...] = ()  # numeric item columns beyond the contract's
    has_impressions: bool = False
    rating_log: bool = False  # interactions came as ratings (a `rating` column, no `event`)


def _examples(rows: np.ndarray, values: Iterable[object] | None = None) -> tuple[str, ...]:
    rows = np.asarray(rows)[:MAX_EXAMPLES]
    if values is None:
        return tuple(f"row {int(r) + 1}" for r in rows)
    return tuple(f"row {int(r) + 1}: {v!r}" for r, v in zip(rows, list(values)[:MAX_EXAMPLES]))


class _Checker:
    def __init__(self, source: str) -> None:
        self.report = Report(source)

    def problem(self, table: str, column: str | None, check: str, severity: Severity, mask_or_rows,
                values: Iterable[object] | None = None, detail: str = "", count: int | None = None) -> None:
        rows = np.flatnonzero(mask_or_rows) if np.asarray(mask_or_rows).dtype == bool else np.asarray(mask_or_rows)
        n = len(rows) if count is None else count
        if n:
            self.report.problems.append(Problem(table, column, check, severity, n, _examples(rows, values), detail))

    # -- conversion of one column to its kind, each bad cell reported -------------------------------
    def convert(self, table: str, column: Column, values: pa.ChunkedArray) -> pd.Series | None:
        kind, arrow_type = column.kind, values.type
        if kind == "id" and _is_text(arrow_type):
            return _text_ids(values)  # before to_pandas: trimmed and checked by Arrow's kernels
        if kind == "string_list" and (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)):
            try:
                lists = pc.cast(values, pa.list_(pa.string())).to_pylist()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                lists = None  # elements Arrow cannot write as text: one cell at a time below
            if lists is not None:
                return pd.Series([tuple(v) if v is not None else () for v in lists], dtype=object)
        series = values.to_pandas()
        try:
            if kind == "id":
                return self._ids(table, column, series, arrow_type)
            if kind in ("int", "float", "timestamp"):
                return self._numbers(table, column, series, arrow_type)
            if kind == "bool":
                return self._bools(table, column, series, arrow_type)
            if kind == "string_list":
                return self._string_lists(table, column, series, arrow_type)
            if kind == "float_list":
                return self._float_lists(table, column, series, arrow_type)
            if not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
                    or pa.types.is_dictionary(arrow_type)):
                self.problem(table, column.name, "wrong type", "error", np.arange(len(series)), series,
                             detail=f"expected {kind}, found {arrow_type}", count=len(series))
                return None
            return series.astype(object)
        except _WrongType as wrong:
            self.problem(table, column.name, "wrong type", "error", wrong.rows, series.iloc[wrong.rows],
                         detail=f"expected {kind}, found {wrong.found}")
            return None

    def _ids(self, table, column, series, arrow_type) -> pd.Series:
        if pa.types.is_integer(arrow_type):
            if not series.isna().any():
                return pd.Series(series.to_numpy(np.int64).tolist(), dtype=object)
            return series.astype("Int64").astype(object).where(series.notna(), None)
        if pa.types.is_floating(arrow_type):
            finite = np.isfinite(series.to_numpy(np.float64, na_value=np.nan))
            integral = finite & (np.mod(np.nan_to_num(series.to_numpy(np.float64, na_value=0.0)), 1) == 0)
            if not integral[finite].all():
                raise _WrongType(np.flatnonzero(finite & ~integral), f"{arrow_type} with fractions")
            return pd.Series([int(v) if ok else None for v, ok in zip(series, finite)], dtype=object)
        raise _WrongType(np.arange(len(series)), str(arrow_type))

    def _numbers(self, table, column, series, arrow_type) -> pd.Series:
        if pa.types.is_timestamp(arrow_type):
            seconds = series.astype("datetime64[ns]").astype("int64").astype(np.float64) / 1e9
            return pd.Series(np.where(series.isna(), np.nan, seconds), dtype=np.float64)
        if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
            return series.astype(np.float64)
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            text = series.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
            numbers = text.map(_as_float)  # "nan" and "inf" are numbers: the finiteness check reports them
            bad = numbers.isna() & text.map(lambda v: v not in (None, "") and str(v).lower() != "nan").astype(bool)
            if bad.any():
                raise _WrongType(np.flatnonzero(bad.to_numpy()), "text")
            return numbers.astype(np.float64)
        raise _WrongType(np.arange(len(series)), str(arrow_type))

    def _bools(self, table, column, series, arrow_type) -> pd.Series:
        if pa.types.is_boolean(arrow_type):
            return series.astype(bool)
        if pa.types.is_integer(arrow_type):
            bad = ~series.isin([0, 1])
            if bad.any():
                raise _WrongType(np.flatnonzero(bad.to_numpy()), "integers other than 0/1")
            return series.astype(bool)
        text = series.astype(object).map(lambda v: str(v).strip().lower())
        truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}
        bad = ~text.isin(list(truth))
        if bad.any():
            raise _WrongType(np.flatnonzero(bad.to_numpy()), "text that is not true/false")
        return text.map(truth).astype(bool)

    def _string_lists(self, table, column, series, arrow_type) -> pd.Series:
        if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
            return series.map(lambda v: tuple(str(x) for x in v) if v is not None else ())
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return series.map(lambda v: tuple(t.strip() for t in str(v).split(LIST_SEPARATOR) if t.strip())
                              if v not in (None, "") else ())
        raise _WrongType(np.arange(len(series)), str(arrow_type))

    def _float_lists(self, table, column, series, arrow_type) -> pd.Series:
        if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
            return series.map(lambda v: np.asarray(v, np.float32) if v is not None else None)
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            def parse(v):
                return np.asarray([float(x) for x in str(v).split(LIST_SEPARATOR)], np.float32) if v else None
            bad = []
            out = []
            for i, v in enumerate(series):
                try:
                    out.append(parse(v))
                except ValueError:
                    bad.append(i)
                    out.append(None)
            if bad:
                raise _WrongType(np.asarray(bad), "text that is not numbers")
            return pd.Series(out, dtype=object)
        raise _WrongType(np.arange(len(series)), str(arrow_type))


def _as_float(value: object) -> float:
    if value in (None, ""):
        return np.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return np.nan


class _WrongType(Exception):
    def __init__(self, rows: np.ndarray, found: str) -> None:
        super().__init__(found)
        self.rows, self.found = rows, found


@dataclass(frozen=True)
class ValidationSettings:
    """What validation needs of the dataset's configuration."""

    now: float  # "the future" starts a day after this
    unknown_items_are_errors: bool = True


def validate_tables(raw: dict[str, pa.Table], source: str, settings: ValidationSettings,
                    ) -> tuple[ContractTables | None, Report]:
    """Check every table (module docstring); the normalised tables, or None when an error was found."""
    check = _Checker(source)
    frames: dict[str, pd.DataFrame] = {}
    extra_numeric: tuple[str, ...] = ()
    for name, spec in TABLES.items():
        table = raw.get(name)
        if table is None:
            if spec.required:
                check.problem(name, None, "missing table", "error", [], count=1,
                              detail=f"no {name}.parquet, {name}.csv or {name}/ under {source}")
            continue
        check.report.rows[name] = table.num_rows
        if table.num_rows == 0:
            check.problem(name, None, "empty table", "error" if spec.required else "warning", [], count=1,
                          detail="no rows")
            continue
        frame, extras = _convert_table(check, spec, table)
        if frame is not None:
            frames[name] = frame
            if name == "items":
                extra_numeric = extras
    interactions, items = frames.get("interactions"), frames.get("items")
    if interactions is not None:
        _check_interactions(check, interactions, settings)
    if items is not None:
        _check_items(check, items)
    for name, spec in TABLES.items():
        if name in frames and spec.key:
            _check_keys(check, spec, frames[name])
    if interactions is not None and items is not None:
        _check_links(check, interactions, items, frames.get("users"), frames.get("social_edges"), settings)
    report = check.report
    if report.errors or interactions is None or items is None:
        return None, report
    rating_log = "event" not in interactions
    if rating_log:
        interactions["event"] = "click"  # every rating says the user consumed the item
    return ContractTables(
        interactions=interactions, items=items, users=frames.get("users"), social_edges=frames.get("social_edges"),
        item_features=extra_numeric, has_impressions=bool((interactions["event"] == "impression").any()),
        rating_log=rating_log,
    ), report


def _convert_table(check: _Checker, spec: TableSpec, table: pa.Table) -> tuple[pd.DataFrame | None, tuple[str, ...]]:
    names = list(table.column_names)
    ok = True
    for column in spec.columns:
        if not column.required or column.name in names:
            continue
        alternative = next((alt for main, alt in spec.alternatives.items() if main == column.name), None)
        if alternative is not None and alternative in names:
            continue
        detail = f"found columns: {', '.join(names)}"
        if alternative:
            detail = f"give `{column.name}` or `{alternative}`; " + detail
        check.problem(spec.name, column.name, "missing column", "error", [], count=table.num_rows, detail=detail)
        ok = False
    frame: dict[str, pd.Series] = {}
    extras: list[str] = []
    for name in names:
        column = spec.column(name)
        if column is None:
            if spec.extra_columns == "none":
                check.problem(spec.name, name, "unknown column", "warning", [], count=table.num_rows,
                              detail="not in the contract: ignored")
                continue
            if spec.extra_columns == "numeric":
                column = Column(name, "float", False, "numeric feature", "")
                extras.append(name)
            else:
                frame[name] = table.column(name).to_pandas()
                continue
        converted = check.convert(spec.name, column, table.column(name))
        if converted is None:
            ok = False
        else:
            frame[name] = converted.reset_index(drop=True)
    if not ok:
        return None, ()
    out = pd.DataFrame(frame)
    for column in spec.columns:  # nulls in required columns
        if column.required and column.name in out:
            values = out[column.name]
            missing = _missing(values)
            check.problem(spec.name, column.name, "null or not finite", "error", missing, values[missing])
    if spec.name == "items" and "embedding" in out:
        lengths = out["embedding"].map(lambda v: -1 if v is None else len(v))
        expected = int(lengths[lengths >= 0].mode().iloc[0]) if (lengths >= 0).any() else -1
        uneven = (lengths != expected).to_numpy()
        check.problem("items", "embedding", "uneven length", "error", uneven, lengths[uneven],
                      detail=f"most rows have {expected} values")
    return out, tuple(extras)


def _is_text(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_dictionary(arrow_type)


def _text_ids(values: pa.ChunkedArray) -> pd.Series:
    """Text ids, trimmed; empty ones are missing (None); a column of integers written as text (a
    CSV) becomes integers. Arrow's kernels do the per-cell work (a Python call per cell cost ≈ 8 s
    at 3M interactions)."""
    if pa.types.is_dictionary(values.type):
        values = values.cast(pa.string())
    stripped = pc.utf8_trim_whitespace(values)
    integral = pc.match_substring_regex(stripped, r"^-?[0-9]+$")
    if len(stripped) and pc.all(pc.fill_null(integral, False)).as_py():
        try:
            return pd.Series(pc.cast(stripped, pa.int64()).to_numpy().tolist(), dtype=object)
        except (pa.ArrowInvalid, OverflowError):
            pass  # beyond 64 bits: kept as text
    empty = pc.fill_null(pc.equal(stripped, ""), True)
    return pd.Series(pc.if_else(empty, pa.scalar(None, pa.string()), stripped).to_numpy(), dtype=object)


def _missing(values: pd.Series) -> np.ndarray:
    """None, NaN, ±inf and "" are missing (vectorised: a Python call per cell cost seconds)."""
    if values.dtype.kind == "f":
        return ~np.isfinite(values.to_numpy(np.float64))
    if values.dtype.kind in "iub":
        return np.zeros(len(values), dtype=bool)
    cells = values.to_numpy(object)  # ids (integers or text), text: numbers arrive as float64 columns
    try:
        return pd.isna(cells) | (cells == "")
    except (ValueError, TypeError):  # cells that are arrays (list columns): one at a time
        return np.fromiter((v is None or (isinstance(v, str) and v == "") for v in cells), bool, count=len(cells))


def _isin(values: pd.Series, allowed: pd.Series) -> np.ndarray:
    """values.isin(allowed) through Arrow's hash kernel when both are of one kind (strings, or
    integers), else pandas'."""
    try:
        left = pa.array(values.to_numpy(object), from_pandas=True)
        right = pa.array(allowed.dropna().to_numpy(object), from_pandas=True)
        if left.type == right.type and left.type in (pa.string(), pa.int64()):
            return pc.fill_null(pc.is_in(left, value_set=right), False).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    return values.isin(set(allowed)).to_numpy()


def _check_interactions(check: _Checker, interactions: pd.DataFrame, settings: ValidationSettings) -> None:
    if "event" in interactions:
        unknown = ~interactions["event"].isin(EVENT_TYPES).to_numpy()
        check.problem("interactions", "event", "unknown event type", "error", unknown,
                      interactions["event"][unknown], detail=f"expected one of {', '.join(EVENT_TYPES)}")
    ts = interactions["timestamp"].to_numpy(np.float64)
    early = np.isfinite(ts) & (ts < EPOCH_FLOOR)
    check.problem("interactions", "timestamp", "out of range", "error", early, ts[early], detail="before 1970")
    future = np.isfinite(ts) & (ts > settings.now + FUTURE_SLACK_S)
    check.problem("interactions", "timestamp", "in the future", "error", future, ts[future])
    if "position" in interactions:
        position = interactions["position"].to_numpy(np.float64)
        bad = np.isfinite(position) & ((position < 1) | (np.mod(position, 1) != 0))
        check.problem("interactions", "position", "out of range", "error", bad, position[bad],
                      detail="a 1-based whole slot number")
    for column in ("value", "rating"):
        if column in interactions:
            values = interactions[column].to_numpy(np.float64)
            bad = ~np.isfinite(values) & ~np.isnan(values) | (values < 0)
            check.problem("interactions", column, "negative or infinite", "error", bad, values[bad])
    if "rating" in interactions and "event" not in interactions:
        missing = np.isnan(interactions["rating"].to_numpy(np.float64))
        check.problem("interactions", "rating", "null or not finite", "error", missing)
    if "event" in interactions and "value" in interactions:
        watch = (interactions["event"] == "watch").to_numpy() & np.isnan(interactions["value"].to_numpy(np.float64))
        check.problem("interactions", "value", "watch without seconds", "warning", watch,
                      detail="a watch event's value is its seconds; counted as a click only")


def _check_items(check: _Checker, items: pd.DataFrame) -> None:
    created = items["created_at"].to_numpy(np.float64)
    early = np.isfinite(created) & (created < EPOCH_FLOOR)
    check.problem("items", "created_at", "out of range", "error", early, created[early], detail="before 1970")
    if "min_age" in items:
        ages = items["min_age"].to_numpy(np.float64)
        bad = np.isfinite(ages) & ((ages < 0) | (ages > 120))
        check.problem("items", "min_age", "out of range", "error", bad, ages[bad], detail="0..120")


def _check_keys(check: _Checker, spec: TableSpec, frame: pd.DataFrame) -> None:
    if not all(k in frame for k in spec.key):
        return
    duplicated = frame.duplicated(list(spec.key), keep="first").to_numpy()
    values = frame.loc[duplicated, list(spec.key)].astype(str).agg(", ".join, axis=1)
    check.problem(spec.name, ", ".join(spec.key), "duplicate key", "error", duplicated, values)


def _check_links(check: _Checker, interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame | None,
                 edges: pd.DataFrame | None, settings: ValidationSettings) -> None:
    unknown = ~_isin(interactions["item_id"], items["item_id"])
    share = unknown.mean() if len(unknown) else 0.0
    check.problem("interactions", "item_id", "unknown item", "error" if settings.unknown_items_are_errors else "warning",
                  unknown, interactions["item_id"][unknown], detail=f"{share:.1%} of interactions; not in items")
    if users is not None and "user_id" in users:
        known_users = users["user_id"]
        unknown_users = ~_isin(interactions["user_id"], known_users)
        share = unknown_users.mean() if len(unknown_users) else 0.0
        check.problem("interactions", "user_id", "unknown user", "warning", unknown_users,
                      interactions["user_id"][unknown_users],
                      detail=f"{share:.1%} of interactions; served as users without attributes")
        if edges is not None:
            for column in ("user_id", "friend_id"):
                if column in edges:
                    bad = ~_isin(edges[column], known_users)
                    check.problem("social_edges", column, "unknown user", "warning", bad, edges[column][bad])
    first_seen = interactions.groupby("item_id")["timestamp"].min()
    created = items.groupby("item_id")["created_at"].min()  # a duplicated id is reported by the key check
    late = created.reindex(first_seen.index) > first_seen
    late_items = late[late.fillna(False)].index
    rows = np.flatnonzero(items["item_id"].isin(set(late_items)).to_numpy())
    check.problem("items", "created_at", "after first interaction", "warning", rows,
                  [f"{items['item_id'].iloc[r]} created {items['created_at'].iloc[r]:.0f}, first seen "
                   f"{first_seen[items['item_id'].iloc[r]]:.0f}" for r in rows[:MAX_EXAMPLES]],
                  detail="treated as created at its first interaction")


def require_valid(report: Report, on_problems: Callable[[str], None]) -> None:
    """Print the report's problems through `on_problems`; raise when it holds errors."""
    if report.problems:
        on_problems(report.render())
    if report.errors:
        raise InvalidDataset(report)


class InvalidDataset(ValueError):
    """The dataset failed validation; the report says where."""

    def __init__(self, report: Report) -> None:
        super().__init__(report.render())
        self.report = report
