DROP VIEW IF EXISTS access_calls;
DROP TABLE IF EXISTS rm_access_calls;
DELETE FROM projection_state WHERE name = 'access_calls';
