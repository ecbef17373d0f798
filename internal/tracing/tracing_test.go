package tracing_test

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/internal/tracing"
	"github.com/tunnelplane/tunnelplane/internal/tracing/otlptest"
)

const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

func TestParseTraceparentIsStrict(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		ok      bool
		sampled bool
	}{
		{"00-" + tid + "-" + sid + "-01", true, true},
		{"00-" + tid + "-" + sid + "-00", true, false},
		{"00-" + tid + "-" + sid + "-ff", true, true}, // unknown flags are dropped, sampled kept
		{"01-" + tid + "-" + sid + "-01-more", true, true},
		{"01-" + tid + "-" + sid + "-01", true, true},
		{"01-" + tid + "-" + sid + "-01more", false, false},
		{"00-" + tid + "-" + sid + "-01-more", false, false},
		{"ff-" + tid + "-" + sid + "-01", false, false},
		{"00-" + strings.ToUpper(tid) + "-" + sid + "-01", false, false},
		{"00-" + strings.Repeat("0", 32) + "-" + sid + "-01", false, false},
		{"00-" + tid + "-" + strings.Repeat("0", 16) + "-01", false, false},
		{"00-" + tid + "-" + sid + "-0g", false, false},
		{"00_" + tid + "-" + sid + "-01", false, false},
		{"00-" + tid + "-" + sid, false, false},
		{"", false, false},
		{"01-" + tid + "-" + sid + "-01-" + strings.Repeat("x", 300), false, false},
	} {
		sc, ok := tracing.ParseTraceparent([]byte(tc.in))
		if ok != tc.ok || ok && (sc.IsSampled() != tc.sampled || sc.TraceID().String() != tid || sc.SpanID().String() != sid || !sc.IsRemote()) {
			t.Errorf("%.70q: %v %v, want %v", tc.in, sc, ok, tc.ok)
		}
		if ok {
			if got := string(tracing.AppendTraceparent(nil, sc)); got[2:52] != tc.in[2:52] || len(got) != tracing.TraceparentLen {
				t.Errorf("%q formats as %q", tc.in, got)
			}
		}
	}
}

func FuzzParseTraceparent(f *testing.F) {
	f.Add("00-" + tid + "-" + sid + "-01")
	f.Add("01-" + tid + "-" + sid + "-01-x")
	f.Fuzz(func(t *testing.T, s string) {
		sc, ok := tracing.ParseTraceparent([]byte(s))
		if !ok {
			return
		}
		if !sc.IsValid() {
			t.Fatalf("%q parsed to an invalid span context", s)
		}
		back, ok := tracing.ParseTraceparent(tracing.AppendTraceparent(nil, sc))
		if !ok || back.TraceID() != sc.TraceID() || back.SpanID() != sc.SpanID() || back.TraceFlags() != sc.TraceFlags() {
			t.Fatalf("%q does not round-trip", s)
		}
	})
}

func TestInjectExtractRoundTrip(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	h.Set("Traceparent", "00-"+tid+"-"+sid+"-01")
	h.Set("Tracestate", "vendor=x")
	ctx := tracing.Extract(context.Background(), h)
	sc := trace.SpanContextFromContext(ctx)
	if sc.TraceID().String() != tid || sc.TraceState().Get("vendor") != "x" {
		t.Fatalf("extracted %v", sc)
	}
	out := http.Header{"Traceparent": {"garbage"}}
	tracing.Inject(ctx, out)
	if out.Get("Traceparent") != "00-"+tid+"-"+sid+"-01" || out.Get("Tracestate") != "vendor=x" {
		t.Fatalf("injected %v", out)
	}
	h.Add("Traceparent", "00-"+tid+"-"+sid+"-01")
	if trace.SpanContextFromContext(tracing.Extract(context.Background(), h)).IsValid() {
		t.Fatal("two traceparent fields gave a parent")
	}
}

// Setup reads the standard environment: off without an endpoint and with OTEL_SDK_DISABLED, on
// with OTEL_EXPORTER_OTLP_ENDPOINT (spans reach an OTLP/HTTP receiver under OTEL_SERVICE_NAME).
func TestSetupFollowsTheEnvironment(t *testing.T) {
	recv := otlptest.Start(t)
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_RESOURCE_ATTRIBUTES"} {
		t.Setenv(k, "")
		os.Unsetenv(k) // set but empty is not unset (the SDK reads an empty sampler as unknown)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_SDK_DISABLED", "")
	ctx := context.Background()
	stop, err := tracing.Setup(ctx, "svc", "v")
	if err != nil || tracing.Provider() != nil {
		t.Fatalf("no endpoint: %v, provider %v", err, tracing.Provider())
	}
	_ = stop(ctx)

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.Endpoint())
	t.Setenv("OTEL_SDK_DISABLED", "true")
	if _, err := tracing.Setup(ctx, "svc", "v"); err != nil || tracing.Provider() != nil {
		t.Fatalf("disabled: %v, provider %v", err, tracing.Provider())
	}
	t.Setenv("OTEL_SDK_DISABLED", "maybe")
	if _, err := tracing.Setup(ctx, "svc", "v"); err == nil {
		t.Fatal("OTEL_SDK_DISABLED=maybe accepted")
	}
	t.Setenv("OTEL_SDK_DISABLED", "false")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	if _, err := tracing.Setup(ctx, "svc", "v"); err == nil {
		t.Fatal("grpc accepted")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "")
	t.Setenv("OTEL_SERVICE_NAME", "from-env")
	stop, err = tracing.Setup(ctx, "svc", "v")
	if err != nil || tracing.Provider() == nil {
		t.Fatalf("endpoint set: %v", err)
	}
	_, span := tracing.Provider().Tracer("t").Start(ctx, "hello")
	span.End()
	if err := stop(ctx); err != nil {
		t.Fatal(err)
	}
	if tracing.Provider() != nil {
		t.Fatal("provider left after shutdown")
	}
	var got []otlptest.Span
	poll.Until(t, 5*time.Second, "the span received", func() bool { got = recv.Spans(); return len(got) > 0 })
	if got[0].Name != "hello" || got[0].Service != "from-env" {
		t.Fatalf("received %+v", got[0])
	}
}
