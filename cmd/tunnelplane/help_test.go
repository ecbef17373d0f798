package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

// No --help shows a secret from the environment (tokens as "(set)", URLs without their
// password), and flags read as --flag, not --flag[=true|false].
func TestHelpNeverPrintsSecrets(t *testing.T) {
	const token, password = "s3cr3t-token-value", "s3cr3t-password"
	for _, env := range []string{"TOKEN", "AGENT_TOKEN"} {
		t.Setenv("TUNNELPLANE_"+env, token)
	}
	t.Setenv("TUNNELPLANE_DATABASE_URL", "postgres://app:"+password+"@db.example:5432/tunnelplane?sslmode=disable")
	t.Setenv("TUNNELPLANE_NATS_URL", "nats://app:"+password+"@nats.example:4222")
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string(nil), path...), sub.Name()))
		}
	}
	walk(newRootCommand(io.Discard, io.Discard), nil)
	if len(paths) < 20 {
		t.Fatalf("only %d commands found", len(paths))
	}
	sawSet := false
	for _, p := range paths {
		var out, errb bytes.Buffer
		if code := run(append(p, "--help"), &out, &errb); code != 0 {
			t.Errorf("%v --help: exit %d %s", p, code, errb.String())
		}
		help := out.String() + errb.String()
		for _, secret := range []string{token, password} {
			if strings.Contains(help, secret) {
				t.Errorf("tunnelplane %s --help prints a secret:\n%s", strings.Join(p, " "), help)
			}
		}
		if strings.Contains(help, "[=true|false]") {
			t.Errorf("tunnelplane %s --help renders a flag as --flag[=true|false]", strings.Join(p, " "))
		}
		sawSet = sawSet || strings.Contains(help, `(default "(set)")`)
	}
	if !sawSet {
		t.Error(`no --help says a token is "(set)"`)
	}
}

// A refusal with one field problem prints it once; other field problems are listed below.
func TestProblemsPrintEachFieldOnce(t *testing.T) {
	one := (&problemError{p: api.Problem{Status: 422, Title: "Unprocessable Entity", RequestID: "r1",
		Detail: `validation failed: name: must be 1-63 lower-case letters`,
		Errors: []domain.FieldError{{Field: "name", Message: "must be 1-63 lower-case letters"}}}}).Error()
	if strings.Count(one, "must be 1-63") != 1 || !strings.Contains(one, "(request id r1)") {
		t.Fatalf("one field problem:\n%s", one)
	}
	two := (&problemError{p: api.Problem{Status: 422, Title: "Unprocessable Entity", Detail: "validation failed",
		Errors: []domain.FieldError{{Field: "name", Message: "is required"}, {Field: "upstream", Message: "must use http"}}}}).Error()
	if !strings.Contains(two, "\n  name: is required") || !strings.Contains(two, "\n  upstream: must use http") {
		t.Fatalf("two field problems:\n%s", two)
	}
}

// A word a command group does not know is an error, not its help with exit status 0.
func TestUnknownSubcommandsAreErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"migrate", "status"}, {"admin", "tokenz"}, {"db", "drop"}, {"bogus"}} {
		r := tp(t, args...)
		if r.code == 0 || !strings.Contains(r.stderr, `unknown command "`+args[len(args)-1]+`"`) {
			t.Errorf("%v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
	}
	if r := tp(t, "admin"); r.code != 0 || !strings.Contains(r.stdout, "Available Commands") {
		t.Errorf("admin alone: exit %d %s", r.code, r.stderr)
	}
}
