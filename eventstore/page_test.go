package eventstore_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Reading into a page again gives what ReadAll gives, window after window: its memory reused
// (a payload larger than a chunk included), upcasting a stored version after the current one
// of the same type in one page, with and without signatures. (BenchmarkReadAll measures what
// the page saves.)
func TestReadIntoAPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	st := v1RenameStore(t, e)
	defer st.Stop()
	renameV1 := func(stream, name string) {
		t.Helper()
		if _, err := st.Append(ctx, stream, eventstore.AnyVersion, eventstore.EventData{Type: typeNoteRenamed, Payload: []byte(`{"name":"` + name + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 30 {
		switch {
		case i%7 == 3:
			renameV1(fmt.Sprintf("r-%d", i), fmt.Sprintf("old %d", i))
		case i%7 == 5:
			if _, err := e.store.Append(ctx, fmt.Sprintf("r-%d", i), eventstore.AnyVersion, eventstore.EventData{Type: typeNoteRenamed, Payload: []byte(`{"title":"new"}`)}); err != nil {
				t.Fatal(err)
			}
		default:
			ev := note(i)
			if i == 11 {
				ev.Payload = []byte(`{"n":11,"text":"` + strings.Repeat("x", 100<<10) + `"}`)
			}
			if _, err := e.store.Append(ctx, fmt.Sprintf("note-%d", i%4), eventstore.AnyVersion, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	head, err := e.store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reads := []struct {
		name string
		into func(*eventstore.Page, uint64, int) error
		all  func(uint64, int) ([]eventstore.Record, error)
	}{
		{"signed", func(p *eventstore.Page, from uint64, n int) error { return e.store.ReadAllInto(ctx, p, from, n) },
			func(from uint64, n int) ([]eventstore.Record, error) { return e.store.ReadAll(ctx, from, n) }},
		{"unsigned", func(p *eventstore.Page, from uint64, n int) error {
			return e.store.ReadAllUnsignedInto(ctx, p, from, n)
		},
			func(from uint64, n int) ([]eventstore.Record, error) { return e.store.ReadAllUnsigned(ctx, from, n) }},
	}
	for _, rd := range reads {
		var page eventstore.Page
		upcast := 0
		for _, size := range []int{7, 13, 5} {
			for from := uint64(0); from < head; from += uint64(size) {
				if err := rd.into(&page, from, size); err != nil {
					t.Fatal(err)
				}
				want, err := rd.all(from, size)
				if err != nil {
					t.Fatal(err)
				}
				if len(want) == 0 || !reflect.DeepEqual(page.Records, want) {
					t.Fatalf("%s: read into a page from %d (%d):\n%+v\nReadAll:\n%+v", rd.name, from, size, page.Records, want)
				}
				for _, r := range page.Records {
					if r.StoredSchemaVersion == 1 && r.Type == typeNoteRenamed {
						upcast++
						if r.SchemaVersion != 2 || !strings.HasPrefix(string(r.Payload), `{"title":"old `) {
							t.Fatalf("%s: position %d not upcast: v%d %s", rd.name, r.Position, r.SchemaVersion, r.Payload)
						}
					}
				}
			}
		}
		if upcast != 3*4 {
			t.Fatalf("%s: %d version-1 records read, want 12 (4 in each of 3 passes)", rd.name, upcast)
		}
	}
}
