DROP TABLE IF EXISTS exchanged_id_tokens;
