"""Typed queries and the analytics DataFrames, with exact expected values on a known data set in a real
PostgreSQL database, and dead letters read back from a real dead-letter topic."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Optional

import pandas as pd
import psycopg2
import pytest
from confluent_kafka import Producer

import ecomlogs
from ecomlogs import analytics
from helpers import unique

# (event_id, customer_id, event_type, amount, currency, event_timestamp in UTC)
KNOWN = [
    ("e01", "C1", "PAGE_VIEW", "10.00", "USD", datetime(2024, 3, 1, 10, 0)),
    ("e02", "C1", "PAGE_VIEW", "10.00", "USD", datetime(2024, 3, 1, 10, 1)),
    ("e03", "C2", "PAGE_VIEW", "20.00", "EUR", datetime(2024, 3, 1, 11, 0)),
    ("e04", "C3", "PAGE_VIEW", "5.00", "USD", datetime(2024, 3, 1, 12, 0)),
    ("e05", "C1", "ADD_TO_CART", "15.50", "USD", datetime(2024, 3, 1, 10, 5)),
    ("e06", "C2", "ADD_TO_CART", "20.00", "EUR", datetime(2024, 3, 1, 11, 5)),
    ("e07", "C1", "PURCHASE", "15.50", "USD", datetime(2024, 3, 1, 10, 10)),
    ("e08", "C2", "PURCHASE", "19.99", "EUR", datetime(2024, 3, 1, 11, 10)),
    ("e09", "C3", "PURCHASE", "100.01", "USD", datetime(2024, 3, 1, 23, 59, 59, 999999)),
    ("e10", "C1", "PAGE_VIEW", "1.00", "USD", datetime(2024, 3, 2, 0, 0)),
    ("e11", "C4", "PAGE_VIEW", "2.00", "GBP", datetime(2024, 3, 2, 8, 0)),
    ("e12", "C4", "PURCHASE", "0.01", "GBP", datetime(2024, 3, 2, 8, 30)),
]


@pytest.fixture()
def known(db: str) -> str:
    """A fresh database holding exactly the KNOWN rows."""
    ecomlogs.migrate(db)
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.executemany("INSERT INTO kafka_events_silver (event_id, customer_id, event_type, amount, currency, "
                      "event_timestamp) VALUES (%s, %s, %s, %s, %s, %s)", KNOWN)
    # Rows written by hand, not by the loader: the rollups the views read are rebuilt from the table.
    ecomlogs.rebuild_rollups(db)
    return db


def days(*d: str) -> pd.Series[Any]:
    return pd.Series([date.fromisoformat(x) for x in d], dtype="datetime64[s]")


# ------------------------------------------------------------------------------------------ query
def test_query_returns_typed_values_and_binds_parameters(known: str) -> None:
    rows = ecomlogs.query("SELECT day, currency, purchases, revenue, average_order FROM daily_revenue "
                          "WHERE currency = $1 AND day >= $2 ORDER BY day", ["USD", date(2024, 3, 1)], dsn=known)
    assert rows == [{"day": date(2024, 3, 1), "currency": "USD", "purchases": 2, "revenue": Decimal("115.51"),
                     "average_order": Decimal("57.76")}]
    # The complaint: summing revenue concatenated strings. Now it adds exactly.
    total = pd.DataFrame(ecomlogs.query("SELECT revenue FROM daily_revenue", dsn=known))["revenue"].sum()
    assert total == Decimal("135.51")

    got = ecomlogs.query(
        "SELECT $1::int8 + 1 AS i, $2::numeric * 2 AS d, $3::float8 AS f, NOT $4::bool AS b, $5::date AS dt, "
        "$6::timestamp AS ts, $7::timestamptz AS tz, $8::text AS s, $9::bytea AS raw, $10::text AS nothing, "
        "'12:30:01.5'::time AS t, 'NaN'::numeric AS nan, 10000::numeric AS big, -0.0001::numeric AS small",
        [2**62, Decimal("1.25"), 0.5, False, date(2024, 2, 29), datetime(2024, 2, 29, 23, 59, 59, 123456),
         datetime(2024, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))), "héllo", b"\x00\xff", None],
        dsn=known)[0]
    assert got == {"i": 2**62 + 1, "d": Decimal("2.50"), "f": 0.5, "b": True, "dt": date(2024, 2, 29),
                   "ts": datetime(2024, 2, 29, 23, 59, 59, 123456),
                   "tz": datetime(2024, 2, 29, 23, 0, tzinfo=timezone.utc), "s": "héllo", "raw": b"\x00\xff",
                   "nothing": None, "t": time(12, 30, 1, 500000), "nan": got["nan"], "big": Decimal("10000"),
                   "small": Decimal("-0.0001")}
    assert [type(got[k]) for k in ("i", "d", "f", "b")] == [int, Decimal, float, bool]
    assert got["nan"].is_nan()
    # An aware datetime binds to a TIMESTAMP column as UTC wall-clock time (as the table stores times).
    assert ecomlogs.query("SELECT count(*) AS n FROM kafka_events_silver WHERE event_timestamp >= $1",
                          [datetime(2024, 3, 2, 1, 0, tzinfo=timezone(timedelta(hours=2)))], dsn=known) == [{"n": 4}]


@pytest.mark.parametrize("sql, params, message", [
    ("SELECT $1::date", ["2024-03-01"], "parameter $1: the query expects date here; got a str"),
    ("SELECT $1::int4", [2**40], "parameter $1: the query expects int4 here"),
    ("SELECT $1::int4", [1, 2], "the query has 1 parameter(s)"),
    ("SELECT ARRAY[1, 2] AS a", None, 'column "a" is of type _int4'),
    ("SELECT 1", "postgresql://elsewhere/db", "params must be a list or tuple"),
    ("SELECT $1::text", [object()], "parameter $1: a query takes None, bool, int"),
])
def test_query_mistakes_are_config_errors(known: str, sql: str, params: Any, message: str) -> None:
    with pytest.raises(ecomlogs.ConfigError) as e:
        ecomlogs.query(sql, params, dsn=known)
    assert message in str(e.value)


def test_query_database_errors_keep_their_sqlstate(known: str) -> None:
    with pytest.raises(ecomlogs.DatabaseError) as e:
        ecomlogs.query("SELECT * FROM no_such_table", dsn=known)
    assert e.value.sqlstate == "42P01" and "no_such_table" in str(e.value)


def test_an_open_connection_answers_again_after_it_is_lost(known: str) -> None:
    """The dashboard's connection: one backend for many queries, a new one after the old one is gone."""
    with ecomlogs._core.Database(known) as database:
        pid = database.query("SELECT pg_backend_pid()")[2][0][0]
        assert database.query("SELECT pg_backend_pid()")[2][0][0] == pid
        with psycopg2.connect(known) as conn, conn.cursor() as c:
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
            assert c.fetchone() == (True,)
        with pytest.raises(ecomlogs.DatabaseError):  # the query that finds it gone fails, and says so
            database.query("SELECT 1")
        columns, types, rows = database.query("SELECT $1::int8 + 1 AS n", [41])
        assert (columns, types, rows) == (["n"], ["int8"], [(42,)])
        assert database.query("SELECT pg_backend_pid()")[2][0][0] != pid
    with pytest.raises(ecomlogs.ConfigError):
        ecomlogs._core.Database("postgresql://[::1")


