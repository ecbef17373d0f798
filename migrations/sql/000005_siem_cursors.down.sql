DROP TABLE IF EXISTS siem_cursors;
