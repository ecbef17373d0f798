DROP VIEW IF EXISTS access_keys;
DROP TABLE IF EXISTS rm_access_keys;
DELETE FROM projection_state WHERE name = 'access_keys';
