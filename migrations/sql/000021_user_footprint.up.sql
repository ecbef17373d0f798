-- A user's deletion looks up, in the log itself, where the user holds roles, grants by name and
-- access requests (commands.DeleteUser): partial indexes over just those event types, so the
-- lookup does not scan the log. The log stays append-only; these are indexes, not copies.
CREATE INDEX events_role_assigned_user ON events ((payload_json->>'user_id')) WHERE type = 'role.assigned';
CREATE INDEX events_grant_created_subject ON events ((payload_json->>'subject')) WHERE type = 'grant.created';
CREATE INDEX events_access_requested_requester ON events ((payload_json->>'requester')) WHERE type = 'access.requested';
-- The point-in-time answer lists a tunnel organization's user deletions (compliance/reach).
CREATE INDEX events_user_deleted ON events (global_position) WHERE type = 'user.deleted';
