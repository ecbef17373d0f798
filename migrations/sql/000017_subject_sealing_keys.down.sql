DROP TABLE IF EXISTS subject_sealing_keys;
