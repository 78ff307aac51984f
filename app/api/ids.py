"""The API's ids are the dataset's own (app/data/ids.py); the models' are dense indices. This is
the one place that converts, for the served feed and the in-process one alike.

A dataset has one kind of id: integers (the built-in worlds, whose ids need no map, or a
user's integer ids) or strings. A request naming an id of the other kind is refused (422 naming
the field), as the OpenAPI document of that dataset says. A user the artifact does not know is a
new user: a cold-start feed under a stable index (`IdMap.guest`). An item the artifact does not
know cannot be engaged with yet: 422 (datasets without a map accept any integer, as before).

    ids = ApiIds(dataset.ids)
    internal = ids.user("u42", field="user_id")
    ids.items_out([3, 7])        # ["m50", "m7"]
"""
from __future__ import annotations

from collections.abc import Iterable

from app.api.errors import ApiError
from app.api.schemas import MAX_ID
from app.data.ids import IdMap, IdMaps
from app.freshness.published import PlacedItems


class ApiIds:
    """`published`: the items published since the artifact (app/freshness/published.py), whose
    ids resolve before the artifact's."""

    def __init__(self, ids: IdMaps | None, published: PlacedItems | None = None) -> None:
        self.ids = ids
        self.published = published

    def with_published(self, published: PlacedItems) -> ApiIds:
        return ApiIds(self.ids, published if len(published) else None)

    @property
    def renames_items(self) -> bool:
        """Whether some item's API id differs from its index (a map, or published items)."""
        return self.ids is not None or self.published is not None

    @property
    def kind(self) -> str:
        """"integer" or "string": the JSON type of this dataset's ids."""
        return "integer" if self.ids is None or self.ids.users.integer_ids else "string"

    def parse_query(self, raw: str, field: str) -> int | str:
        """A query parameter's text as this dataset's kind of id."""
        if self.kind == "string":
            return raw
        text = raw.strip()
        if not text.lstrip("-").isdigit():
            raise ApiError(422, field, "must be an integer id")
        return int(text)

    def checked(self, value: object, field: str) -> object:
        """`value` if it is of this dataset's kind of id (422 naming `field` otherwise)."""
        if self.kind == "integer" and not isinstance(value, int):
            raise ApiError(422, field, "this dataset's ids are integers")
        if self.kind == "string" and not isinstance(value, str):
            raise ApiError(422, field, "this dataset's ids are strings")
        return value

    def user(self, value: object, field: str = "user_id") -> int:
        value = self.checked(value, field)
        if self.ids is None:
            if not 1 <= int(value) <= MAX_ID:  # type: ignore[call-overload]
                raise ApiError(422, field, f"must be between 1 and {MAX_ID}")
            return int(value)  # type: ignore[call-overload]
        found = self.ids.users.one(value)
        return found if found > 0 else self.ids.users.guest(value)

    def _known(self, mapping: IdMap | None, value: object, field: str, what: str) -> int:
        value = self.checked(value, field)
        if self.published is not None:
            overlay = self.published.index_of if what == "item" else self.published.creator_index_of
            if value in overlay:
                return overlay[value]
        if mapping is None:
            if not 0 <= int(value) <= MAX_ID:  # type: ignore[call-overload]
                raise ApiError(422, field, f"must be between 0 and {MAX_ID}")
            return int(value)  # type: ignore[call-overload]
        found = mapping.one(value)
        if found < 0:
            raise ApiError(422, field, f"unknown {what} {value!r}")
        return found

    def item(self, value: object, field: str = "item_id") -> int:
        return self._known(None if self.ids is None else self.ids.items, value, field, "item")

    def creator(self, value: object, field: str = "creator_id") -> int:
        return self._known(None if self.ids is None else self.ids.creators, value, field, "creator")

    def items_out(self, internal: Iterable[int]) -> list:
        internal = list(internal)
        if self.published is None:
            return internal if self.ids is None else self.ids.items.to_external(internal)
        base, overlay = self.published.base_slots, self.published.external_of
        artifact = [i for i in internal if i < base]
        named = iter(artifact if self.ids is None else self.ids.items.to_external(artifact))
        return [overlay.get(i, i) if i >= base else next(named) for i in internal]
