// Package reach answers who could reach a tunnel at a time, and why: per subject (a user, a
// group of the identity provider's groups claim, an access key) the chain that gave it the right
// to call — superadmin or organization role assignments, the tunnel's ownership, a grant with the
// access request and approvals it answers, an access key — each with its log position and time.
//
// Two code paths give the same answer: Replay reads the log's relevant event types up to the
// position recorded at a time (eventstore.PositionAt, ReadType) and folds them; Live reads the
// read models (tunnels, role assignments, access keys) and the tunnel's sharing stream (grants
// have no read model). Both hand their facts to one rule (domain.MayUseTunnel, grant and key
// expiry by the time asked), so a test comparing them compares the sources.
//
// It reads; it never appends, and it does not authorize (the API does).
package reach
