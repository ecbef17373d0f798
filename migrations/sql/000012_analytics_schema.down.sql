-- The role stays: roles are cluster-wide and other databases may use it.
DROP SCHEMA IF EXISTS analytics CASCADE;
