DROP TABLE IF EXISTS webhook_cursors;
DROP VIEW IF EXISTS webhooks;
DROP TABLE IF EXISTS rm_webhooks;
DELETE FROM projection_state WHERE name = 'webhooks';
