// Code that names the log's format through this package: the format moved to eventstore/ledger,
// which the node side imports without PostgreSQL. These are the same types and values.

package eventstore

import "github.com/tunnelplane/tunnelplane/eventstore/ledger"

type (
	KeyRing                   = ledger.KeyRing
	RingKey                   = ledger.RingKey
	VerifyingKey              = ledger.VerifyingKey
	ChainVerifier             = ledger.ChainVerifier
	Envelope                  = ledger.Envelope
	EventType                 = ledger.EventType
	ExpectedVersion           = ledger.ExpectedVersion
	Failure                   = ledger.Failure
	FailureKind               = ledger.FailureKind
	GenesisPayload            = ledger.GenesisPayload
	KeyAddedPayload           = ledger.KeyAddedPayload
	KeyDir                    = ledger.KeyDir
	KeyStore                  = ledger.KeyStore
	KeyInfo                   = ledger.KeyInfo
	KeyPurpose                = ledger.KeyPurpose
	KeyRevokedPayload         = ledger.KeyRevokedPayload
	KeyRotatedPayload         = ledger.KeyRotatedPayload
	Leaf                      = ledger.Leaf
	PresignedEvent            = ledger.PresignedEvent
	Record                    = ledger.Record
	Registry                  = ledger.Registry
	SigProof                  = ledger.SigProof
	SignedBatch               = ledger.SignedBatch
	SignedCheckpoint          = ledger.SignedCheckpoint
	SigningKey                = ledger.SigningKey
	Upcaster                  = ledger.Upcaster
	WrongExpectedVersionError = ledger.WrongExpectedVersionError
)

const (
	AlgorithmEd25519        = ledger.AlgorithmEd25519
	ChainContext            = ledger.ChainContext
	FailBadSignature        = ledger.FailBadSignature
	FailChainBreak          = ledger.FailChainBreak
	FailCheckpointMismatch  = ledger.FailCheckpointMismatch
	FailCheckpointSignature = ledger.FailCheckpointSignature
	FailGap                 = ledger.FailGap
	FailHashMismatch        = ledger.FailHashMismatch
	FailHeadMismatch        = ledger.FailHeadMismatch
	FailKeyEvent            = ledger.FailKeyEvent
	FailPastHead            = ledger.FailPastHead
	FailKeyNotInForce       = ledger.FailKeyNotInForce
	FailStreamVersion       = ledger.FailStreamVersion
	FailTruncated           = ledger.FailTruncated
	FailUnknownKey          = ledger.FailUnknownKey
	HashSize                = ledger.HashSize
	LogStream               = ledger.LogStream
	MaxEventsPerCall        = ledger.MaxEventsPerCall
	MaxMetadataBytes        = ledger.MaxMetadataBytes
	MaxPayloadBytes         = ledger.MaxPayloadBytes
	MaxPendingRecords       = ledger.MaxPendingRecords
	MaxStreamIDBytes        = ledger.MaxStreamIDBytes
	PurposeLog              = ledger.PurposeLog
	PurposeNode             = ledger.PurposeNode
	PurposeToken            = ledger.PurposeToken
	SignatureContext        = ledger.SignatureContext
	TypeGenesis             = ledger.TypeGenesis
	TypeKeyAdded            = ledger.TypeKeyAdded
	TypeKeyRevoked          = ledger.TypeKeyRevoked
	TypeKeyRotated          = ledger.TypeKeyRotated
)

var (
	OpenCheckpointWith      = ledger.OpenCheckpointWith
	NewKeyRing              = ledger.NewKeyRing
	RangeFactory            = ledger.RangeFactory
	OpenCheckpoint          = ledger.OpenCheckpoint
	NoteVerifierKey         = ledger.NoteVerifierKey
	Ed25519VerifyOptions    = ledger.Ed25519VerifyOptions
	SignCheckpoint          = ledger.SignCheckpoint
	RecordLeaf              = ledger.RecordLeaf
	AddMessage              = ledger.AddMessage
	AnyVersion              = ledger.AnyVersion
	AppendEnvelope          = ledger.AppendEnvelope
	AppendLeaf              = ledger.AppendLeaf
	AppendSigProof          = ledger.AppendSigProof
	BatchRoot               = ledger.BatchRoot
	ChainHash               = ledger.ChainHash
	DecodeEnvelope          = ledger.DecodeEnvelope
	DecodeLeaf              = ledger.DecodeLeaf
	DecodeSigProof          = ledger.DecodeSigProof
	EnvelopeSize            = ledger.EnvelopeSize
	ErrBadSignature         = ledger.ErrBadSignature
	ErrCheckpoint           = ledger.ErrCheckpoint
	ErrClosed               = ledger.ErrClosed
	ErrDuplicateEventID     = ledger.ErrDuplicateEventID
	ErrGap                  = ledger.ErrGap
	ErrInvalidEvent         = ledger.ErrInvalidEvent
	ErrInvalidStreamID      = ledger.ErrInvalidStreamID
	ErrKeyFile              = ledger.ErrKeyFile
	ErrKeyMismatch          = ledger.ErrKeyMismatch
	ErrMalformed            = ledger.ErrMalformed
	ErrNotInitialized       = ledger.ErrNotInitialized
	ErrOutcomeUnknown       = ledger.ErrOutcomeUnknown
	ErrReadOnly             = ledger.ErrReadOnly
	ErrReservedStream       = ledger.ErrReservedStream
	ErrTooLarge             = ledger.ErrTooLarge
	ErrTooManyPending       = ledger.ErrTooManyPending
	ErrUnavailable          = ledger.ErrUnavailable
	ErrUnknownEventType     = ledger.ErrUnknownEventType
	ErrUnverified           = ledger.ErrUnverified
	ErrWrongExpectedVersion = ledger.ErrWrongExpectedVersion
	Exact                   = ledger.Exact
	Fingerprint             = ledger.Fingerprint
	GenerateSigningKey      = ledger.GenerateSigningKey
	KeyID                   = ledger.KeyID
	LeafSize                = ledger.LeafSize
	LoadKeyFile             = ledger.LoadKeyFile
	LoadOrCreateKeyFile     = ledger.LoadOrCreateKeyFile
	MustRegistry            = ledger.MustRegistry
	NewChainVerifier        = ledger.NewChainVerifier
	NewKeyAdded             = ledger.NewKeyAdded
	NewKeyRotation          = ledger.NewKeyRotation
	NewRegistry             = ledger.NewRegistry
	NewSigningKeyFromSeed   = ledger.NewSigningKeyFromSeed
	NoStream                = ledger.NoStream
	RotationMessage         = ledger.RotationMessage
	SignEnvelopes           = ledger.SignEnvelopes
	SignedMessage           = ledger.SignedMessage
	ValidateStreamID        = ledger.ValidateStreamID
	WriteKeyFile            = ledger.WriteKeyFile
)
