-- Destroys the log. `tunnelplane migrate down` refuses to run this on a non-empty log unless
-- --destroy-log is given. The cluster-wide role tunnelplane_app is left in place: other databases
-- may use it.
DROP TABLE IF EXISTS log_head;
DROP TABLE IF EXISTS checkpoints;
DROP TABLE IF EXISTS events;
DROP FUNCTION IF EXISTS tunnelplane_reject_mutation();
