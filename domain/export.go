package domain

// ExportCreated records that an evidence bundle left the log: who asked (the record's metadata),
// which window of positions, for which organization ("" the whole log), and the SHA-256 of the
// bundle file, so a bundle handed to an auditor can be matched with the record of its making.
type ExportCreated struct {
	ExportID string `json:"export_id"`
	OrgID    string `json:"org_id,omitempty"`
	// From and To are the window's first and last positions.
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// Records is how many records of the window the bundle holds in full.
	Records uint64 `json:"records"`
	// CheckpointSize is the size of the newest checkpoint the bundle carries (the log's size when
	// it was made).
	CheckpointSize uint64 `json:"checkpoint_size"`
	BundleSHA256   string `json:"bundle_sha256"`
}

func (ExportCreated) EventType() string { return TypeExportCreated }

// ExportStream is the stream of an export.
func ExportStream(exportID string) string { return "export-" + exportID }