# ------------------------------------------------------------------------------------------ DataFrames
def test_daily_funnel_exact(known: str) -> None:
    want = pd.DataFrame({
        "day": days("2024-03-01", "2024-03-02"),
        "page_views": pd.Series([4, 2], dtype="int64"),
        "add_to_carts": pd.Series([2, 0], dtype="int64"),
        "purchases": pd.Series([3, 1], dtype="int64"),
        "view_to_cart_rate": [0.5, 0.0],
        "cart_to_purchase_rate": [1.5, math.nan],
        "view_to_purchase_rate": [0.75, 0.5],
    })
    pd.testing.assert_frame_equal(analytics.daily_funnel(dsn=known), want)
    # Only the last days (the data set is from 2024): no rows, the same columns and dtypes.
    recent = analytics.daily_funnel(days=7, dsn=known)
    assert recent.empty
    pd.testing.assert_series_equal(recent.dtypes, want.dtypes)


def test_daily_revenue_exact(known: str) -> None:
    want = pd.DataFrame({
        "day": days("2024-03-01", "2024-03-01", "2024-03-02"),
        "currency": pd.Series(["EUR", "USD", "GBP"]),
        "purchases": pd.Series([1, 2, 1], dtype="int64"),
        "revenue": [19.99, 115.51, 0.01],
        "average_order": [19.99, 57.76, 0.01],
    })
    pd.testing.assert_frame_equal(analytics.daily_revenue(dsn=known), want)
    usd = analytics.daily_revenue("USD", dsn=known)
    pd.testing.assert_frame_equal(usd, want.iloc[[1]].reset_index(drop=True))
    exact = analytics.read_sql("SELECT revenue FROM daily_revenue ORDER BY day, currency", dsn=known,
                               coerce_float=False)
    assert list(exact["revenue"]) == [Decimal("19.99"), Decimal("115.51"), Decimal("0.01")]


