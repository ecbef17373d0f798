package main

import (
	"context"
	"time"

	"github.com/tunnelplane/tunnelplane/internal/tracing"
)

// startTracing sets tracing up from the OTEL_* environment (off without an OTLP endpoint, or with
// OTEL_SDK_DISABLED=true) and returns what flushes the spans left at exit.
func startTracing(ctx context.Context, g *globals, service string) (func(), error) {
	shutdown, err := tracing.Setup(ctx, service, version)
	if err != nil {
		return nil, err
	}
	if tracing.Provider() != nil {
		g.log.Info("tracing on: spans go to the OTLP endpoint of the OTEL_* environment", "service", service)
	}
	return func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(c); err != nil {
			g.log.Warn("tracing: spans not flushed at exit", "error", err)
		}
	}, nil
}
