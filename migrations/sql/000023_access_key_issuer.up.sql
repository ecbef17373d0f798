-- A user's deletion revokes the access keys the user issued (commands.DeleteUser): it finds them
-- in the log by issuer through this partial index, as it finds roles, grants and requests
-- (000021).
CREATE INDEX events_access_key_issued_by ON events ((payload_json->>'issued_by')) WHERE type = 'access_key.issued';
