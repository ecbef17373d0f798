-- An unfinished idempotency record is a leased claim: its owner (a process) renews renewed_at
-- while the command runs; a claim not renewed within the lease (seconds) belongs to a process
-- that is gone, and a retry takes it over. Rows claimed before this migration count as renewed now.
ALTER TABLE idempotency_keys
    ADD COLUMN owner      text        NOT NULL DEFAULT '',
    ADD COLUMN renewed_at timestamptz NOT NULL DEFAULT now();
