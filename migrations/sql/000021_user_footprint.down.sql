DROP INDEX IF EXISTS events_user_deleted;
DROP INDEX IF EXISTS events_access_requested_requester;
DROP INDEX IF EXISTS events_grant_created_subject;
DROP INDEX IF EXISTS events_role_assigned_user;
