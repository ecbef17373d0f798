package evidence

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// pythonVerifier is the independent verifier in testdata, written from docs/event-format.md with
// the standard library, python3-cryptography and the zstd command (make deps installs both).
const pythonVerifier = "testdata/verify_bundle.py"

// runPython runs the Python verifier on a bundle file and returns its exit status and the
// (position, kind) pairs it names.
func runPython(t *testing.T, path, trusted string) (int, []string) {
	t.Helper()
	args := []string{pythonVerifier, path}
	if trusted != "" {
		args = append(args, "--trusted-checkpoint", trusted)
	}
	cmd := exec.Command("/usr/bin/python3", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("python verifier: %v (make deps installs python3-cryptography and zstd)", err)
	}
	if strings.Contains(stderr.String(), "Traceback") {
		t.Fatalf("python verifier crashed:\n%s", stderr.String())
	}
	var named []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var p struct {
			Position *uint64 `json:"position"`
			Kind     string  `json:"kind"`
		}
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatalf("python verifier printed %q: %v", sc.Text(), err)
		}
		if p.Position != nil {
			named = append(named, fmt.Sprintf("%d:%s", *p.Position, p.Kind))
		}
	}
	slices.Sort(named)
	return code, slices.Compact(named)
}

func goNamed(rep Report) []string {
	var named []string
	for _, p := range rep.Problems {
		if p.Position != nil {
			named = append(named, fmt.Sprintf("%d:%s", *p.Position, p.Kind))
		}
	}
	slices.Sort(named)
	return slices.Compact(named)
}

// The Python verifier agrees with verify-export on the same bundles: intact, a changed byte, a
// removed record, a changed manifest, and the bundles of a rolled-back and of a rewritten,
// re-signed log against a trusted checkpoint.
func TestPythonVerifierAgrees(t *testing.T) {
	t.Parallel()
	if err := exec.Command("/usr/bin/python3", "-c", "import cryptography").Run(); err != nil {
		t.Skipf("no python3-cryptography for /usr/bin/python3 (make deps installs it as root): %v", err)
	}
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skipf("no zstd command (make deps installs it as root): %v", err)
	}
	l := newTestLog(t)
	l.rotate(t)
	mid := l.orgs(t, "a", 4)
	saved := l.orgs(t, "b", 5)
	_, trustedNote, err := l.store.LatestCheckpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	trusted := filepath.Join(dir, "trusted")
	if err := os.WriteFile(trusted, []byte(trustedNote), 0o600); err != nil {
		t.Fatal(err)
	}
	intact, _ := l.export(t, Window{From: 2, To: saved - 2})
	files := readFiles(t, intact)

	type bundle struct {
		name, path, trusted string
		wantOK              bool
		wantNamed           string // a (position, kind) both must name
	}
	write := func(name string, mutate func(map[string][]byte)) string {
		c := map[string][]byte{}
		for k, v := range files {
			c[k] = bytes.Clone(v)
		}
		mutate(c)
		var buf bytes.Buffer
		if err := WriteBundle(&buf, c, time.Now()); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+".tar.zst")
		if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []bundle{
		{"intact", intact, "", true, ""},
		{"intact against the trusted checkpoint", intact, trusted, true, ""},
		{"changed byte", write("changed", func(f map[string][]byte) {
			i := bytes.Index(f[FileRecords], []byte(`"b-1"`))
			f[FileRecords][i+2] = 'x'
		}), "", false, "7:hash_mismatch"},
		{"removed record", write("removed", func(f map[string][]byte) {
			es, _ := decodeEntries(f[FileRecords])
			es = slices.DeleteFunc(es, func(e Entry) bool { return bytes.Contains(e.Leaf, []byte(`"a-3"`)) })
			f[FileRecords] = encodeEntries(es)
		}), "", false, "5:missing"},
		{"changed manifest", write("manifest", func(f map[string][]byte) {
			f[FileManifest] = bytes.Replace(f[FileManifest], []byte(`"from": 2`), []byte(`"from": 3`), 1)
		}), "", false, ""},
	}

	// Rolled back to mid by an insider, then written again with the real key.
	l.store.Stop()
	rollBackTo(t, l, mid)
	l2 := reopen(t, l)
	rolled, _ := l2.export(t, Window{From: 1, To: mid - 1})
	cases = append(cases, bundle{"rolled back, against the trusted checkpoint", rolled, trusted, false, fmt.Sprintf("%d:rolled_back", mid)})
	l2.orgs(t, "forged", int(saved-mid)+1)
	rewritten, _ := l2.export(t, Window{From: mid, To: saved})
	cases = append(cases, bundle{"rewritten and re-signed, alone", rewritten, "", true, ""},
		bundle{"rewritten and re-signed, against the trusted checkpoint", rewritten, trusted, false, ""})

	for _, c := range cases {
		var opts VerifyOptions
		if c.trusted != "" {
			opts.TrustedCheckpoint = trustedNote
		}
		rep := verifyFile(t, c.path, opts)
		code, pyNamed := runPython(t, c.path, c.trusted)
		if rep.OK() != c.wantOK || (code == 0) != c.wantOK {
			t.Fatalf("%s: Go ok=%v %v; Python exit %d %v; want ok=%v", c.name, rep.OK(), rep.Problems, code, pyNamed, c.wantOK)
		}
		if goN := goNamed(rep); !slices.Equal(goN, pyNamed) {
			t.Fatalf("%s: Go names %v, Python %v", c.name, goN, pyNamed)
		}
		if c.wantNamed != "" && !slices.Contains(pyNamed, c.wantNamed) {
			t.Fatalf("%s: neither names %s: %v", c.name, c.wantNamed, pyNamed)
		}
		if strings.HasPrefix(c.name, "rewritten") && !c.wantOK && !hasProblem(rep, nil, "rewritten") {
			t.Fatalf("%s: %v", c.name, rep.Problems)
		}
		if !c.wantOK && code != 1 {
			t.Fatalf("%s: Python exit %d, want 1", c.name, code)
		}
	}
}
