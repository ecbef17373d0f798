ALTER TABLE idempotency_keys DROP COLUMN IF EXISTS owner, DROP COLUMN IF EXISTS renewed_at;
