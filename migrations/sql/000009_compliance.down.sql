DROP VIEW IF EXISTS compliance_events, compliance_hourly, compliance_credentials, compliance_exceptions;
DROP TABLE IF EXISTS rm_compliance_events, rm_compliance_hourly, rm_compliance_credentials, rm_compliance_roles, rm_compliance_withdrawn, rm_compliance_exceptions;
DELETE FROM projection_state WHERE name = 'compliance';
