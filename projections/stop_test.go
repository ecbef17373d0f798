package projections_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/logbuf"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/projections"
)

// Stopping while events arrive (a Ctrl-C) warns about nothing: cursor writes cut short by the stop
// are made again by Stop itself.
func TestStopWhileBusyWarnsAboutNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := logtest.Start(t, 10*time.Millisecond)
	st := log.Store
	wctx, stopWriting := context.WithCancel(ctx)
	var writer sync.WaitGroup
	writer.Go(func() {
		for wctx.Err() == nil {
			org := uuid.Must(uuid.NewV7()).String()
			_, _ = st.Append(wctx, domain.OrgStream(org), eventstore.NoStream, event(t, domain.OrganizationCreated{OrgID: org, Name: "o" + org[len(org)-8:], CreatedBy: "root"}))
		}
	})
	defer func() { stopWriting(); writer.Wait() }()
	var logs logbuf.Buffer
	for round := range 5 {
		r, err := projections.New(projections.Config{Store: st, Projections: projections.All(), CursorEvery: time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(50+round*40) * time.Millisecond)
		r.Stop()
	}
	if out := logs.String(); strings.Contains(out, "cursor not saved") {
		t.Fatalf("stopping warned:\n%s", out)
	}
}
