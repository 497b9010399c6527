package uffd_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/abi"
)

// The exported constants spell their values out, so that go doc shows
// them; they must stay the kernel's, which internal/abi holds (and checks
// against the C headers).
func TestConstantsMatchABI(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"MessageSize", uffd.MessageSize, abi.MsgSize},
		{"FeatureWPFaults", uint64(uffd.FeatureWPFaults), abi.FeaturePagefaultFlagWP},
		{"FeatureEventFork", uint64(uffd.FeatureEventFork), abi.FeatureEventFork},
		{"FeatureEventRemap", uint64(uffd.FeatureEventRemap), abi.FeatureEventRemap},
		{"FeatureEventRemove", uint64(uffd.FeatureEventRemove), abi.FeatureEventRemove},
		{"FeatureMissingHugetlbfs", uint64(uffd.FeatureMissingHugetlbfs), abi.FeatureMissingHugetlbfs},
		{"FeatureMissingShmem", uint64(uffd.FeatureMissingShmem), abi.FeatureMissingShmem},
		{"FeatureEventUnmap", uint64(uffd.FeatureEventUnmap), abi.FeatureEventUnmap},
		{"FeatureSigbus", uint64(uffd.FeatureSigbus), abi.FeatureSigbus},
		{"FeatureThreadID", uint64(uffd.FeatureThreadID), abi.FeatureThreadID},
		{"FeatureMinorHugetlbfs", uint64(uffd.FeatureMinorHugetlbfs), abi.FeatureMinorHugetlbfs},
		{"FeatureMinorShmem", uint64(uffd.FeatureMinorShmem), abi.FeatureMinorShmem},
		{"FeatureExactAddress", uint64(uffd.FeatureExactAddress), abi.FeatureExactAddress},
		{"FeatureWPHugetlbfsShmem", uint64(uffd.FeatureWPHugetlbfsShmem), abi.FeatureWPHugetlbfsShmem},
		{"FeatureWPUnpopulated", uint64(uffd.FeatureWPUnpopulated), abi.FeatureWPUnpopulated},
		{"FeaturePoison", uint64(uffd.FeaturePoison), abi.FeaturePoison},
		{"FeatureWPAsync", uint64(uffd.FeatureWPAsync), abi.FeatureWPAsync},
		{"FeatureMove", uint64(uffd.FeatureMove), abi.FeatureMove},
		{"AllFeatures", uint64(uffd.AllFeatures), abi.FeatureAll},
		{"IoctlRegister", uint64(uffd.IoctlRegister), 1 << abi.NrRegister},
		{"IoctlUnregister", uint64(uffd.IoctlUnregister), 1 << abi.NrUnregister},
		{"IoctlWake", uint64(uffd.IoctlWake), 1 << abi.NrWake},
		{"IoctlCopy", uint64(uffd.IoctlCopy), 1 << abi.NrCopy},
		{"IoctlZeroPage", uint64(uffd.IoctlZeroPage), 1 << abi.NrZeropage},
		{"IoctlMove", uint64(uffd.IoctlMove), 1 << abi.NrMove},
		{"IoctlWriteProtect", uint64(uffd.IoctlWriteProtect), 1 << abi.NrWriteprotect},
		{"IoctlContinue", uint64(uffd.IoctlContinue), 1 << abi.NrContinue},
		{"IoctlPoison", uint64(uffd.IoctlPoison), 1 << abi.NrPoison},
		{"IoctlAPI", uint64(uffd.IoctlAPI), 1 << abi.NrAPI},
		{"ModeMissing", uint64(uffd.ModeMissing), abi.RegisterModeMissing},
		{"ModeWriteProtect", uint64(uffd.ModeWriteProtect), abi.RegisterModeWP},
		{"ModeMinor", uint64(uffd.ModeMinor), abi.RegisterModeMinor},
		{"EventPagefault", uint64(uffd.EventPagefault), abi.EventPagefault},
		{"EventFork", uint64(uffd.EventFork), abi.EventFork},
		{"EventRemap", uint64(uffd.EventRemap), abi.EventRemap},
		{"EventRemove", uint64(uffd.EventRemove), abi.EventRemove},
		{"EventUnmap", uint64(uffd.EventUnmap), abi.EventUnmap},
		{"FaultWrite", uint64(uffd.FaultWrite), abi.PagefaultFlagWrite},
		{"FaultWriteProtect", uint64(uffd.FaultWriteProtect), abi.PagefaultFlagWP},
		{"FaultMinor", uint64(uffd.FaultMinor), abi.PagefaultFlagMinor},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, the kernel's is %#x", c.name, c.got, c.want)
		}
	}
	if n := len(uffd.Features()); uffd.AllFeatures != 1<<n-1 {
		t.Errorf("AllFeatures = %v, want the %d features", uffd.AllFeatures, n)
	}
}

// TestDocShowsValues: go doc prints a constant's expression as written;
// none of the exported ones may be written in terms of internal/abi,
// whose names mean nothing to a user.
func TestDocShowsValues(t *testing.T) {
	fset := token.NewFileSet()
	ents, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*ast.File{}
	for _, e := range ents {
		if name := e.Name(); strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go") {
			f, err := parser.ParseFile(fset, name, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files[name] = f
		}
	}
	{
		for name, f := range files {
			for _, decl := range f.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok || gd.Tok != token.CONST {
					continue
				}
				for _, spec := range gd.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, id := range vs.Names {
						if !id.IsExported() || i >= len(vs.Values) {
							continue
						}
						ast.Inspect(vs.Values[i], func(n ast.Node) bool {
							if sel, ok := n.(*ast.SelectorExpr); ok {
								if x, ok := sel.X.(*ast.Ident); ok && x.Name == "abi" {
									t.Errorf("%s: const %s = ...abi.%s: go doc shows an internal name, not the value", name, id.Name, sel.Sel.Name)
								}
							}
							return true
						})
					}
				}
			}
		}
	}
}
