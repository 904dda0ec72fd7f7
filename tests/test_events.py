"""The event core through the Python API: generator ratios and kinds, the validator on a table of inputs."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import ecomlogs
from ecomlogs import _core

GOOD = {
    "event_id": "0b7c1c9e-7d1e-4a43-9a3e-111111111111",
    "customer_id": "CUST-00042",
    "event_type": "PURCHASE",
    "amount": 129.99,
    "currency": "USD",
    "timestamp": "2026-11-26T13:18:27.123Z",
    "is_valid": True,
}

INVALID_KINDS = {
    "missing_customer_id",
    "empty_customer_id",
    "unknown_event_type",
    "zero_amount",
    "negative_amount",
    "missing_amount",
    "missing_currency",
    "not_marked_valid",
}


def test_invalid_ratio_within_two_points_and_every_kind_present() -> None:
    events = _core.generate_events(100_000, invalid_ratio=0.25, seed=12345)
    kinds = Counter(intended for _k, _v, intended in events)
    invalid = sum(n for k, n in kinds.items() if k != "valid")
    assert abs(invalid / 100_000 - 0.25) <= 0.02, invalid
    assert set(kinds) - {"valid"} == INVALID_KINDS
    # The validator agrees with what the generator meant, event by event.
    verdicts = _core.validate_many([v for _k, v, _i in events])
    for (_k, v, intended), verdict in zip(events, verdicts):
        assert verdict.valid == (intended == "valid"), (v, verdict)


def test_generated_events_have_the_original_shape_and_key() -> None:
    seen_types = Counter()
    for key, value, intended in _core.generate_events(2000, invalid_ratio=0.0, seed=7):
        e = json.loads(value)
        assert intended == "valid"
        assert set(e) == set(GOOD)
        assert key == e["customer_id"].encode()
        assert e["timestamp"].endswith("Z") and "T" in e["timestamp"]
        assert len(e["event_id"]) == 36
        seen_types[e["event_type"]] += 1
    assert seen_types["PAGE_VIEW"] > seen_types["ADD_TO_CART"] > seen_types["PURCHASE"] > 0


def test_seed_makes_runs_reproducible() -> None:
    def strip(v: bytes) -> dict:
        d = json.loads(v)
        del d["timestamp"]
        return d

    a = [strip(v) for v in ecomlogs.generate_events_json(500, seed=99)]
    b = [strip(v) for v in ecomlogs.generate_events_json(500, seed=99)]
    c = [strip(v) for v in ecomlogs.generate_events_json(500, seed=100)]
    assert a == b
    assert a != c


def with_(field: str, value: object) -> dict:
    d = dict(GOOD)
    if value is ...:
        del d[field]
    else:
        d[field] = value
    return d


CASES = [
    (GOOD, None),
    (with_("customer_id", ...), "missing_customer_id"),
    (with_("customer_id", ""), "missing_customer_id"),
    (with_("customer_id", 5), "wrong_type"),
    (with_("event_type", "REFUND"), "invalid_event_type"),
    (with_("amount", 0), "non_positive_amount"),
    (with_("amount", -3.5), "non_positive_amount"),
    (with_("amount", ...), "missing_amount"),
    (with_("amount", "12.5"), "wrong_type"),
    (with_("amount", 123456789.0), "amount_out_of_range"),
    (with_("amount", 1.005), "amount_out_of_range"),
    (with_("currency", ...), "missing_currency"),
    (with_("currency", "X" * 11), "field_too_long"),
    (with_("is_valid", False), "not_marked_valid"),
    (with_("is_valid", ...), "not_marked_valid"),
    (with_("event_id", ...), "missing_event_id"),
    (with_("timestamp", "not a time"), "bad_timestamp"),
    (with_("customer_id", "a\u0000b"), "nul_character"),
    (with_("customer_id", "c" * 256), "field_too_long"),
    ("[1, 2]", "not_an_object"),
    ("{broken", "malformed_json"),
    ('{"amount": NaN}', "malformed_json"),
    (b"\xff\xfe", "not_utf8"),
    (b"", "empty_value"),
    (None, "empty_value"),
    ("[" * 5000 + "]" * 5000, "not_an_object"),
    # Deep nesting is survived: in an unknown field it is skipped, in a known one it is a wrong type.
    ('{"a":' * 5000 + "1" + "}" * 5000, "missing_customer_id"),
    (json.dumps(with_("customer_id", ...))[:-1] + ', "customer_id":' + '{"a":' * 5000 + "1" + "}" * 5001,
     "wrong_type"),
]


@pytest.mark.parametrize("value,reason", CASES)
def test_validator_table(value: object, reason: str) -> None:
    v = ecomlogs.validate(value)  # type: ignore[arg-type]
    assert v.reason == reason, v
    assert v.valid == (reason is None)
    if reason is None:
        assert v.canonical is not None and json.loads(v.canonical)["amount"] == 129.99
    else:
        assert v.detail and v.canonical is None
        assert reason in ecomlogs.reason_codes()


def test_validate_batch_matches_one_by_one() -> None:
    values = [json.dumps(c[0]).encode() if isinstance(c[0], dict) else c[0] for c in CASES]
    batch = ecomlogs.validate_batch(values)  # type: ignore[arg-type]
    assert [b.reason for b in batch] == [ecomlogs.validate(v).reason for v in values]  # type: ignore[arg-type]


def test_bad_ratio_is_a_config_error() -> None:
    with pytest.raises(ecomlogs.ConfigError):
        ecomlogs.generate_events(1, invalid_ratio=1.5)
    with pytest.raises(ValueError):  # ConfigError is also a ValueError
        ecomlogs.generate_events(1, invalid_ratio=-0.1)
