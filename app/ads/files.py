"""The ad world as files: one table per entity, in CSV, JSON (a list of records) or Parquet.

Tables: advertisers, campaigns, ads, ad_users, each `<directory>/<table>.<format>`. Set-valued
fields (genders, genres, ...) are strings joined by '|' in every format (JSON also accepts
lists); an empty string is the empty set; an ad's creator_id is empty when it has none.

Loading validates every row: a malformed file raises `AdDataError` naming the file, the row
(1-based, header excluded) and the field, e.g.
`campaigns.csv: row 3, field 'daily_budget': Input should be greater than 0`.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from app.ads.types import Ad, Advertiser, AdUser, BrandSafety, Campaign, Targeting
from app.ads.world import AdWorld

FORMATS = ("csv", "json", "parquet")
_SEP = "|"


class AdDataError(ValueError):
    """A malformed ad-world file. Carries the file, row (1-based) and field at fault."""

    def __init__(self, path: Path, row: int | None, field: str | None, message: str) -> None:
        self.path, self.row, self.field = path, row, field
        where = "".join([f": row {row}" if row is not None else "", f", field '{field}'" if field else ""])
        super().__init__(f"{path.name}{where}: {message}")


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return frozenset(v for v in value.split(_SEP) if v)
    if value is None:
        return frozenset()
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple, set, frozenset)):
        value = value.tolist()
    return value


def _none_if_empty(value: Any) -> Any:
    if value is None or value == "" or (isinstance(value, float) and value != value):  # NaN
        return None
    return value


StrSet = Annotated[frozenset[str], BeforeValidator(_split)]
IntSet = Annotated[frozenset[int], BeforeValidator(_split)]
OptionalInt = Annotated[int | None, BeforeValidator(_none_if_empty)]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdvertiserRow(_Row):
    advertiser_id: int = Field(ge=0)
    name: str = Field(min_length=1)

    def entity(self) -> Advertiser:
        return Advertiser(self.advertiser_id, self.name)


class CampaignRow(_Row):
    campaign_id: int = Field(ge=0)
    advertiser_id: int = Field(ge=0)
    daily_budget: float = Field(gt=0)
    bid: float = Field(gt=0)
    start_ts: float
    end_ts: float
    category: str = Field(min_length=1)
    target_min_age: int = Field(ge=0)
    target_max_age: int = Field(ge=0)
    target_genders: StrSet
    target_occupations: StrSet
    target_genres: StrSet
    safety_max_adjacent_min_age: int = Field(ge=0)
    safety_blocked_topics: StrSet
    safety_blocked_creator_ids: IntSet

    @model_validator(mode="after")
    def _ordered(self) -> "CampaignRow":
        if self.end_ts <= self.start_ts:
            raise ValueError("end_ts must be after start_ts")
        if self.target_max_age < self.target_min_age:
            raise ValueError("target_max_age must be >= target_min_age")
        return self

    def entity(self) -> Campaign:
        return Campaign(
            self.campaign_id, self.advertiser_id, self.daily_budget, self.bid, self.start_ts, self.end_ts, self.category,
            Targeting(self.target_min_age, self.target_max_age, self.target_genders, self.target_occupations, self.target_genres),
            BrandSafety(self.safety_max_adjacent_min_age, self.safety_blocked_topics, self.safety_blocked_creator_ids),
        )

    @staticmethod
    def of(c: Campaign) -> dict[str, Any]:
        t, b = c.targeting, c.brand_safety
        return {
            "campaign_id": c.campaign_id, "advertiser_id": c.advertiser_id, "daily_budget": c.daily_budget,
            "bid": c.bid, "start_ts": c.start_ts, "end_ts": c.end_ts, "category": c.category,
            "target_min_age": t.min_age, "target_max_age": t.max_age, "target_genders": _join(t.genders),
            "target_occupations": _join(t.occupations), "target_genres": _join(t.genre_interests),
            "safety_max_adjacent_min_age": b.max_adjacent_min_age, "safety_blocked_topics": _join(b.blocked_topics),
            "safety_blocked_creator_ids": _join(b.blocked_creator_ids),
        }


class AdRow(_Row):
    ad_id: int = Field(ge=0)
    campaign_id: int = Field(ge=0)
    advertiser_id: int = Field(ge=0)
    title: str
    topics: StrSet
    creator_id: OptionalInt = None

    def entity(self) -> Ad:
        return Ad(self.ad_id, self.campaign_id, self.advertiser_id, self.title, tuple(sorted(self.topics)), self.creator_id)


class AdUserRow(_Row):
    user_id: int = Field(ge=0)
    age: int = Field(ge=0, le=130)
    gender: str = Field(min_length=1)
    occupation: str = Field(min_length=1)
    top_genres: StrSet
    opted_out_categories: StrSet
    opted_out_all: bool
    blocked_creator_ids: IntSet

    def entity(self) -> AdUser:
        return AdUser(
            self.user_id, self.age, self.gender, self.occupation, self.top_genres,
            self.opted_out_categories, self.opted_out_all, self.blocked_creator_ids,
        )


def _join(values: Iterable[Any]) -> str:
    return _SEP.join(str(v) for v in sorted(values))


def _ad_row(a: Ad) -> dict[str, Any]:
    return {"ad_id": a.ad_id, "campaign_id": a.campaign_id, "advertiser_id": a.advertiser_id, "title": a.title,
            "topics": _join(a.topics), "creator_id": "" if a.creator_id is None else a.creator_id}


def _user_row(u: AdUser) -> dict[str, Any]:
    return {"user_id": u.user_id, "age": u.age, "gender": u.gender, "occupation": u.occupation,
            "top_genres": _join(u.top_genres), "opted_out_categories": _join(u.opted_out_categories),
            "opted_out_all": u.opted_out_all, "blocked_creator_ids": _join(u.blocked_creator_ids)}


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    fmt = path.suffix.lstrip(".")
    if fmt == "json":
        path.write_text(json.dumps(rows, indent=1))
        return
    frame = pd.DataFrame(rows)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        if "creator_id" in frame:  # a nullable integer column, not strings
            frame["creator_id"] = pd.array([None if v == "" else v for v in frame["creator_id"]], dtype="Int64")
        frame.to_parquet(path, index=False)


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise AdDataError(path, None, None, "file not found")
    fmt = path.suffix.lstrip(".")
    try:
        if fmt == "json":
            rows = json.loads(path.read_text())
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise AdDataError(path, None, None, "expected a JSON list of objects")
            return rows
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
        frame = pd.read_parquet(path).astype(object)
        return [{k: _none_if_empty(v) if k == "creator_id" else v for k, v in r.items()} for r in frame.to_dict("records")]
    except AdDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is reported with the file's name
        raise AdDataError(path, None, None, f"unreadable {fmt}: {exc}") from exc


RowModel = TypeVar("RowModel", bound=_Row)


def _parse(path: Path, model: type[RowModel]) -> list[RowModel]:
    out = []
    for i, raw in enumerate(_read(path), start=1):
        try:
            out.append(model.model_validate(raw))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"]) or None
            raise AdDataError(path, i, field, error["msg"]) from exc
    return out


def _check_refs(path: Path, rows: list[Any], id_field: str, refs: dict[str, Callable[[Any], bool]]) -> None:
    seen: set[int] = set()
    for i, row in enumerate(rows, start=1):
        key = getattr(row, id_field)
        if key in seen:
            raise AdDataError(path, i, id_field, f"duplicate id {key}")
        seen.add(key)
        for field, ok in refs.items():
            if not ok(row):
                raise AdDataError(path, i, field, f"unknown {field} {getattr(row, field)}")


def save_ad_world(world: AdWorld, users: Iterable[AdUser], directory: Path, fmt: str = "parquet") -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / f"advertisers.{fmt}", [{"advertiser_id": a.advertiser_id, "name": a.name} for a in world.advertisers])
    _write(directory / f"campaigns.{fmt}", [CampaignRow.of(c) for c in world.campaigns])
    _write(directory / f"ads.{fmt}", [_ad_row(a) for a in world.ads])
    _write(directory / f"ad_users.{fmt}", [_user_row(u) for u in users])


def load_ad_world(directory: Path, fmt: str = "parquet") -> tuple[AdWorld, list[AdUser]]:
    """Read and validate the four tables; raises `AdDataError` at the first bad row."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    directory = Path(directory)
    paths = {t: directory / f"{t}.{fmt}" for t in ("advertisers", "campaigns", "ads", "ad_users")}
    advertisers = _parse(paths["advertisers"], AdvertiserRow)
    campaigns = _parse(paths["campaigns"], CampaignRow)
    ads = _parse(paths["ads"], AdRow)
    users = _parse(paths["ad_users"], AdUserRow)
    advertiser_ids = {a.advertiser_id for a in advertisers}
    campaign_owner = {c.campaign_id: c.advertiser_id for c in campaigns}
    _check_refs(paths["advertisers"], advertisers, "advertiser_id", {})
    _check_refs(paths["campaigns"], campaigns, "campaign_id", {"advertiser_id": lambda r: r.advertiser_id in advertiser_ids})
    _check_refs(
        paths["ads"],
        ads,
        "ad_id",
        {
            "campaign_id": lambda r: r.campaign_id in campaign_owner,
            "advertiser_id": lambda r: campaign_owner.get(r.campaign_id) == r.advertiser_id,
        },
    )
    _check_refs(paths["ad_users"], users, "user_id", {})
    world = AdWorld(
        tuple(r.entity() for r in advertisers), tuple(r.entity() for r in campaigns), tuple(r.entity() for r in ads)
    )
    return world, [u.entity() for u in users]