def test_top_customers_exact(known: str) -> None:
    got = analytics.top_customers(dsn=known)
    want = pd.DataFrame({
        "currency": pd.Series(["EUR", "GBP", "USD", "USD"]),
        "rank": pd.Series([1, 1, 1, 2], dtype="int64"),
        "customer_id": pd.Series(["C2", "C4", "C3", "C1"]),
        "purchases": pd.Series([1, 1, 1, 1], dtype="int64"),
        "revenue": [19.99, 0.01, 100.01, 15.50],
        "events": pd.Series([3, 2, 2, 5], dtype="int64"),
        "last_seen": pd.Series([datetime(2024, 3, 1, 11, 10), datetime(2024, 3, 2, 8, 30),
                                datetime(2024, 3, 1, 23, 59, 59, 999999), datetime(2024, 3, 2, 0, 0)],
                               dtype="datetime64[us]"),
    })
    pd.testing.assert_frame_equal(got, want)
    pd.testing.assert_frame_equal(analytics.top_customers(1, dsn=known),
                                  want.iloc[:3].reset_index(drop=True))
    assert list(analytics.top_customers(5, currency="USD", dsn=known)["customer_id"]) == ["C3", "C1"]
    # The same as ranking every customer through the view (it reads an index instead).
    for n in (1, 2, 3):
        for currency in (None, "USD", "XXX"):
            through_view = analytics.read_sql(
                "SELECT currency, revenue_rank AS rank, customer_id, purchases, revenue, events, last_seen "
                "FROM top_customers WHERE purchases > 0 AND revenue_rank <= $1 "
                "AND ($2::text IS NULL OR currency = $2) ORDER BY currency, revenue_rank, customer_id",
                [n, currency], dsn=known)
            pd.testing.assert_frame_equal(analytics.top_customers(n, currency=currency, dsn=known), through_view)


def test_events_latest_first_limited_and_since(known: str) -> None:
    everything = analytics.events(dsn=known)
    assert list(everything["event_id"]) == ["e01", "e02", "e05", "e07", "e03", "e06", "e08", "e04", "e09",
                                            "e10", "e11", "e12"]
    assert str(everything["amount"].dtype) == "float64" and str(everything["id"].dtype) == "int64"
    assert str(everything["event_timestamp"].dtype) == "datetime64[us]"
    assert everything["amount"].sum() == pytest.approx(219.01, abs=1e-9)
    assert everything.loc[8, "event_timestamp"] == pd.Timestamp("2024-03-01 23:59:59.999999")
    assert list(analytics.events(limit=3, dsn=known)["event_id"]) == ["e10", "e11", "e12"]
    assert list(analytics.events(since=date(2024, 3, 2), dsn=known)["event_id"]) == ["e10", "e11", "e12"]
    since = datetime(2024, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=1)))  # 2024-03-01 23:30 UTC
    assert list(analytics.events(since, limit=None, dsn=known)["event_id"]) == ["e09", "e10", "e11", "e12"]
    assert analytics.events(since=timedelta(days=1), dsn=known).empty


def test_plots_are_figures_of_the_data(known: str) -> None:
    from matplotlib.figure import Figure

    funnel = analytics.plot_funnel(days=100_000, dsn=known)
    assert isinstance(funnel, Figure)
    ax = funnel.axes[0]
    assert sorted(p.get_height() for p in ax.patches) == [0, 1, 2, 2, 3, 4]
    assert "6 views" in ax.get_title() and "2 carts (33.3%)" in ax.get_title()
    revenue = analytics.plot_revenue(days=100_000, dsn=known)
    assert [a.get_title() for a in revenue.axes] == ["EUR: 19.99 in 1 purchases", "GBP: 0.01 in 1 purchases",
                                                     "USD: 115.51 in 2 purchases"]
    # Nothing in the window: a figure that says so, not an error.
    assert "no events yet" in [t.get_text() for t in analytics.plot_revenue(days=1, dsn=known).axes[0].texts]


