// Package pii owns the personal data of the log: it seals client addresses and user agents with a
// data key of the subject they are about before the store hashes and signs an event, opens them
// for readers (the audit search, compliance reports, the SIEM sinks) and erases a subject by
// destroying its keys (crypto-shredding).
//
// Data keys live in the subject_keys table (migration 000014), each wrapped by a key-encryption
// key (KEK) that stays outside the database: a file in the control plane's data dir today,
// behind the KEK interface so that an HSM can hold it later. A sealed value is a JSON string,
//
//	enc:v1:<base64url(subject)>:<generation>:<base64url(nonce ‖ AES-256-GCM ciphertext)>
//
// whose associated data binds it to the subject, the field and the key generation, so a value
// moved to another subject or field does not open. The log's hashes and signatures cover the
// sealed string, so verification needs no key and survives erasure.
//
// Nodes sign facts without a database, so each subject also has an X25519 sealing key pair
// (table subject_sealing_keys, migration 000017): SealingKey hands out the public half (put into
// agent tokens' issue records), a node seals to it with package sealbox (enc:x1:…), and Open
// opens those values with the private half, which Erase destroys with the data keys.
//
// The package must not touch the log's records after they are signed, and it never logs a
// plaintext or a key.
package pii
