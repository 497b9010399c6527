package firecracker_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// goList runs `go list -f format pkg` from the module root.
func goList(t *testing.T, format, pkg string) []string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goCmd, "list", "-f", format, pkg)
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// nonStandard returns the imports of pkg outside the standard library.
func nonStandard(t *testing.T, pkg string) []string {
	t.Helper()
	var out []string
	for _, imp := range goList(t, `{{join .Imports " "}}`, pkg) {
		if strings.Contains(strings.Split(imp, "/")[0], ".") {
			out = append(out, imp)
		}
	}
	return out
}

// TestProtocolImports: the protocol package is usable alone by someone
// writing a handler of their own: it needs the standard library,
// golang.org/x/sys, package uffd and package handoff, and nothing of the
// daemon's (the pager, Prometheus).
func TestProtocolImports(t *testing.T) {
	allowed := map[string]bool{
		"golang.org/x/sys/unix":              true,
		"github.com/gouffd/uffd":             true,
		"github.com/gouffd/uffd/handoff":     true,
		"github.com/gouffd/uffd/firecracker": true, // for fctest
	}
	for _, pkg := range []string{"./firecracker", "./firecracker/fctest"} {
		for _, imp := range nonStandard(t, pkg) {
			if !allowed[imp] {
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
	for _, dep := range goList(t, `{{join .Deps " "}}`, "./firecracker") {
		if strings.Contains(dep, "/pager") || strings.Contains(dep, "prometheus") {
			t.Errorf("./firecracker depends on %s", dep)
		}
	}
}

// TestOneControlMessageParser: SCM_RIGHTS is parsed in one place, package
// handoff's Reader; everyone else carries descriptors through handoff.
func TestOneControlMessageParser(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, call := range []string{"ParseUnixRights", "ParseSocketControlMessage"} {
			if strings.Contains(string(b), call) && rel != filepath.Join("handoff", "handoff_linux.go") {
				t.Errorf("%s calls %s: descriptors are received through package handoff", rel, call)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
