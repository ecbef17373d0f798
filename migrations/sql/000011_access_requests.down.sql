DROP VIEW IF EXISTS access_requests;
DROP TABLE IF EXISTS rm_access_requests;
DELETE FROM projection_state WHERE name = 'access_requests';
