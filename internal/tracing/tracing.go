// Package tracing owns the process's OpenTelemetry set-up and the W3C trace context as it crosses
// tunnelplane's own boundaries (caller → ingress node → holding node → agent → upstream). It is
// off unless the standard OTEL_* environment asks for an exporter: then Provider is nil and every
// caller skips its tracing code (no tracer, no spans, no context values). It must not touch the
// database, NATS or the data path's buffers; the node and the agent call it at call boundaries.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// ErrConfig is a tracing environment that cannot be used.
var ErrConfig = errors.New("tracing: invalid OTEL_* environment")

var provider atomic.Pointer[sdktrace.TracerProvider]

// Provider is the provider Setup installed, nil when tracing is off.
func Provider() trace.TracerProvider {
	if p := provider.Load(); p != nil {
		return p
	}
	return nil
}

// Enabled tells from env (os.Getenv when nil) whether tracing is asked for: an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, OTEL_SDK_DISABLED is
// not true and OTEL_TRACES_EXPORTER is unset or "otlp".
func Enabled(env func(string) string) (bool, error) {
	if env == nil {
		env = os.Getenv
	}
	if v := env("OTEL_SDK_DISABLED"); v != "" {
		off, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("%w: OTEL_SDK_DISABLED=%q is not a boolean", ErrConfig, v)
		}
		if off {
			return false, nil
		}
	}
	switch v := env("OTEL_TRACES_EXPORTER"); v {
	case "", "otlp":
	case "none":
		return false, nil
	default:
		return false, fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%q: only otlp (over HTTP) and none are supported", ErrConfig, v)
	}
	if p := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"); p == "" {
		p = env("OTEL_EXPORTER_OTLP_PROTOCOL")
		if p != "" && p != "http/protobuf" {
			return false, fmt.Errorf("%w: OTEL_EXPORTER_OTLP_PROTOCOL=%q: only http/protobuf is supported", ErrConfig, p)
		}
	} else if p != "http/protobuf" {
		return false, fmt.Errorf("%w: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=%q: only http/protobuf is supported", ErrConfig, p)
	}
	return env("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
}

// Setup installs the process's tracer provider when the environment asks for one (Enabled): an
// OTLP/HTTP exporter configured by the OTEL_EXPORTER_OTLP_* variables, a batch span processor, the
// sampler of OTEL_TRACES_SAMPLER (default parentbased_always_on) and the resource of
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (service defaults to service, e.g.
// "tunnelplane-node"). It returns the shutdown that flushes what is left; with tracing off it
// installs nothing and the shutdown does nothing.
func Setup(ctx context.Context, service, version string) (shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	on, err := Enabled(nil)
	if err != nil || !on {
		return noop, err
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return noop, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	tp, err := NewProvider(ctx, exp, service, version)
	if err != nil {
		return noop, err
	}
	provider.Store(tp)
	return func(ctx context.Context) error {
		provider.CompareAndSwap(tp, nil)
		return tp.Shutdown(ctx)
	}, nil
}

// NewProvider is Setup's provider around exp (tests give their own exporter).
func NewProvider(ctx context.Context, exp sdktrace.SpanExporter, service, version string) (*sdktrace.TracerProvider, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service), semconv.ServiceVersion(version)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return nil, fmt.Errorf("%w: resource: %w", ErrConfig, err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// Header names of the W3C trace context.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// TraceparentLen is the length of a version 00 traceparent.
const TraceparentLen = 55

// maxTraceparent bounds a traceparent of a later version (its extra fields are ignored) and
// maxTracestate a tracestate (W3C: at most 32 members; 512 bytes is what a carrier must pass on).
const (
	maxTraceparent = 256
	maxTracestate  = 512
)

// ParseTraceparent reads a W3C traceparent strictly: version 00 is exactly
// "00-<32 hex>-<16 hex>-<2 hex>" in lowercase, a later version has those fields and then only
// "-…" (ignored), version ff and all-zero ids are invalid. Anything else is not a parent.
func ParseTraceparent(v []byte) (trace.SpanContext, bool) {
	if len(v) < TraceparentLen || len(v) > maxTraceparent {
		return trace.SpanContext{}, false
	}
	ver, ok := hexByte(v[0], v[1])
	if !ok || ver == 0xff || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return trace.SpanContext{}, false
	}
	if ver == 0 && len(v) != TraceparentLen || ver != 0 && len(v) > TraceparentLen && v[TraceparentLen] != '-' {
		return trace.SpanContext{}, false
	}
	var tid trace.TraceID
	var sid trace.SpanID
	for i := range tid {
		if tid[i], ok = hexByte(v[3+2*i], v[4+2*i]); !ok {
			return trace.SpanContext{}, false
		}
	}
	for i := range sid {
		if sid[i], ok = hexByte(v[36+2*i], v[37+2*i]); !ok {
			return trace.SpanContext{}, false
		}
	}
	flags, ok := hexByte(v[53], v[54])
	if !ok || !tid.IsValid() || !sid.IsValid() {
		return trace.SpanContext{}, false
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid,
		TraceFlags: trace.TraceFlags(flags) & trace.FlagsSampled, Remote: true}), true
}

// ParseTracestate reads a tracestate of at most 512 bytes (longer ones are dropped whole, as the
// W3C allows); an invalid one is empty.
func ParseTracestate(v []byte) trace.TraceState {
	if len(v) == 0 || len(v) > maxTracestate {
		return trace.TraceState{}
	}
	ts, err := trace.ParseTraceState(string(v))
	if err != nil {
		return trace.TraceState{}
	}
	return ts
}

// hexByte is a byte of two lowercase hex digits.
func hexByte(hi, lo byte) (byte, bool) {
	h, ok1 := nibble(hi)
	l, ok2 := nibble(lo)
	return h<<4 | l, ok1 && ok2
}

func nibble(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

const hexDigits = "0123456789abcdef"

// AppendTraceparent appends sc as a version 00 traceparent.
func AppendTraceparent(dst []byte, sc trace.SpanContext) []byte {
	tid, sid := sc.TraceID(), sc.SpanID()
	dst = append(dst, '0', '0', '-')
	for _, b := range tid {
		dst = append(dst, hexDigits[b>>4], hexDigits[b&15])
	}
	dst = append(dst, '-')
	for _, b := range sid {
		dst = append(dst, hexDigits[b>>4], hexDigits[b&15])
	}
	f := byte(sc.TraceFlags() & trace.FlagsSampled)
	return append(dst, '-', '0', hexDigits[f])
}

// Inject sets the traceparent (and tracestate) of ctx's span on h, replacing any there: the header
// of a hop tunnelplane makes itself (node to node). Nothing is set without a valid span.
func Inject(ctx context.Context, h http.Header) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return
	}
	h.Set(HeaderTraceparent, string(AppendTraceparent(make([]byte, 0, TraceparentLen), sc)))
	if ts := sc.TraceState().String(); ts != "" {
		h.Set(HeaderTracestate, ts)
	} else {
		h.Del(HeaderTracestate)
	}
}

// Extract returns ctx with the remote parent h carries (ctx itself when it carries none that
// parses). A request with several traceparent fields has none.
func Extract(ctx context.Context, h http.Header) context.Context {
	tp := h.Values(HeaderTraceparent)
	if len(tp) != 1 {
		return ctx
	}
	sc, ok := ParseTraceparent([]byte(tp[0]))
	if !ok {
		return ctx
	}
	if ts := h.Values(HeaderTracestate); len(ts) > 0 {
		sc = sc.WithTraceState(ParseTracestate([]byte(strings.Join(ts, ","))))
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}
