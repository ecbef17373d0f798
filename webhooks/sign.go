package webhooks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// SecretPrefix starts every endpoint secret, as the Standard Webhooks libraries expect.
const SecretPrefix = "whsec_"

// SealField is the field name endpoint secrets are sealed under (siem.Secrets binds a sealed
// value to its field).
const SealField = "webhook_secret"

// ErrSecret: not a whsec_ secret.
var ErrSecret = errors.New("webhooks: a secret is whsec_ followed by base64")

// NewSecret makes an endpoint secret: whsec_ and 32 random bytes in standard base64.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// SecretKey is the HMAC key a secret stands for (the bytes its base64 encodes).
func SecretKey(secret string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil || !strings.HasPrefix(secret, SecretPrefix) || len(k) < 16 {
		return nil, ErrSecret
	}
	return k, nil
}

// Sign is the webhook-signature header of a message under each key (several while a rotated-out
// secret still signs): "v1,<base64 signature>" separated by spaces.
func Sign(keys [][]byte, msgID string, unix int64, body []byte) string {
	var sb strings.Builder
	for i, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(msgID))
		m.Write([]byte{'.'})
		m.Write([]byte(strconv.FormatInt(unix, 10)))
		m.Write([]byte{'.'})
		m.Write(body)
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString("v1,")
		sb.WriteString(base64.StdEncoding.EncodeToString(m.Sum(nil)))
	}
	return sb.String()
}

// MessageID is the webhook-id of the record eventID sent to endpoint: the same on every retry
// and after a restart, so receivers can drop repeats; different per endpoint.
func MessageID(endpointID string, eventID uuid.UUID) string {
	ns, err := uuid.Parse(endpointID)
	if err != nil {
		ns = uuid.NewSHA1(uuid.Nil, []byte(endpointID))
	}
	return "msg_" + uuid.NewSHA1(ns, eventID[:]).String()
}
