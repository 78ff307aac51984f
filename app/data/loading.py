"""`dataset: tables`: read, validate, convert (app/data/storage.py → validation.py → from_tables.py)."""
from __future__ import annotations

import logging
import time

import pyarrow as pa

from app.data.config import DataConfig
from app.data.from_tables import dataset_from_tables
from app.data.ids import IdMaps
from app.data.storage import TablesNotFound, read_raw_tables
from app.data.tables import Dataset
from app.data.validation import InvalidDataset, Problem, Report, ValidationSettings, validate_tables

log = logging.getLogger(__name__)


def validate_uri(uri: str, now: float | None = None) -> tuple[object, Report]:
    """The validated tables (None on errors) and the report, for `rayfeed data validate`."""
    try:
        raw = read_raw_tables(uri)
    except (TablesNotFound, OSError, pa.ArrowInvalid) as exc:
        report = Report(uri)
        report.problems.append(Problem("(dataset)", None, "cannot read", "error", 1, (), str(exc)))
        return None, report
    try:
        return validate_tables(raw, uri, ValidationSettings(now=time.time() if now is None else now))
    except Exception as exc:  # noqa: BLE001 - a check that broke is reported, never a traceback
        log.exception("validation of %s failed", uri)
        report = Report(uri)
        report.problems.append(Problem("(dataset)", None, "check failed", "error", 1, (),
                                       f"{type(exc).__name__}: {exc} (a bug in rayfeed: please report it)"))
        return None, report


def load_tables(config: DataConfig, ids: IdMaps | None = None) -> Dataset:
    tables, report = validate_uri(config.tables.uri)
    if tables is None:
        raise InvalidDataset(report)
    dataset = dataset_from_tables(tables, config, config.tables.name, ids)
    dataset.meta["validation"] = report.render()
    return dataset
