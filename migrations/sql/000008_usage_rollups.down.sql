DROP VIEW IF EXISTS usage_hourly, usage_skipped, org_settings, price_sheets;
DROP TABLE IF EXISTS rm_usage_hourly, rm_usage_skipped, rm_org_settings, rm_price_sheets;
DROP FUNCTION IF EXISTS usage_hist_add(bigint[], bigint[]);
DROP FUNCTION IF EXISTS usage_classes_add(jsonb, jsonb);
DROP FUNCTION IF EXISTS usage_sat_add(bigint, bigint);
DELETE FROM projection_state WHERE name = 'usage';
