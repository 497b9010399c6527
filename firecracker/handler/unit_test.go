package handler_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestSystemdUnitTrace: the shipped service makes the snapshot's directory
// read-only, where a record-replay trace would go by default (the memory
// file's path + .trace); it must name a trace in a directory it may
// write, its state directory.
func TestSystemdUnitTrace(t *testing.T) {
	b, err := os.ReadFile("../../contrib/systemd/uffd-firecracker.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	setting := func(key string) []string {
		m := regexp.MustCompile(`(?m)^` + key + `=(.*)$`).FindStringSubmatch(unit)
		if m == nil {
			return nil
		}
		return strings.Fields(m[1])
	}
	state := setting("StateDirectory")
	if len(state) != 1 {
		t.Fatalf("StateDirectory=%v: want one", state)
	}
	m := regexp.MustCompile(`--mode record-replay --trace (\S+)`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("the unit does not say where record-replay's trace goes")
	}
	trace := m[1]
	if !strings.HasPrefix(trace, "/var/lib/"+state[0]+"/") {
		t.Errorf("trace %s is not in the state directory /var/lib/%s", trace, state[0])
	}
	for _, ro := range setting("ReadOnlyPaths") {
		if strings.HasPrefix(trace, strings.TrimSuffix(ro, "/")+"/") {
			t.Errorf("trace %s is under ReadOnlyPaths=%s", trace, ro)
		}
	}
	if args := setting(`Environment=UFFD_FC_ARGS`); strings.Contains(strings.Join(args, " "), "--trace") {
		t.Errorf("the default arguments pass --trace without record-replay: %v", args)
	}
}
