DROP TABLE IF EXISTS report_files;
DROP VIEW IF EXISTS reports;
DROP VIEW IF EXISTS report_schedules;
DROP TABLE IF EXISTS rm_reports;
DROP TABLE IF EXISTS rm_report_schedules;
DELETE FROM projection_state WHERE name = 'report_schedules';
