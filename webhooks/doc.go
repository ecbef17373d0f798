// Package webhooks delivers an organization's notifications to the HTTPS endpoints its owners and
// admins configured (domain.Webhook), signed per the Standard Webhooks convention
// (https://www.standardwebhooks.com): headers webhook-id, webhook-timestamp and webhook-signature,
// "v1,<base64 HMAC-SHA256 of id.timestamp.body>" under the endpoint's whsec_ secret.
//
// It owns each endpoint's deliverer: a cursor of its own in webhook_cursors, moved past a record
// only after the receiver answered 2xx for it, so delivery is at least once (a restart repeats
// at most the message in flight, under the same webhook-id); failures are retried with a
// doubling backoff with jitter, forever, and one endpoint's deliverer never waits for another's.
// The HTTP client refuses to connect to internal addresses (SSRF) unless the operator allowed
// them. It must not decide what an endpoint is (the log does) nor hold a secret in clear longer
// than a deliverer runs; the sealing is siem.Secrets'.
package webhooks
