package ledger

import "crypto/ed25519"

func stdSign(k *SigningKey, msg []byte) []byte {
	return ed25519.Sign(ed25519.NewKeyFromSeed(k.priv.Seed()), msg)
}
