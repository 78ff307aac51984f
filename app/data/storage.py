"""Where tables live: a local path or any URI pyarrow's filesystems understand (`file://`,
`s3://`, `gs://`, `hdfs://`), one file per table (`<name>.parquet` or `<name>.csv`) or a
directory of files per table (`<name>/part-*.parquet`, or CSV).

Parquet is read with its own (typed) schema; CSV is read as text, every column a string, so
that `app/data/validation.py` converts and reports each bad value by table, column and row
instead of a reader failing late on the first one.

    fs, root = filesystem_for("s3://bucket/feed")      # or "data/feed", "file:///abs/feed"
    raw = read_raw_tables("s3://bucket/feed")          # {"interactions": pa.Table, ...}
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from app.data.contract import TABLES


class TablesNotFound(FileNotFoundError):
    """The URI or a required table is not there: the message names the URI and what is missing."""


def filesystem_for(uri: str | Path, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI. `filesystem` overrides the one the
    URI names (e.g. an S3FileSystem with an endpoint_override for an S3-compatible server)."""
    text = str(uri)
    if filesystem is not None:
        return filesystem, text.split("://", 1)[-1]
    if "://" not in text:
        return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise TablesNotFound(f"{text}: cannot open ({exc})") from exc


def _files(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    selector = pafs.FileSelector(path, recursive=True)
    return sorted((f for f in fs.get_file_info(selector) if f.type == pafs.FileType.File
                   and not f.base_name.startswith((".", "_"))), key=lambda f: f.path)


def locate(fs: pafs.FileSystem, root: str, name: str) -> tuple[str, list[str]] | None:
    """("parquet" | "csv", file paths) of table `name` under `root`, or None when absent."""
    for suffix in ("parquet", "csv"):
        info = fs.get_file_info(f"{root}/{name}.{suffix}")
        if info.type == pafs.FileType.File:
            return suffix, [info.path]
    info = fs.get_file_info(f"{root}/{name}")
    if info.type == pafs.FileType.Directory:
        files = _files(fs, info.path)
        for suffix in ("parquet", "csv"):
            chosen = [f.path for f in files if f.path.endswith(f".{suffix}")]
            if chosen:
                return suffix, chosen
    return None


def read_raw_tables(uri: str | Path, filesystem: pafs.FileSystem | None = None) -> dict[str, pa.Table]:
    """Every contract table found under `uri` (absent optional tables are left out)."""
    fs, root = filesystem_for(uri, filesystem)
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise TablesNotFound(f"{uri}: no such directory of tables")
    out: dict[str, pa.Table] = {}
    for name in TABLES:
        found = locate(fs, root, name)
        if found is None:
            continue
        suffix, paths = found
        if suffix == "parquet":
            out[name] = pads.dataset(paths, filesystem=fs, format="parquet").to_table()
        else:
            parts = []
            for path in paths:
                names = _csv_header(fs, path)
                with fs.open_input_stream(path) as stream:
                    parts.append(pacsv.read_csv(stream, convert_options=pacsv.ConvertOptions(
                        column_types={n: pa.string() for n in names}, strings_can_be_null=False,
                        quoted_strings_can_be_null=False)))
            out[name] = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
    return out


def _csv_header(fs: pafs.FileSystem, path: str) -> list[str]:
    with fs.open_input_stream(path) as stream:
        first = stream.read(1 << 16).split(b"\n", 1)[0].decode("utf-8", errors="replace").strip("\r")
    return [n.strip().strip('"') for n in first.split(",")]


def write_table(table: pa.Table, uri: str | Path, name: str, filesystem: pafs.FileSystem | None = None) -> str:
    """Write table `name` as `<uri>/<name>.parquet`; returns the path written."""
    fs, root = filesystem_for(uri, filesystem)
    fs.create_dir(root, recursive=True)
    path = f"{root}/{name}.parquet"
    pq.write_table(table, path, filesystem=fs)
    return path
