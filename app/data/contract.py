"""The table contract: what a dataset must look like for rayfeed to train and serve on it.

One declaration per table and column (kind, required or not, meaning, example); the reader,
the validator, the exporters and docs/data.md all read it from here. Kinds are checked
against the Arrow type of what was read, so a CSV string where a number belongs is reported
by table and column before anything trains:

    id          string or integer, chosen by the user (mapped to dense indices inside artifacts)
    int, float  numbers; a timestamp is seconds since the epoch or an Arrow timestamp
    string      text; string_list a list of strings (CSV: `a|b|c`); float_list a fixed-size
                list of floats (CSV: `0.1|0.2|...`)
    event       one of EVENT_TYPES
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["id", "int", "float", "string", "bool", "timestamp", "event", "string_list", "float_list"]

EVENT_TYPES: tuple[str, ...] = ("impression", "click", "like", "share", "hide", "watch", "conversion")
# What an interaction row says a user did with an item, beyond being shown it.
ENGAGEMENTS: tuple[str, ...] = ("click", "like", "share", "watch", "conversion")
LIST_SEPARATOR = "|"  # lists in CSV cells


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    required: bool
    meaning: str
    example: str


@dataclass(frozen=True)
class TableSpec:
    name: str
    required: bool
    meaning: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()  # columns whose values must be unique together
    # Columns beyond the declared ones: "numeric" tables accept extra numeric feature columns.
    extra_columns: Literal["none", "numeric", "any"] = "none"
    alternatives: dict[str, str] = field(default_factory=dict)  # a column that may stand in for another

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)


INTERACTIONS = TableSpec(
    "interactions", True,
    "What users were shown and did: one row per event. Impressions (shown, engaged with or not) are "
    "the negatives a ranker learns from; a log without them (ratings only) is accepted too.",
    (
        Column("user_id", "id", True, "the user", "u42"),
        Column("item_id", "id", True, "the item", "m50"),
        Column("event", "event", True, f"one of {', '.join(EVENT_TYPES)}", "click"),
        Column("timestamp", "timestamp", True, "when, seconds since the epoch (or an Arrow timestamp)", "881250949"),
        Column("value", "float", False, "watch seconds for a watch event (or a rating in a rating log)", "34.5"),
        Column("position", "int", False, "1-based slot the item was shown in, when known", "3"),
        Column("request_id", "string", False, "the feed request that showed it: ties engagements to their impression",
               "9f2c…"),
        Column("rating", "float", False, "instead of `event`: a rating, turned into events by the declared "
               "mapping (data.tables.rating_events; MovieLens's by default)", "4"),
    ),
    alternatives={"event": "rating"},
)

ITEMS = TableSpec(
    "items", True,
    "The catalogue: every item an interaction names, with its creator and publication time.",
    (
        Column("item_id", "id", True, "the item", "m50"),
        Column("creator_id", "id", True, "who made it (creator caps, brand safety, hides)", "c7"),
        Column("created_at", "timestamp", True, "when it was published, seconds since the epoch", "820454400"),
        Column("topics", "string_list", False, "topics (diversity, session interest, ad brand safety)",
               "Comedy|Romance"),
        Column("content_rating", "string", False, "a label such as G, PG-13, R; NR when unrated", "PG-13"),
        Column("min_age", "int", False, "youngest audience it is suitable for (derived from content_rating "
               "when absent: R 17, PG-13 13, else 0; NR data.unrated_min_age)", "13"),
        Column("title", "string", False, "what the CLI shows", "Star Wars (1977)"),
        Column("embedding", "float_list", False, "a precomputed content embedding, the same length in every row",
               "0.12|-0.5|…"),
    ),
    key=("item_id",),
    extra_columns="numeric",
)

USERS = TableSpec(
    "users", False,
    "Who the users are. Any categorical or numeric attributes; data.tables.user_columns says which "
    "feed the model's four user slots (age, gender, occupation, region) and so the towers, the "
    "ranker, ad targeting and the content-rating filter. Users without a row are served as unknown.",
    (
        Column("user_id", "id", True, "the user", "u42"),
    ),
    key=("user_id",),
    extra_columns="any",
)

SOCIAL_EDGES = TableSpec(
    "social_edges", False,
    "Who follows whom (the social source, notifications). Generated from the users' attributes "
    "(seeded, documented in app/data/social.py) when absent.",
    (
        Column("user_id", "id", True, "the user", "u42"),
        Column("friend_id", "id", True, "a friend of theirs", "u7"),
        Column("weight", "float", False, "tie strength (1 when absent)", "0.8"),
        Column("close", "bool", False, "a close friend (their posts are kept on the page)", "true"),
    ),
    key=("user_id", "friend_id"),
)

TABLES: dict[str, TableSpec] = {t.name: t for t in (INTERACTIONS, ITEMS, USERS, SOCIAL_EDGES)}

# MovieLens's documented mapping from a 1-5 rating to events (app/data/tables.py): every rating
# is a click, ≥ 4 a like, 5 a share, ≤ 2 a hide, and the watch fraction is (rating − 1) / 4.
MOVIELENS_RATING_EVENTS: dict[str, float] = {"like": 4.0, "share": 5.0, "hide_at_most": 2.0}

# The minimum viewer age of common content-rating labels, for items without `min_age`.
CONTENT_RATING_MIN_AGE: dict[str, int] = {"G": 0, "PG": 0, "PG-13": 13, "R": 17, "NC-17": 18}


def markdown() -> str:
    """docs/data.md's column tables, from the declarations above."""
    lines = []
    for table in TABLES.values():
        lines += [f"### `{table.name}` ({'required' if table.required else 'optional'})", "", table.meaning, ""]
        if table.key:
            lines += [f"Key: {', '.join(f'`{k}`' for k in table.key)} (unique).", ""]
        lines += ["| column | type | required | meaning | example |", "|---|---|---|---|---|"]
        for c in table.columns:
            lines.append(f"| `{c.name}` | {c.kind} | {'yes' if c.required else 'no'} | {c.meaning} | `{c.example}` |")
        if table.extra_columns == "numeric":
            lines.append("| *any other* | float | no | a numeric item feature | `0.3` |")
        elif table.extra_columns == "any":
            lines.append("| *any other* | int, float or string | no | an attribute (see data.tables.user_columns) | `F` |")
        lines.append("")
    return "\n".join(lines)
