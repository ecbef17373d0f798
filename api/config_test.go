package api_test

import (
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// The control plane's own components are what the API's interfaces describe; a change of a
// signature on either side breaks this build, not the assembly.
var (
	_ api.EventLog         = (*eventstore.Store)(nil)
	_ api.ProjectionRunner = (*projections.Runner)(nil)
	_ api.ReadModels       = (*readmodels.Queries)(nil)
)

func TestConfigRequiresItsParts(t *testing.T) {
	t.Parallel()
	err := api.Config{}.Validate()
	if err == nil {
		t.Fatal("an empty Config validates")
	}
	for _, part := range []string{"Service", "Log", "Runner", "ReadModels"} {
		if !strings.Contains(err.Error(), part+" is required") {
			t.Errorf("%q does not say that %s is required", err, part)
		}
	}
	if _, err := api.New(api.Config{}); err == nil {
		t.Fatal("New accepted an empty Config")
	}
}
