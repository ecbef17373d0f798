DROP VIEW IF EXISTS enrollment_tokens;
DROP TABLE IF EXISTS rm_enrollment_tokens;
DELETE FROM projection_state WHERE name = 'enrollment_tokens';
