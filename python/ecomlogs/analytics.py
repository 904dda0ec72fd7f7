"""The pipeline's results as pandas DataFrames and matplotlib figures, for notebooks
(``pip install 'ecomlogs[analytics]'``)::

    from ecomlogs import analytics
    analytics.daily_funnel()                 # day, page_views, add_to_carts, purchases, rates
    analytics.daily_revenue(currency="EUR")  # day, currency, purchases, revenue, average_order
    analytics.top_customers(5)               # the 5 best customers of each currency
    analytics.events(limit=100)              # the latest rows of kafka_events_silver
    analytics.dead_letter_frame()            # ecomlogs.dead_letters() as a DataFrame
    analytics.plot_funnel(); analytics.plot_revenue()
    analytics.read_sql("SELECT ... WHERE day >= $1", [date(2024, 1, 1)])

Columns have the dtype of their PostgreSQL type: integers ``int64`` (``Int64`` when a NULL is present),
NUMERIC amounts and rates ``float64`` (``read_sql(..., coerce_float=False)`` keeps exact ``Decimal``
objects), dates ``datetime64[s]`` (midnight; ``.dt.date`` gives ``datetime.date``), timestamps
``datetime64[us]`` (UTC wall-clock time, as the table stores it; TIMESTAMPTZ as ``datetime64[us, UTC]``),
booleans ``bool``, text pandas' string dtype. Days are UTC days. Every function takes ``dsn=`` like the
rest of the API (None: ``DATABASE_URL``, else the ``PG*`` variables); the dead-letter functions take
``bootstrap_servers=`` (None: ``KAFKA_BOOTSTRAP_SERVERS``).
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

try:
    import pandas as pd
except ImportError:  # pragma: no cover - depends on the installation
    raise ImportError(
        "ecomlogs.analytics needs pandas and matplotlib: pip install 'ecomlogs[analytics]'"
    ) from None

from ecomlogs import _core
from ecomlogs import settings as S
from ecomlogs._core import DeadLetter
from ecomlogs.api import QueryParam, query_params

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "daily_funnel",
    "daily_revenue",
    "dead_letter_frame",
    "events",
    "plot_funnel",
    "plot_revenue",
    "read_sql",
    "top_customers",
]

_INTEGERS = {"int2", "int4", "int8", "oid"}
_FLOATS = {"float4", "float8"}


def _series(values: list[Any], pgtype: str, coerce_float: bool) -> pd.Series[Any]:
    """One column with the dtype of its PostgreSQL type (object where the values do not fit one)."""
    has_null = any(v is None for v in values)
    try:
        if pgtype in _INTEGERS:
            return pd.Series(values, dtype="Int64" if has_null else "int64")
        if pgtype in _FLOATS or (pgtype == "numeric" and coerce_float):
            return pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
        if pgtype == "bool":
            return pd.Series(values, dtype="boolean" if has_null else "bool")
        if pgtype == "date":
            return pd.Series(values, dtype="datetime64[s]")
        if pgtype == "timestamp":
            return pd.Series(values, dtype="datetime64[us]")
        if pgtype == "timestamptz":
            return pd.Series(values, dtype="datetime64[us, UTC]")
        if pgtype in ("numeric", "bytea", "time"):
            return pd.Series(values, dtype=object)
        if not values or has_null and all(v is None for v in values):
            return pd.Series(values, dtype=object)
        return pd.Series(values)
    except (TypeError, ValueError, OverflowError):
        # A date beyond what pandas holds comes back as text: keep the column as Python objects.
        return pd.Series(values, dtype=object)


def _frame(columns: list[str], types: list[str], rows: Sequence[Sequence[Any]], coerce_float: bool) -> pd.DataFrame:
    cols = [_series([r[i] for r in rows], t, coerce_float) for i, t in enumerate(types)]
    frame = pd.concat(cols, axis=1) if cols else pd.DataFrame()
    frame.columns = pd.Index(columns)
    return frame


def read_sql(
    sql: str,
    params: Optional[Sequence[QueryParam]] = None,
    *,
    dsn: Optional[str] = None,
    coerce_float: bool = True,
) -> pd.DataFrame:
    """Runs one SQL statement (``params`` bound to ``$1``, ``$2``, ...) and returns its rows as a
    DataFrame whose dtypes follow the columns' PostgreSQL types, even when there are no rows. NUMERIC
    becomes ``float64`` unless ``coerce_float=False`` (then exact ``Decimal`` objects)."""
    columns, types, rows = _core.query(sql, query_params(params), dsn=dsn)
    return _frame(columns, types, rows, coerce_float)


_TODAY = "(now() AT TIME ZONE 'UTC')::date"


def daily_funnel(*, days: Optional[int] = None, dsn: Optional[str] = None) -> pd.DataFrame:
    """Page views, carts and purchases per UTC day (oldest first), with the conversion rates (NaN where
    the step before has no events). ``days``: only the last so many days, today included."""
    return read_sql(
        "SELECT day, page_views, add_to_carts, purchases, view_to_cart_rate, cart_to_purchase_rate, "
        f"view_to_purchase_rate FROM daily_funnel WHERE $1::int IS NULL OR day > {_TODAY} - $1::int "
        "ORDER BY day",
        [days],
        dsn=dsn,
    )


def daily_revenue(
    currency: Optional[str] = None, *, days: Optional[int] = None, dsn: Optional[str] = None
) -> pd.DataFrame:
    """Purchases, revenue and average order per UTC day and currency (oldest first, then by currency);
    amounts are never summed across currencies. ``currency``: that one only; ``days``: the last so many
    days, today included."""
    return read_sql(
        "SELECT day, currency, purchases, revenue, average_order FROM daily_revenue "
        f"WHERE ($1::text IS NULL OR currency = $1) AND ($2::int IS NULL OR day > {_TODAY} - $2::int) "
        "ORDER BY day, currency",
        [currency, days],
        dsn=dsn,
    )


def top_customers(n: int = 10, *, currency: Optional[str] = None, dsn: Optional[str] = None) -> pd.DataFrame:
    """The ``n`` customers with the most purchase revenue in each currency (ties share a rank, so a
    currency can have more than ``n``), by currency then rank; customers without purchases are left out.
    ``currency``: that one only."""
    return read_sql(_SQL_TOP_CUSTOMERS, [n, currency], dsn=dsn)


# What the view top_customers gives for ``revenue_rank <= $1`` (ranks shared by ties), without ranking every
# customer: each currency's first entries of the rollup's (currency, revenue DESC) index, the currencies
# themselves found by skipping through the same index. Customers without purchases have no revenue, so
# they rank after every customer who has some, and leaving them out changes no rank.
_SQL_TOP_CUSTOMERS = """
WITH RECURSIVE currencies(currency) AS (
    (SELECT currency FROM ecomlogs_customer_rollup ORDER BY currency LIMIT 1)
    UNION ALL
    SELECT (SELECT r.currency FROM ecomlogs_customer_rollup r WHERE r.currency > c.currency
            ORDER BY r.currency LIMIT 1)
    FROM currencies c WHERE c.currency IS NOT NULL
)
SELECT NULLIF(t.currency, '')::varchar(10) AS currency,
       rank() OVER (PARTITION BY t.currency ORDER BY t.revenue DESC) AS rank,
       NULLIF(t.customer_id, '')::varchar(255) AS customer_id,
       t.purchases, t.revenue, t.events, t.last_seen
