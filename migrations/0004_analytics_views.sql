-- Analytics over the silver table. Days are UTC days.

-- Page views -> carts -> purchases per day, with conversion rates (NULL when a step has no events).
CREATE OR REPLACE VIEW daily_funnel AS
SELECT
    event_timestamp::date AS day,
    count(*) FILTER (WHERE event_type = 'PAGE_VIEW')   AS page_views,
    count(*) FILTER (WHERE event_type = 'ADD_TO_CART') AS add_to_carts,
    count(*) FILTER (WHERE event_type = 'PURCHASE')    AS purchases,
    round(count(*) FILTER (WHERE event_type = 'ADD_TO_CART')::numeric
          / NULLIF(count(*) FILTER (WHERE event_type = 'PAGE_VIEW'), 0), 4)   AS view_to_cart_rate,
    round(count(*) FILTER (WHERE event_type = 'PURCHASE')::numeric
          / NULLIF(count(*) FILTER (WHERE event_type = 'ADD_TO_CART'), 0), 4) AS cart_to_purchase_rate,
    round(count(*) FILTER (WHERE event_type = 'PURCHASE')::numeric
          / NULLIF(count(*) FILTER (WHERE event_type = 'PAGE_VIEW'), 0), 4)   AS view_to_purchase_rate
FROM kafka_events_silver
GROUP BY 1;

-- Revenue (purchases only) per day and currency; amounts are never mixed across currencies.
CREATE OR REPLACE VIEW daily_revenue AS
SELECT
    event_timestamp::date AS day,
    currency,
    count(*)              AS purchases,
    sum(amount)           AS revenue,
    round(avg(amount), 2) AS average_order
FROM kafka_events_silver
WHERE event_type = 'PURCHASE'
GROUP BY 1, 2;

-- Customers by purchase revenue per currency, with their activity.
CREATE OR REPLACE VIEW top_customers AS
SELECT
    customer_id,
    currency,
    count(*) FILTER (WHERE event_type = 'PURCHASE')                   AS purchases,
    coalesce(sum(amount) FILTER (WHERE event_type = 'PURCHASE'), 0)   AS revenue,
    count(*)                                                          AS events,
    max(event_timestamp)                                              AS last_seen,
    rank() OVER (PARTITION BY currency
                 ORDER BY coalesce(sum(amount) FILTER (WHERE event_type = 'PURCHASE'), 0) DESC) AS revenue_rank
FROM kafka_events_silver
GROUP BY customer_id, currency;
