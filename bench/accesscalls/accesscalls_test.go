package accesscalls

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// A short run publishes at the rate asked, finds every call in the read model (Run counts them)
// and times each batch.
func TestRunFollowsEveryBatch(t *testing.T) {
	res, err := Run(context.Background(), Options{AdminURL: pgtest.Server(t).AdminURL, Rate: 500, Duration: time.Second, CallsPerBatch: 50, BatchesPerPublish: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Batches != 10 || res.Calls != 500 || res.LagP50MS <= 0 || res.LagMaxMS < res.LagP99MS {
		t.Fatalf("result: %+v", res)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{}, {AdminURL: "x", CallsPerBatch: 1001}, {AdminURL: "x", Rate: -1}, {AdminURL: "x", BatchesPerPublish: 11}} {
		if o.Validate() == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
}