FROM currencies c
CROSS JOIN LATERAL (
    SELECT * FROM ecomlogs_customer_rollup r
    WHERE r.currency = c.currency AND r.purchases > 0
    ORDER BY r.revenue DESC
    FETCH FIRST $1 ROWS WITH TIES
) t
WHERE $2::text IS NULL OR c.currency = $2
ORDER BY t.currency, rank, t.customer_id
"""


def events(
    since: Union[datetime, date, timedelta, None] = None,
    limit: Optional[int] = 10_000,
    *,
    dsn: Optional[str] = None,
) -> pd.DataFrame:
    """The latest ``limit`` rows of ``kafka_events_silver`` (None: all), oldest first by event time.
    ``since``: only events at or after it (a ``datetime``, naive ones being UTC; a ``date``, from its
    UTC midnight; or a ``timedelta`` back from now)."""
    if isinstance(since, timedelta):
        since = datetime.now(timezone.utc) - since
    elif isinstance(since, date) and not isinstance(since, datetime):
        since = datetime(since.year, since.month, since.day)
    return read_sql(
        "SELECT * FROM (SELECT id, event_id, customer_id, event_type, amount, currency, event_timestamp, "
        "created_at FROM kafka_events_silver WHERE $1::timestamp IS NULL OR event_timestamp >= $1 "
        "ORDER BY event_timestamp DESC, event_id DESC LIMIT $2) latest ORDER BY event_timestamp, event_id",
        [since, limit],
        dsn=dsn,
    )


def dead_letter_frame(letters: Optional[Sequence[DeadLetter]] = None, **filters: Any) -> pd.DataFrame:
    """Dead letters as a DataFrame, one row each, oldest first: ``timestamp`` (UTC), ``reason``, ``stage``
    (processor or loader), ``detail``, ``sqlstate`` (database rejections), ``source_topic``,
    ``source_partition``, ``source_offset`` (where the original record is), ``generation`` (0: an original;
    n: made from a record replayed n times), the dead letter's own ``partition`` and ``offset``, and the
    original ``key`` and ``value`` (bytes, untouched). ``letters``: those :func:`ecomlogs.dead_letters`
    returned; else it is called with ``filters`` (``limit=``, ``reason=``, ``stage=``, ``since=``,
    ``dlq_topic=``, ...), the one reader of the dead-letter topic."""
    if letters is None:
        from ecomlogs.ops import dead_letters

        letters = dead_letters(**filters)

    def series(values: list[Any], dtype: str) -> pd.Series[Any]:
        return pd.Series(values, dtype=dtype)

    return pd.DataFrame({
        "timestamp": series([-1 if d.timestamp_ms is None else d.timestamp_ms for d in letters], "int64")
        .astype("datetime64[ms]").dt.tz_localize("UTC"),
        "reason": series([d.reason for d in letters], "object"),
        "stage": series([d.stage for d in letters], "object"),
        "detail": series([d.detail for d in letters], "object"),
        "sqlstate": series([d.headers.get("sqlstate") for d in letters], "object"),
        "source_topic": series([d.source_topic for d in letters], "object"),
        "source_partition": series([d.source_partition for d in letters], "Int64"),
        "source_offset": series([d.source_offset for d in letters], "Int64"),
        "generation": series([d.generation for d in letters], "int64"),
        "partition": series([d.partition for d in letters], "int64"),
        "offset": series([d.offset for d in letters], "int64"),
        "key": series([d.key for d in letters], "object"),
        "value": series([d.value for d in letters], "object"),
    })


# ------------------------------------------------------------------------------------------------ plots
def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    """A figure that a notebook shows once, as the cell's value (closed in pyplot, so not twice)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False, layout="constrained")
    plt.close(fig)
    return fig, axes[0]


