-- The best customers of each currency are read from this index (ecomlogs.analytics.top_customers walks
-- each currency's first entries): a top list costs the same with ten thousand customers or ten million.
CREATE INDEX ecomlogs_customer_rollup_by_revenue ON ecomlogs_customer_rollup (currency, revenue DESC);

-- Room in each page for the merges' updates: an update that changes no indexed column (a customer's events
-- and last_seen) then stays on its page without new index entries.
ALTER TABLE ecomlogs_customer_rollup SET (fillfactor = 70);
