// Package report owns the compliance reports (SOC 2, HIPAA, ISO/IEC 27001): the one file that
// maps each control to the event types that evidence it and the exception rules that test it
// (controls.json, reviewed in docs/compliance.md), the rules' implementations over the
// compliance read model, the report's document, and its generation: render, hash, and append
// report.generated.
//
// It reads only the compliance views (through projections/readmodels) and the log's checkpoints,
// never the log's records; it renders only through report/render. It must not authorize: its
// callers (the API, the CLI) decide who may ask for which scope.
package report
