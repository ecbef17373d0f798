package ledger

import (
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

var RangeFactory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
