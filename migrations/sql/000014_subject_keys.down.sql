DROP TABLE IF EXISTS subject_keys;
