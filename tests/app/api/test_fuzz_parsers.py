"""Fuzzing the parsers of untrusted input with hypothesis: the event batch (POST /v1/events),
the configuration (YAML / user_config / admin overrides) and a deployment's user_config.

Properties: no exception but the parser's own validation error; every rejection names the
field at fault (a key the input gave, or a required one it left out); what is accepted
round-trips through the event stream's payload unchanged.
"""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from app.api.schemas import Event, ReloadRequest, WeightsRequest
from app.api.validation import field_name, validation_problems
from config import ConfigError, RayfeedConfig, config_from_mapping
from app.state.events import StreamEvent

EVENTS = TypeAdapter(list[Event])
EVENT_FIELDS = sorted(Event.model_fields)
JUNK_KEYS = ["colour", "", "user id", "__proto__", "type ", "ÜSER"]

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["impression", "click", "like", "share", "hide", "watch", "conversion", "poke"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
event_like = st.dictionaries(st.sampled_from(EVENT_FIELDS + JUNK_KEYS), json_values, max_size=8)
plausible_event = st.fixed_dictionaries(
    {"user_id": st.integers(-3, 2**63), "type": st.sampled_from(["click", "like", "hide", "watch", "impression", "x"])},
    optional={"item_id": st.integers(-1, 2**63), "ad_id": st.integers(-1, 10**6), "event_id": st.text(max_size=140),
              "watch_seconds": st.one_of(st.floats(-1, 10**6), st.just(float("nan"))), "position": st.integers(-1, 10**6),
              "request_id": st.text(max_size=140), "ts": st.floats(allow_nan=True, allow_infinity=True),
              "creator_id": st.integers(-1, 10**6)},
)
batches = st.lists(st.one_of(event_like, plausible_event, json_scalars), max_size=6)


def _named_field_ok(field: str, batch: list) -> bool:
    """`[i]` or `[i].key`, where i indexes the batch and key was given or is an Event field."""
    if not field.startswith("["):
        return field == "body"
    index, _, rest = field[1:].partition("]")
    if not index.isdigit() or int(index) >= len(batch):
        return False
    key = rest.removeprefix(".").split(".")[0].split("[")[0]
    given_keys = batch[int(index)] if isinstance(batch[int(index)], dict) else {}
    return key == "" or key in given_keys or key in EVENT_FIELDS


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_event_batches_are_accepted_or_rejected_naming_the_field(batch):
    try:
        events = EVENTS.validate_python(batch)
    except ValidationError as exc:
        problems = validation_problems(list(exc.errors()))
        assert problems
        for problem in problems:
            assert problem["message"]
            assert _named_field_ok(problem["field"], batch), (problem, batch)
        return
    for event in events:  # accepted: what the stream stores reads back the same
        fields = event.model_dump(exclude={"event_id"})
        fields["ts"] = event.ts if event.ts is not None else 1.0
        stored = StreamEvent(event_id=event.event_id or StreamEvent.derive_id(fields), **fields)
        assert StreamEvent(**json.loads(stored.payload())) == stored


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_event_bodies_that_are_not_json_are_rejected_by_the_json_parser_only(raw):
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return  # the ingress answers 400 naming `body`
    if isinstance(payload, list):
        try:
            EVENTS.validate_python(payload)
        except ValidationError:
            pass


@settings(deadline=None)
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(["version", "alpha", "beta", "ranking", "x"]), json_values)))
def test_admin_bodies_are_accepted_or_rejected_naming_the_field(body):
    for model in (ReloadRequest, WeightsRequest):
        try:
            model.model_validate_json(json.dumps(body))
        except ValidationError as exc:
            names = {"body", *model.model_fields, *(body if isinstance(body, dict) else ())}
            for problem in validation_problems(list(exc.errors())):
                field = problem["field"]  # a key may itself hold "." or "[": match whole names
                assert any(field == name or field.startswith((f"{name}.", f"{name}[")) for name in names), field


SECTIONS = sorted(RayfeedConfig.model_fields)


def _section_keys(section: str) -> list[str]:
    annotation = RayfeedConfig.model_fields[section].annotation
    fields = getattr(annotation, "model_fields", {})
    return sorted(fields) + ["no_such_key"]


config_mappings = st.dictionaries(
    st.sampled_from(SECTIONS + ["no_such_section"]),
    st.one_of(json_scalars, st.builds(lambda pairs: dict(pairs), st.lists(
        st.tuples(st.sampled_from(sorted({k for s in SECTIONS for k in _section_keys(s)})), json_values), max_size=4))),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_mappings)
def test_configuration_is_built_or_refused_naming_source_and_key(mapping):
    try:
        config_from_mapping(mapping, "fuzz.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.yaml: invalid configuration: ")
        cause = exc.__cause__
        assert isinstance(cause, ValidationError)
        for error in cause.errors():
            path = ".".join(str(p) for p in error["loc"])
            assert path and path in message
            assert error["loc"][0] in mapping or error["loc"][0] in SECTIONS


def test_field_names_as_clients_write_them():
    assert field_name(("query", "limit")) == "limit"
    assert field_name(("body", 3, "type")) == "[3].type"
    assert field_name((0, "ranking", "click")) == "[0].ranking.click"
    assert field_name(()) == "body"
