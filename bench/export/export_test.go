package export

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// A short run exports, verifies offline and verifies the log in every round, and reports rates.
func TestRunMeasuresExportVerifyExportAndVerify(t *testing.T) {
	res, err := Run(context.Background(), Options{AdminURL: pgtest.Server(t).AdminURL, Records: 2000, Rounds: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Records < 2000 || res.ExportEPS <= 0 || res.VerifyExportEPS <= 0 || res.VerifyEPS <= 0 || res.BundleBytes <= 0 ||
		res.ExportRatio != res.ExportEPS/res.VerifyEPS {
		t.Fatalf("result: %+v", res)
	}
}
