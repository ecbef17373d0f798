-- BI access (issue 18): the schema "analytics" holds read-only views over the usage rollups, and
-- the role tunnelplane_bi may SELECT them and nothing else (not the log, not any other read
-- model). Give a BI tool's login the role: GRANT tunnelplane_bi TO metabase;
-- docs/analytics.md documents the views.
DO $$
BEGIN
    CREATE ROLE tunnelplane_bi NOLOGIN;
EXCEPTION
    -- Roles are cluster-wide: another database (or a concurrent migration) may have made it.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

CREATE SCHEMA analytics;
REVOKE ALL ON SCHEMA analytics FROM PUBLIC;

-- The q-quantile (0 < q <= 1) of a rollup histogram (bigint[] subscripted by bucket index, the
-- layout of domain.Histogram: bucket i holds values up to 2^(i/8) µs) in milliseconds: the
-- bucket's representative value 2·γ^i/(γ+1), γ = 2^(1/8), at most 4.3% off any value in it.
CREATE FUNCTION analytics.hist_quantile_ms(h bigint[], q double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH b AS (SELECT i, h[i] AS c FROM generate_subscripts(h, 1) AS i),
         r AS (SELECT i, sum(c) OVER (ORDER BY i) AS cum, sum(c) OVER () AS n FROM b)
    SELECT CASE WHEN i = 0 THEN 0.001 ELSE 2 * power(2, i / 8.0) / (power(2, 1 / 8.0) + 1) / 1000 END
    FROM r WHERE n > 0 AND q > 0 AND q <= 1 AND cum >= ceil(q * n) ORDER BY i LIMIT 1
$$;

CREATE VIEW analytics.usage_hourly AS
SELECT org_id, scope, nullif(tunnel_id, '00000000-0000-0000-0000-000000000000') AS tunnel_id,
       nullif(caller_kind, '') AS caller_kind, nullif(caller_id, '') AS caller_id, hour,
       requests, errors, error_classes, bytes_in, bytes_out, streams_max,
       streamed_ms / 3600000.0 AS streams_mean, streamed_ms,
       analytics.hist_quantile_ms(latency, 0.5) AS latency_p50_ms, analytics.hist_quantile_ms(latency, 0.95) AS latency_p95_ms,
       analytics.hist_quantile_ms(latency, 0.99) AS latency_p99_ms,
       analytics.hist_quantile_ms(ttfb, 0.5) AS ttfb_p50_ms, analytics.hist_quantile_ms(ttfb, 0.95) AS ttfb_p95_ms,
       analytics.hist_quantile_ms(ttfb, 0.99) AS ttfb_p99_ms,
       latency AS latency_buckets, ttfb AS ttfb_buckets, windows
FROM public.usage_hourly;
COMMENT ON VIEW analytics.usage_hourly IS 'Usage per UTC hour: scope tunnel (per tunnel), caller (per tunnel and caller: user, access_key, anonymous, overflow) or org (tunnel_id null). Percentiles are per hour; merge the *_buckets arrays (add elements with the same subscript) for longer periods, never average percentiles.';

CREATE VIEW analytics.org_settings AS SELECT org_id, time_zone, updated_at FROM public.org_settings;
COMMENT ON VIEW analytics.org_settings IS 'Each organization''s time zone (days, weeks and months of its reports are local)';

CREATE VIEW analytics.price_sheets AS
SELECT org_id, effective_from, currency, per_gb_in, per_gb_out, per_1k_requests, per_streamed_hour, per_tunnel_day
FROM public.price_sheets;
COMMENT ON VIEW analytics.price_sheets IS 'Chargeback prices per organization, each in force from effective_from until the next (exact decimals)';

GRANT USAGE ON SCHEMA analytics TO tunnelplane_bi;
GRANT SELECT ON analytics.usage_hourly, analytics.org_settings, analytics.price_sheets TO tunnelplane_bi;
GRANT EXECUTE ON FUNCTION analytics.hist_quantile_ms(bigint[], double precision) TO tunnelplane_bi;