# ------------------------------------------------------------------------------------------ dead letters
def _produce(bootstrap: str, topic: str, records: list[tuple[Optional[bytes], bytes]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in records:
        p.produce(topic, key=key, value=value)
    assert p.flush(60) == 0


def _event(i: int, **changes: Any) -> bytes:
    e = {"event_id": f"evt-{i}", "customer_id": "C1", "event_type": "PURCHASE", "amount": 12.5,
         "currency": "USD", "timestamp": "2024-03-01T10:00:00Z", "is_valid": True}
    e.update(changes)
    return json.dumps({k: v for k, v in e.items() if v is not ...}).encode()


def test_dead_letters_exact_from_the_topic(kafka_bootstrap: str) -> None:
    raw, clean, dlq = unique("raw"), unique("clean"), unique("dlq")
    ecomlogs.ensure_topics([raw, clean, dlq], bootstrap_servers=kafka_bootstrap, partitions=1)
    sent = [(b"k0", _event(0)), (b"k1", b"not json"), (b"k2", _event(2, currency=...)),
            (b"k3", _event(3, amount=-1)), (b"k4", _event(4)), (None, _event(5, event_type="REFUND"))]
    _produce(kafka_bootstrap, raw, sent)
    stats = ecomlogs.process(bootstrap_servers=kafka_bootstrap, input_topic=raw, output_topic=clean,
                             dlq_topic=dlq, group_id=unique("g"), until_caught_up=True, partitions=1)
    assert (stats.valid, stats.invalid) == (2, 4)

    df = analytics.dead_letter_frame(dlq_topic=dlq, bootstrap_servers=kafka_bootstrap)
    assert list(df.columns) == ["timestamp", "reason", "stage", "detail", "sqlstate", "source_topic",
                                "source_partition", "source_offset", "generation", "partition", "offset", "key", "value"]
    assert list(df["reason"]) == ["malformed_json", "missing_currency", "non_positive_amount", "invalid_event_type"]
    assert list(df["stage"]) == ["processor"] * 4
    assert list(df["source_topic"]) == [raw] * 4
    assert list(df["source_partition"]) == [0] * 4 and str(df["source_partition"].dtype) == "Int64"
    assert list(df["source_offset"]) == [1, 2, 3, 5]
    assert list(df["offset"]) == [0, 1, 2, 3]
    assert list(df["key"]) == [b"k1", b"k2", b"k3", None]
    assert list(df["value"]) == [sent[1][1], sent[2][1], sent[3][1], sent[5][1]]
    assert df["sqlstate"].isna().all() and df["detail"].map(bool).all()
    assert str(df["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert (df["timestamp"] > pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=10)).all()

    assert list(analytics.dead_letter_frame(limit=2, dlq_topic=dlq, bootstrap_servers=kafka_bootstrap)["source_offset"]) == [3, 5]
    only = analytics.dead_letter_frame(limit=1, reason="missing_currency", dlq_topic=dlq, bootstrap_servers=kafka_bootstrap)
    assert list(only["source_offset"]) == [2]
    assert analytics.dead_letter_frame(dlq_topic=unique("absent"), bootstrap_servers=kafka_bootstrap).empty


def test_read_topic_continues_where_it_stopped(kafka_bootstrap: str) -> None:
    topic = unique("t")
    ecomlogs.ensure_topics([topic], bootstrap_servers=kafka_bootstrap, partitions=2)
    _produce(kafka_bootstrap, topic, [(f"k{i}".encode(), f"v{i}".encode()) for i in range(10)])
    first, nxt, restarted = ecomlogs._core.read_topic(topic, bootstrap_servers=kafka_bootstrap)
    assert sorted(r[4] for r in first) == sorted(f"v{i}".encode() for i in range(10)) and restarted == []
    assert nxt == {p: 1 + max([r[1] for r in first if r[0] == p], default=-1) for p in (0, 1)}
    offsets = ecomlogs._core.topic_offsets(topic, bootstrap_servers=kafka_bootstrap)
    # The dev broker's high watermark is the last batch's base offset + 1: at most the true end.
    assert [(p, low) for p, low, _high, _c in offsets] == [(0, 0), (1, 0)]
    assert all(high <= nxt[p] and (high > 0) == (nxt[p] > 0) for p, _low, high, _c in offsets)
    _produce(kafka_bootstrap, topic, [(b"k10", b"v10")])
    more, nxt2, _ = ecomlogs._core.read_topic(topic, bootstrap_servers=kafka_bootstrap, start=nxt, values=False)
    assert len(more) == 1 and more[0][3] is None and more[0][4] is None and sum(nxt2.values()) == 11
    # A start beyond the log (the broker lost its topics) reads that partition again from its beginning.
    _, _, restarted = ecomlogs._core.read_topic(topic, bootstrap_servers=kafka_bootstrap,
                                                start={p: n + 100 for p, n in nxt2.items()})
    assert sorted(restarted) == sorted(nxt2)
