package eventstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// Go benchmarks of the append and verify paths; `tunnelplane bench store` compares them with a
// raw insert baseline in the same run.

func BenchmarkAppend(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			e := newEnv(b)
			evs := make([]eventstore.EventData, n)
			for i := range evs {
				evs[i] = note(i)
			}
			b.ResetTimer()
			for range b.N {
				if _, err := e.store.Append(context.Background(), "bench", eventstore.AnyVersion, evs...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

func BenchmarkAppendConcurrent(b *testing.B) {
	e := newEnv(b)
	var w atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		stream := fmt.Sprintf("bench-%d", w.Add(1))
		evs := make([]eventstore.EventData, 16)
		for i := range evs {
			evs[i] = note(i)
		}
		for pb.Next() {
			if _, err := e.store.Append(context.Background(), stream, eventstore.AnyVersion, evs...); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N*16)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkVerify(b *testing.B) {
	e := newEnv(b)
	for i := range 200 {
		evs := make([]eventstore.EventData, 1+i%32)
		for j := range evs {
			evs[j] = note(j)
		}
		if _, err := e.store.Append(context.Background(), "v", eventstore.AnyVersion, evs...); err != nil {
			b.Fatal(err)
		}
	}
	pool := pgtest.Pool(b, e.url)
	b.ResetTimer()
	var total uint64
	for range b.N {
		rep, err := eventstore.Verify(context.Background(), pool, eventstore.VerifyOptions{})
		if err != nil || !rep.OK() {
			b.Fatalf("%v %v", err, rep.Failure)
		}
		total += rep.Count
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkReadAll reads pages of 2,000 records, as a SIEM sink or a projection catching up does.
func BenchmarkReadAll(b *testing.B) {
	e := newEnv(b)
	for i := range 8 {
		evs := make([]eventstore.EventData, 250)
		for j := range evs {
			evs[j] = note(i*250 + j)
		}
		if _, err := e.store.Append(context.Background(), "r", eventstore.AnyVersion, evs...); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name string
		read func(context.Context, uint64, int) ([]eventstore.Record, error)
	}{{"signed", e.store.ReadAll}, {"unsigned", e.store.ReadAllUnsigned}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				recs, err := bc.read(context.Background(), 1, 2000)
				if err != nil || len(recs) != 2000 {
					b.Fatalf("%d records, %v", len(recs), err)
				}
			}
			b.ReportMetric(float64(b.N*2000)/b.Elapsed().Seconds(), "records/s")
		})
	}
	// Into one page, read after read (a SIEM sink): its records and their bytes reused.
	b.Run("unsigned-into-page", func(b *testing.B) {
		b.ReportAllocs()
		var page eventstore.Page
		for b.Loop() {
			if err := e.store.ReadAllUnsignedInto(context.Background(), &page, 1, 2000); err != nil || len(page.Records) != 2000 {
				b.Fatalf("%d records, %v", len(page.Records), err)
			}
		}
		b.ReportMetric(float64(b.N*2000)/b.Elapsed().Seconds(), "records/s")
	})
}
