"""Event contracts (JSON Schema draft 2020-12 files) on the real broker and PostgreSQL: a shop's contract with
REFUND and SEARCH from raw records to table rows, the default contract against today's corpus, broken
contract files, and ``ecomlogs contract check`` on a sample topic."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import pytest
from confluent_kafka import Producer

import ecomlogs
from ecomlogs import _core
from helpers import assert_rollups_exact, read_all, rows, run_until_caught_up, unique
from test_events import CASES, GOOD

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "contracts" / "examples" / "shop.json"
DEFAULT = ROOT / "contracts" / "default.json"
SHOP_ID = "urn:example-shop:events:v2"
DEFAULT_ID = "urn:ecomlogs:contract:default:v1"


def event(i: int, **changes: Any) -> dict[str, Any]:
    d = dict(GOOD, event_id=f"evt-{i:06d}")
    for k, v in changes.items():
        if v is ...:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def produce_raw(bootstrap: str, topic: str, values: list[Optional[bytes]]) -> None:
    """``values`` to the three partitions of ``topic`` in turn."""
    ecomlogs.ensure_topics([topic], bootstrap_servers=bootstrap, partitions=3)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i, v in enumerate(values):
        p.produce(topic, value=v, key=b"k", partition=i % 3)
    assert p.flush(60) == 0


def headers(m: Any) -> dict[str, Optional[str]]:
    return {k: (v.decode() if v is not None else None) for k, v in (m.headers() or [])}


def run(args: list[str], env: Optional[dict[str, str]] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


# ---------------------------------------------------------------------------------------------- end to end
def test_a_shop_contract_with_refund_and_search_reaches_the_table(kafka_bootstrap: str, db: str) -> None:
    raw, clean, dlq, dlq_load = unique("raw"), unique("clean"), unique("dlq"), unique("dlq")
    search = {"event_id": "evt-search", "customer_id": "CUST-7", "event_type": "SEARCH", "query": "red shoes",
              "timestamp": "2026-11-26T13:18:27Z"}
    valid = {
        "evt-000001": event(1),
        "evt-refund": event(2, event_id="evt-refund", event_type="REFUND", amount=-25.5),
        "evt-search": search,
        # The default contract refuses these; the shop's does not ask for is_valid.
        "evt-unmarked": event(3, event_id="evt-unmarked", is_valid=False),
    }
    invalid: list[tuple[bytes, str]] = [
        (json.dumps(event(10, event_type="REFUND", amount=5)).encode(), "refund_not_negative"),
        (json.dumps(event(11, event_type="REFUND", amount=...)).encode(), "missing_amount"),
        (json.dumps(event(20, event_type="PURCHASE", currency=...)).encode(), "missing_currency"),
        (json.dumps(dict(search, event_id="s2", amount=1)).encode(), "search_with_amount"),
        (json.dumps({k: v for k, v in search.items() if k != "query"}).encode(), "search_without_query"),
        (json.dumps(event(12, currency="JPY")).encode(), "unknown_currency"),
        (json.dumps(event(13, event_type="RETURN")).encode(), "invalid_event_type"),
        (json.dumps(event(14, amount=0)).encode(), "non_positive_amount"),
        (json.dumps(event(15, timestamp="2026-11-26T13:18:27")).encode(), "bad_timestamp"),  # date-time: offset
        # The built-in checks run for every contract.
        (json.dumps(event(16, event_type="REFUND", amount=-1.005)).encode(), "amount_out_of_range"),
        (json.dumps(event(17, timestamp="0000-06-01T00:00:00Z")).encode(), "bad_timestamp"),
        (json.dumps(event(18, customer_id="c" * 300)).encode(), "field_too_long"),
        (b"\xff\xfe", "not_utf8"),
        (b"[1]", "not_an_object"),
        (json.dumps(event(19, event_id=...)).encode(), "missing_event_id"),
    ]
    produce_raw(kafka_bootstrap, raw, [json.dumps(v).encode() for v in valid.values()] + [v for v, _ in invalid])

    out = run_until_caught_up([
        sys.executable, "streamProcessor.py", "--bootstrap-servers", kafka_bootstrap, "--input-topic", raw, "--output-topic", clean,
        "--dlq-topic", dlq, "--group-id", unique("g"), "--contract", str(SHOP)])
    assert f"contract {SHOP_ID}" in out, out

    clean_msgs = read_all(kafka_bootstrap, clean, expected=len(valid))
    assert sorted(json.loads(m.value())["event_id"] for m in clean_msgs) == sorted(valid)
    for m in clean_msgs:
        assert headers(m)["ecomlogs.contract"] == SHOP_ID
    canonical = {json.loads(m.value())["event_id"]: json.loads(m.value()) for m in clean_msgs}
    assert canonical["evt-search"] == {"event_id": "evt-search", "customer_id": "CUST-7", "event_type": "SEARCH",
                                       "amount": None, "currency": None, "timestamp": "2026-11-26T13:18:27Z",
                                       "is_valid": True}
    assert canonical["evt-refund"]["amount"] == -25.5

    dlq_msgs = read_all(kafka_bootstrap, dlq, expected=len(invalid))
    assert Counter((m.value(), headers(m)["reason"]) for m in dlq_msgs) == Counter(invalid)
    for m in dlq_msgs:
        h = headers(m)
        assert h["ecomlogs.contract"] == SHOP_ID and h["stage"] == "processor" and h["detail"], h
    details = {headers(m)["reason"]: headers(m)["detail"] for m in dlq_msgs}
    assert details["unknown_currency"].startswith("enum: ") and details["unknown_currency"].endswith(" at /currency")
    assert details["search_with_amount"].startswith("not: ") and details["search_with_amount"].endswith(" at /")

    # The loader stores what the contract accepted: a negative amount, a NULL amount and currency.
    run_until_caught_up([sys.executable, "psqlConsumer.py", "--bootstrap-servers", kafka_bootstrap, "--topic", clean, "--dsn", db,
                         "--group-id", unique("g"), "--dlq-topic", dlq_load])
    got = {r[0]: r for r in rows(db)}
    assert sorted(got) == sorted(valid)
    assert got["evt-refund"][2:5] == ("REFUND", Decimal("-25.50"), "USD")
    assert got["evt-search"][1:5] == ("CUST-7", "SEARCH", None, None)
    assert got["evt-000001"][3] == Decimal("129.99")
    assert read_all(kafka_bootstrap, dlq_load) == []
    # The rollups count the new types too (a NULL currency under ''), exactly as the table does.
    assert_rollups_exact(db)
    assert ecomlogs.query("SELECT event_type, currency, events, amount FROM ecomlogs_daily_rollup "
                          "WHERE event_type IN ('REFUND', 'SEARCH') ORDER BY 1", dsn=db) == [
        {"event_type": "REFUND", "currency": "USD", "events": 1, "amount": Decimal("-25.50")},
        {"event_type": "SEARCH", "currency": "", "events": 1, "amount": Decimal("0")}]


def test_the_environment_names_the_contract_and_a_broken_one_stops_the_processor(kafka_bootstrap: str,
                                                                                tmp_path: Path) -> None:
    raw, clean, dlq = unique("raw"), unique("clean"), unique("dlq")
    produce_raw(kafka_bootstrap, raw, [json.dumps(event(1, event_type="REFUND", amount=-3)).encode(),
                                       json.dumps(event(2)).encode()])
    args = ["streamProcessor.py", "--bootstrap-servers", kafka_bootstrap, "--input-topic", raw, "--output-topic",
            clean, "--dlq-topic", dlq, "--group-id", unique("g"), "--until-caught-up"]
    p = run(args, env={"ECOMLOGS_CONTRACT": str(SHOP)})
    assert p.returncode == 0, p.stderr
    assert {headers(m)["ecomlogs.contract"] for m in read_all(kafka_bootstrap, clean, expected=2)} == {SHOP_ID}
    # Without it: the default contract, whose header every record carries too.
    raw2, clean2, dlq2 = unique("raw"), unique("clean"), unique("dlq")
    produce_raw(kafka_bootstrap, raw2, [json.dumps(event(1, event_type="REFUND", amount=-3)).encode(),
                                        json.dumps(event(2)).encode()])
    p = run(["streamProcessor.py", "--bootstrap-servers", kafka_bootstrap, "--input-topic", raw2, "--output-topic",
             clean2, "--dlq-topic", dlq2, "--group-id", unique("g"), "--until-caught-up"])
    assert p.returncode == 0, p.stderr
    [ok] = read_all(kafka_bootstrap, clean2, expected=1)
    [dead] = read_all(kafka_bootstrap, dlq2, expected=1)
    assert headers(ok)["ecomlogs.contract"] == DEFAULT_ID
    assert headers(dead)["ecomlogs.contract"] == DEFAULT_ID and headers(dead)["reason"] == "invalid_event_type"
    broken = tmp_path / "broken.json"
    broken.write_text('{"$id": "urn:x", "type": "strnig"}')
    p = run(args, env={"ECOMLOGS_CONTRACT": str(broken)})
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "ECOMLOGS_CONTRACT" in p.stderr and "not a valid JSON Schema" in p.stderr


# ---------------------------------------------------------------------------------------------- the default
def _renamed_default(tmp_path: Path) -> Path:
    """The default contract under another $id: the same rules, run through the schema (not as typed code)."""
    p = tmp_path / "default-copy.json"
    p.write_text(DEFAULT.read_text().replace("default:v1", "default:v1-copy"))
    return p


def test_the_default_contract_gives_todays_verdicts_and_bytes_on_the_corpus(tmp_path: Path) -> None:
    copy = _renamed_default(tmp_path)
    for value, reason in CASES:
        # The documented difference: nesting deeper than a schema can hold, which the typed default skips
        # (in a field it does not read) or calls a wrong type (in one it reads).
        deep = isinstance(value, str) and value.count('{"a":') > 128
        today = ecomlogs.validate(value)  # type: ignore[arg-type]
        assert today.reason == reason
        named = ecomlogs.validate(value, contract=DEFAULT)  # type: ignore[arg-type]
        assert (named.valid, named.reason, named.canonical) == (today.valid, today.reason, today.canonical)
        schema = ecomlogs.validate(value, contract=copy)  # type: ignore[arg-type]
        if deep:
            assert schema.reason == "malformed_json" and "deeper than 128" in (schema.detail or "")
            continue
        assert (schema.valid, schema.reason, schema.canonical) == (today.valid, today.reason, today.canonical), \
            str(value)[:300]
        assert schema.contract == "urn:ecomlogs:contract:default:v1-copy" and today.contract == DEFAULT_ID


def test_the_default_contract_through_its_schema_agrees_on_generated_events(tmp_path: Path) -> None:
    values = ecomlogs.generate_events_json(20_000, invalid_ratio=0.5, seed=5)
    today = ecomlogs.validate_batch(values)
    schema = ecomlogs.validate_batch(values, contract=_renamed_default(tmp_path))
    assert [(v.reason, v.canonical) for v in schema] == [(v.reason, v.canonical) for v in today]
    assert 8_000 < sum(not v.valid for v in today) < 12_000


def test_the_readme_shows_the_example_contract_as_shipped() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "```json\n" + SHOP.read_text() + "```" in readme
    assert json.loads(SHOP.read_text())["$id"] == SHOP_ID


def test_the_shipped_default_is_the_file_and_the_command_prints_it() -> None:
    assert ecomlogs.DEFAULT_CONTRACT == DEFAULT.read_text()
    p = run(["-m", "ecomlogs", "contract", "show-default"])
    assert p.returncode == 0 and p.stdout == DEFAULT.read_text(), p.stderr
    assert json.loads(p.stdout)["$id"] == DEFAULT_ID


# ---------------------------------------------------------------------------------------------- Python API
def test_validate_takes_a_contract(tmp_path: Path) -> None:
    refund = event(1, event_type="REFUND", amount=-5)
    assert ecomlogs.validate(refund).reason == "invalid_event_type"
    v = ecomlogs.validate(refund, contract=SHOP)
    assert v.valid and v.contract == SHOP_ID and json.loads(v.canonical or b"")["amount"] == -5
    v = ecomlogs.validate(event(1, event_type="REFUND", amount=5), contract=str(SHOP))
    assert (v.reason, v.detail) == ("refund_not_negative",
                                    "exclusiveMaximum: 5 is greater than or equal to the maximum of 0 at /amount")
    batch = ecomlogs.validate_batch([refund, event(2, currency="JPY"), b"\xff"], contract=SHOP)
    assert [b.reason for b in batch] == [None, "unknown_currency", "not_utf8"]
    codes = ecomlogs.reason_codes(contract=SHOP)
    assert codes[:len(_core.reason_codes())] == _core.reason_codes()
    assert {"refund_not_negative", "search_with_amount", "unknown_currency"} <= set(codes)
    assert "contract_violation" in ecomlogs.reason_codes()
    # A file is compiled once per process and content; a change is seen.
    f = tmp_path / "c.json"
    f.write_text('{"$id": "urn:t:1", "required": ["zzz"]}')
    assert ecomlogs.validate(event(1), contract=f).reason == "contract_violation"
    f.write_text('{"$id": "urn:t:2", "x-reason": "needs_zzz", "required": ["zzz"]}')
    v = ecomlogs.validate(event(1), contract=f)
    assert (v.reason, v.contract, v.detail) == ("needs_zzz", "urn:t:2", 'required: "zzz" is a required property at /')


BROKEN = [
    ("not_json.json", "{not json", ["not JSON"]),
    ("not_a_schema.json", '{"$id": "urn:x", "type": "strnig"}', ["not a valid JSON Schema"]),
    ("draft7.json", '{"$schema": "http://json-schema.org/draft-07/schema#", "$id": "urn:x"}', ["draft 2020-12"]),
    ("unknown_draft.json", '{"$schema": "https://example.com/my-draft", "$id": "urn:x"}', ["my-draft"]),
    ("no_id.json", '{"required": ["amount"]}', ["no $id"]),
    ("bad_reason.json", '{"$id": "urn:x", "properties": {"a": {"x-reason": "Not A Code"}}}', ["x-reason"]),
    ("remote_ref.json", '{"$id": "urn:x", "$ref": "https://example.com/s.json"}', ["not a valid JSON Schema"]),
]


@pytest.mark.parametrize("name,text,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_contract_is_one_line_and_exit_2_everywhere(tmp_path: Path, name: str, text: str,
                                                            words: list[str]) -> None:
    f = tmp_path / name
    f.write_text(text)
    for argv in (["streamProcessor.py", "--bootstrap-servers", "127.0.0.1:1", "--contract", str(f)],
                 ["-m", "ecomlogs", "contract", "check", str(f)],
                 ["-m", "ecomlogs", "run", "--bootstrap-servers", "127.0.0.1:1", "--contract", str(f)]):
        p = run(argv, timeout=30)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert p.returncode == 2 and len(lines) == 1, (argv, p.stderr)
        assert "Traceback" not in p.stderr and str(f) in lines[0] and all(w in lines[0] for w in words), lines
    with pytest.raises(ecomlogs.ConfigError, match=name):
        ecomlogs.validate(event(1), contract=f)
    with pytest.raises(ecomlogs.ConfigError):
        ecomlogs.process(contract=str(f), bootstrap_servers="127.0.0.1:1")


def test_signatures_take_the_contract_option_with_none_for_default() -> None:
    for fn in (_core.validate_one, _core.validate_many, _core.reason_codes, _core.process):
        assert inspect.signature(fn).parameters["contract"].default is None, fn
    table = sorted(o["name"] for o in _core.OPTIONS if o["command"] == "contract check" and o["python"])
    params = inspect.signature(_core.contract_check).parameters
    assert sorted(n for n in params if n != "contract") == table
    assert all(params[n].default is None for n in table)
    assert _core.DEFAULTS["validate"] == {"contract": None}
    assert _core.DEFAULTS["contract check"]["sample_size"] == 1000


# ---------------------------------------------------------------------------------------------- contract check
def test_contract_check_counts_what_a_rollout_would_change(kafka_bootstrap: str) -> None:
    topic = unique("raw")
    values = ecomlogs.generate_events_json(600, invalid_ratio=0.3, seed=21)
    extra = [json.dumps(event(900 + i, event_type="REFUND", amount=-1 - i)).encode() for i in range(5)]
    extra += [json.dumps(event(950 + i, currency="JPY")).encode() for i in range(4)]
    produce_raw(kafka_bootstrap, topic, values + extra)
    sample = values + extra
    now = ecomlogs.validate_batch(sample)
    new = ecomlogs.validate_batch(sample, contract=SHOP)
    want_rejected = Counter(b.reason for a, b in zip(now, new) if a.valid and not b.valid)
    want_accepted = Counter(a.reason for a, b in zip(now, new) if not a.valid and b.valid)
    assert want_rejected["unknown_currency"] == 4 and want_accepted["invalid_event_type"] >= 5

    r = ecomlogs.contract_check(SHOP, sample_topic=topic, sample_size=10_000, bootstrap_servers=kafka_bootstrap)
    assert (r.contract_id, r.current_id, r.sampled) == (SHOP_ID, DEFAULT_ID, len(sample))
    assert (r.valid_now, r.valid_new) == (sum(v.valid for v in now), sum(v.valid for v in new))
    assert r.newly_rejected == dict(want_rejected) and r.newly_accepted == dict(want_accepted)
    assert {reason for _p, _o, reason, _d in r.examples} == set(want_rejected)

    p = run(["-m", "ecomlogs", "contract", "check", str(SHOP), "--sample-topic", topic, "--sample-size", "10000",
             "--bootstrap-servers", kafka_bootstrap])
    assert p.returncode == 0, p.stderr
    assert f"sample: {len(sample):,} records of {topic}" in p.stdout, p.stdout
    rejected = sum(want_rejected.values())
    assert f"{rejected:,} accepted now would be rejected: unknown_currency 4" in p.stdout, p.stdout
    assert f"{sum(want_accepted.values()):,} rejected now would be accepted" in p.stdout, p.stdout

    # The latest N per partition; the contract in use now from the environment: nothing changes.
    p = run(["-m", "ecomlogs", "contract", "check", str(SHOP), "--sample-topic", topic, "--sample-size", "10",
             "--bootstrap-servers", kafka_bootstrap], env={"ECOMLOGS_CONTRACT": str(SHOP)})
    assert p.returncode == 0, p.stderr
    assert "sample: 30 records" in p.stdout and "no record accepted now would be rejected" in p.stdout, p.stdout
    missing = run(["-m", "ecomlogs", "contract", "check", str(SHOP), "--sample-topic", unique("none"),
                   "--bootstrap-servers", kafka_bootstrap])
    assert missing.returncode == 2 and "does not exist" in missing.stderr, missing.stderr


def test_dead_letters_filter_by_a_contracts_own_reason_codes(kafka_bootstrap: str) -> None:
    """``dlq inspect --reason`` knows the codes of the contract ECOMLOGS_CONTRACT names (and no others)."""
    raw, clean, dlq = unique("raw"), unique("clean"), unique("dlq")
    produce_raw(kafka_bootstrap, raw, [json.dumps(event(1, currency="JPY")).encode(), json.dumps(event(2)).encode()])
    env = {"ECOMLOGS_CONTRACT": str(SHOP)}
    p = run(["streamProcessor.py", "--bootstrap-servers", kafka_bootstrap, "--input-topic", raw, "--output-topic",
             clean, "--dlq-topic", dlq, "--group-id", unique("g"), "--until-caught-up"], env=env)
    assert p.returncode == 0, p.stderr
    read_all(kafka_bootstrap, dlq, expected=1)
    p = run(["-m", "ecomlogs", "dlq", "inspect", "--bootstrap-servers", kafka_bootstrap, "--dlq-topic", dlq,
             "--reason", "unknown_currency", "--json"], env=env)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["counts"] == [{"stage": "processor", "reason": "unknown_currency", "count": 1}]
    assert report["samples"][0]["headers"]["ecomlogs.contract"] == SHOP_ID
    p = run(["-m", "ecomlogs", "dlq", "inspect", *["--bootstrap-servers", "127.0.0.1:1"], "--reason",
             "unknown_currency"])
    assert p.returncode == 2 and "ECOMLOGS_CONTRACT" in p.stderr, p.stderr