def _empty(ax: Any, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no events yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _rate(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def plot_funnel(*, days: int = 14, dsn: Optional[str] = None) -> Figure:
    """The funnel of the last ``days`` UTC days: page views, carts and purchases per day, with the
    period's conversion rates in the title. Returns a matplotlib ``Figure``."""
    df = daily_funnel(days=days, dsn=dsn)
    fig, (ax,) = _figure(max(6.0, 1.0 + 0.9 * len(df)), 4.0)
    if df.empty:
        _empty(ax, "Funnel by day (UTC)")
        return fig
    views, carts, buys = (int(df[c].sum()) for c in ("page_views", "add_to_carts", "purchases"))
    x = list(range(len(df)))
    for i, (col, label) in enumerate([("page_views", "page views"), ("add_to_carts", "add to cart"),
                                      ("purchases", "purchases")]):
        ax.bar([p + (i - 1) * 0.27 for p in x], df[col], width=0.27, label=label)
    ax.set_xticks(x, [d.strftime("%Y-%m-%d") for d in df["day"]], rotation=30 if len(df) > 4 else 0)
    ax.set_ylabel("events")
    ax.legend()
    ax.set_title(f"Funnel by day (UTC)\n{views:,} views \u2192 {carts:,} carts ({_rate(carts, views)}) \u2192 "
                 f"{buys:,} purchases ({_rate(buys, carts)})", fontsize=10)
    return fig


def plot_revenue(currency: Optional[str] = None, *, days: int = 30, dsn: Optional[str] = None) -> Figure:
    """Purchase revenue per UTC day over the last ``days`` days, one panel per currency (amounts are
    never added across currencies). Returns a matplotlib ``Figure``."""
    df = daily_revenue(currency, days=days, dsn=dsn)
    currencies = sorted(df["currency"].dropna().unique()) if not df.empty else []
    fig, axes = _figure(max(6.0, 3.2 * max(1, len(currencies))), 3.6, ncols=max(1, len(currencies)))
    if not currencies:
        _empty(axes[0], "Revenue by day (UTC)")
        return fig
    for ax, cur in zip(axes, currencies):
        part = df[df["currency"] == cur]
        labels = [d.strftime("%m-%d") for d in part["day"]]
        ax.bar(labels, part["revenue"], color="tab:green")
        ax.set_title(f"{cur}: {part['revenue'].sum():,.2f} in {int(part['purchases'].sum()):,} purchases",
                     fontsize=10)
        ax.tick_params(axis="x", rotation=30 if len(part) > 4 else 0)
    axes[0].set_ylabel("revenue")
    fig.suptitle("Revenue by day (UTC)")
    return fig
