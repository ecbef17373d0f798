// Package demo is a small HTTP upstream that behaves like an Ollama-style local LLM server:
// POST /api/generate streams NDJSON tokens spaced by a configurable delay. It also serves
// /healthz, an HTTP echo, a byte source and a WebSocket echo, which the data-plane tests and
// `tunnelplane serve`'s demo tunnel use.
//
// It owns nothing but its handlers: no tunnel, token or node logic, and no global state.
package demo
