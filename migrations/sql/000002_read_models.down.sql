DROP VIEW IF EXISTS orgs, tunnels, nodes, agent_tokens, role_assignments, audit;
DROP TABLE IF EXISTS idempotency_keys, rm_audit, rm_role_assignments, rm_agent_tokens, rm_nodes, rm_tunnels, rm_orgs, projection_state;
