-- Usage rollups (projection "usage", issue 18): usage.recorded windows folded into hourly rows
-- per tunnel, per (tunnel, caller) and per org; the org settings (time zone) and the chargeback
-- price sheets the log configured. Generations as in 000002. See docs/analytics.md.
--
-- A window counts in the UTC hour its window_start falls in. Histograms (latency, ttfb) are the
-- dense counts of domain.Histogram's buckets as a bigint[] whose lower bound is the first bucket
-- index ('[80:82]={3,0,1}': bucket 80 holds 3), so a row stores only the buckets it uses and
-- merging two rows adds elements with the same subscript.
CREATE TABLE rm_usage_hourly (
    generation   integer     NOT NULL,
    org_id       uuid        NOT NULL,
    scope        text        NOT NULL CHECK (scope IN ('tunnel', 'caller', 'org')),
    tunnel_id    uuid        NOT NULL, -- the nil uuid for scope 'org'
    caller_kind  text        NOT NULL, -- '' outside scope 'caller'; '' there too for version 1 windows
    caller_id    text        NOT NULL,
    hour         timestamptz NOT NULL,
    windows      bigint      NOT NULL,
    requests     bigint      NOT NULL,
    errors       bigint      NOT NULL,
    error_classes jsonb      NOT NULL DEFAULT '{}',
    bytes_in     bigint      NOT NULL,
    bytes_out    bigint      NOT NULL,
    streams_max  bigint      NOT NULL,
    streamed_ms  bigint      NOT NULL,
    latency      bigint[],
    ttfb         bigint[],
    PRIMARY KEY (generation, org_id, scope, tunnel_id, caller_kind, caller_id, hour)
);
-- No other index: reads walk the keys of a scope with a loose index scan of the primary key and
-- read each key's hours as a range of it; every index more would slow the projection's writes.

-- Windows the projection skipped because they break their type's rules (Validate) or the table's.
CREATE TABLE rm_usage_skipped (
    generation    integer NOT NULL PRIMARY KEY,
    skipped       bigint  NOT NULL,
    last_position bigint  NOT NULL,
    last_reason   text    NOT NULL
);

CREATE TABLE rm_org_settings (
    generation integer     NOT NULL,
    org_id     uuid        NOT NULL,
    time_zone  text        NOT NULL,
    updated_at timestamptz NOT NULL,
    position   bigint      NOT NULL,
    PRIMARY KEY (generation, org_id)
);

-- A price sheet holds from effective_from until the next sheet of the org.
CREATE TABLE rm_price_sheets (
    generation        integer     NOT NULL,
    org_id            uuid        NOT NULL,
    effective_from    timestamptz NOT NULL,
    currency          text        NOT NULL,
    per_gb_in         numeric     NOT NULL,
    per_gb_out        numeric     NOT NULL,
    per_1k_requests   numeric     NOT NULL,
    per_streamed_hour numeric     NOT NULL,
    per_tunnel_day    numeric     NOT NULL,
    set_by            text        NOT NULL,
    set_at            timestamptz NOT NULL,
    position          bigint      NOT NULL,
    PRIMARY KEY (generation, org_id, effective_from)
);

-- a + b, held at the bigint maximum instead of failing: a hostile node's counts must not stop
-- the projection. Inlined by the planner (a single expression).
CREATE FUNCTION usage_sat_add(a bigint, b bigint) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN b > 0 AND a > 9223372036854775807 - b THEN 9223372036854775807 ELSE a + b END
$$;

-- Element-wise sum of two histograms with lower bounds (see above).
CREATE FUNCTION usage_hist_add(a bigint[], b bigint[]) RETURNS bigint[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a IS NULL OR cardinality(a) = 0 THEN b WHEN b IS NULL OR cardinality(b) = 0 THEN a ELSE (
        SELECT ('[' || lo || ':' || hi || ']=' ||
                (SELECT array_agg(usage_sat_add(coalesce(a[i], 0), coalesce(b[i], 0)) ORDER BY i) FROM generate_series(lo, hi) i)::text)::bigint[]
        FROM (SELECT least(array_lower(a, 1), array_lower(b, 1)) lo, greatest(array_upper(a, 1), array_upper(b, 1)) hi) r)
    END
$$;

-- Error counts by class, added per class.
CREATE FUNCTION usage_classes_add(a jsonb, b jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(k, usage_sat_add(coalesce((a ->> k)::bigint, 0), coalesce((b ->> k)::bigint, 0))), '{}')
    FROM (SELECT jsonb_object_keys(a) UNION SELECT jsonb_object_keys(b)) ks(k)
$$;

CREATE VIEW usage_hourly AS SELECT org_id, scope, tunnel_id, caller_kind, caller_id, hour, windows, requests, errors, error_classes,
    bytes_in, bytes_out, streams_max, streamed_ms, latency, ttfb
    FROM rm_usage_hourly WHERE generation = (SELECT generation FROM projection_state WHERE name = 'usage');
CREATE VIEW usage_skipped AS SELECT skipped, last_position, last_reason
    FROM rm_usage_skipped WHERE generation = (SELECT generation FROM projection_state WHERE name = 'usage');
CREATE VIEW org_settings AS SELECT org_id, time_zone, updated_at, position
    FROM rm_org_settings WHERE generation = (SELECT generation FROM projection_state WHERE name = 'usage');
CREATE VIEW price_sheets AS SELECT org_id, effective_from, currency, per_gb_in, per_gb_out, per_1k_requests, per_streamed_hour,
    per_tunnel_day, set_by, set_at, position
    FROM rm_price_sheets WHERE generation = (SELECT generation FROM projection_state WHERE name = 'usage');

GRANT SELECT, INSERT, UPDATE, DELETE ON rm_usage_hourly, rm_usage_skipped, rm_org_settings, rm_price_sheets TO tunnelplane_app;
GRANT SELECT ON usage_hourly, usage_skipped, org_settings, price_sheets TO tunnelplane_app;
GRANT EXECUTE ON FUNCTION usage_sat_add(bigint, bigint), usage_hist_add(bigint[], bigint[]), usage_classes_add(jsonb, jsonb) TO tunnelplane_app;
