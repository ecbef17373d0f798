ALTER TABLE siem_cursors DROP COLUMN IF EXISTS delivered, DROP COLUMN IF EXISTS retries, DROP COLUMN IF EXISTS last_error,
    DROP COLUMN IF EXISTS last_error_at, DROP COLUMN IF EXISTS refused, DROP COLUMN IF EXISTS stuck_position;
DROP VIEW IF EXISTS siem_sinks;
DROP TABLE IF EXISTS rm_siem_sinks;
DELETE FROM projection_state WHERE name = 'siem_sinks';
