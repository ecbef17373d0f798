DROP TABLE IF EXISTS control_keys;
