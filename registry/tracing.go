package registry

import (
	"context"
	"os"

	"go.opentelemetry.io/otel"
)

// tracingEnv are the OpenTelemetry variables that choose a trace exporter
// or where it sends. Other OTEL_* variables (OTEL_SERVICE_NAME,
// OTEL_BSP_*) only tune an exporter and do not turn tracing on.
var tracingEnv = []string{
	"OTEL_TRACES_EXPORTER",
	"OTEL_EXPORTER_OTLP_ENDPOINT",
	"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
}

// tracingConfigured reports whether the operator asked for traces.
func tracingConfigured() bool {
	for _, k := range tracingEnv {
		if _, ok := os.LookupEnv(k); ok {
			return true
		}
	}
	return false
}

// tracingOff keeps distribution's tracing from exporting when the operator
// configured no exporter. distribution v3 always sets up OpenTelemetry, and
// its default exporter posts to localhost:4318, logging an error every few
// seconds when nothing listens there. Call it before NewRegistry (which
// builds the exporter from the environment); the returned function, called
// after, shuts the tracer provider down, which also stops distribution's
// second exporter from encoding every span for the debug log.
func tracingOff() (after func()) {
	if tracingConfigured() {
		return func() {}
	}
	_ = os.Setenv("OTEL_TRACES_EXPORTER", "none")
	return func() {
		if p, ok := otel.GetTracerProvider().(interface{ Shutdown(context.Context) error }); ok {
			_ = p.Shutdown(context.Background())
		}
	}
}
