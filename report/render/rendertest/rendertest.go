// Package rendertest reads rendered reports back for tests: the text of a PDF (pdftotext). It is
// for tests only and owns nothing else.
package rendertest

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
)

// PDFToText runs pdftotext on a PDF. Without the tool the test skips, except under CI=true,
// where `make deps` installs it and a skip would hide a missing check.
func PDFToText(t testing.TB, pdf []byte) string {
	t.Helper()
	path, err := exec.LookPath("pdftotext")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("pdftotext not installed (poppler-utils; make deps installs it)")
		}
		t.Skip("pdftotext not installed (poppler-utils; make deps installs it)")
	}
	cmd := exec.Command(path, "-enc", "UTF-8", "-", "-")
	cmd.Stdin = bytes.NewReader(pdf)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pdftotext: %v", err)
	}
	return string(out)
}
