-- The best customers of each currency are read from this index (ecomlogs.analytics.top_customers walks
-- each currency's first entries): a top list costs the same with ten thousand customers or ten million.
CREATE INDEX ecomlogs_customer_rollup_by_revenue ON ecomlogs_customer_rollup (currency, revenue DESC);
