package eventstore_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// ReadTypes: only the types asked, in position order, from and up to the positions given, paged.
func TestReadTypes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	var want []uint64
	for i := range 6 {
		added, err := e.store.Append(ctx, fmt.Sprintf("note-%d", i), eventstore.AnyVersion, note(i))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, added.LastPosition)
		renamed, err := e.store.Append(ctx, fmt.Sprintf("note-%d", i), eventstore.AnyVersion,
			eventstore.EventData{Type: typeNoteRenamed, Payload: []byte(`{"title":"x"}`)})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, renamed.LastPosition)
	}
	both := []string{typeNoteAdded, typeNoteRenamed}
	var got []uint64
	for from := uint64(0); ; {
		page, err := e.store.ReadTypes(ctx, both, from, want[len(want)-2], 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			got = append(got, r.Position)
		}
		if len(page) < 3 {
			break
		}
		from = page[len(page)-1].Position + 1
	}
	if !slices.Equal(got, want[:len(want)-1]) {
		t.Errorf("positions %v, want %v", got, want[:len(want)-1])
	}
	renames, err := e.store.ReadTypes(ctx, []string{typeNoteRenamed}, want[2], 1<<63, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(renames) != 5 || renames[0].Position != want[3] || renames[0].Type != typeNoteRenamed {
		t.Errorf("renames from %d: %d, first %+v", want[2], len(renames), renames)
	}
}
