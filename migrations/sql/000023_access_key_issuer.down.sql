DROP INDEX IF EXISTS events_access_key_issued_by;
