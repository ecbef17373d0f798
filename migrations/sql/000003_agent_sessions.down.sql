DROP VIEW IF EXISTS agent_sessions;
DROP TABLE IF EXISTS rm_agent_sessions;
DELETE FROM projection_state WHERE name = 'agent_sessions';
