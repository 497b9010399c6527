package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

// TestStressCommand runs `uffd stress` briefly on every memory kind: two
// bounces over a couple of MiB, the locker being this test binary (the
// package's init makes it one when asked).
func TestStressCommand(t *testing.T) {
	if _, err := uffd.Probe(); err != nil {
		t.Skipf("no userfaultfd: %v", err)
	}
	line := regexp.MustCompile(`^bounce (\d)/2, mode: (seq|rnd)( racing)?( ver)? (read|poll): (\d+) faults, (\d+) wp faults, (\d+) background copies, (\d+) exists, (\d+) increments, \S+, (\d+) pages/s$`)
	final := regexp.MustCompile(`^(\S+), (\d+) MiB, 2 bounces, \d+ CPUs, (direct|pager) server, write-protect (on|off): (\d+) pages of (\d+) bytes per area; (\d+) pages served in \S+: (\d+) pages/s \(\S+ MiB/s\); every counter verified$`)
	for _, kind := range mem.Kinds {
		for _, server := range []string{"", "-pager"} {
			t.Run(kind.String()+server, func(t *testing.T) {
				mib := "2"
				if kind.Huge() {
					mib = "8"
					testutil.ReserveHugePages(t, 8)
				}
				args := []string{"-cpus", "2"}
				if server != "" {
					args = append(args, server)
				}
				var out, errOut bytes.Buffer
				err := runStress(context.Background(), append(args, kind.String(), mib, "2"), &out, &errOut)
				stdout, stderr := out.String(), errOut.String()
				if err != nil {
					t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
				}
				lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
				if len(lines) != 3 {
					t.Fatalf("%d lines, want 2 bounces and a summary:\n%s", len(lines), stdout)
				}
				var served int
				for i, l := range lines[:2] {
					m := line.FindStringSubmatch(l)
					if m == nil {
						t.Fatalf("line %d = %q", i+1, l)
					}
					if m[1] != strconv.Itoa(i+1) {
						t.Errorf("line %d numbers bounce %s", i+1, m[1])
					}
					faults, _ := strconv.Atoi(m[6])
					bg, _ := strconv.Atoi(m[8])
					served += faults + bg
				}
				m := final.FindStringSubmatch(lines[2])
				if m == nil {
					t.Fatalf("summary = %q", lines[2])
				}
				pages, _ := strconv.Atoi(m[5])
				total, _ := strconv.Atoi(m[7])
				if m[1] != kind.String() || m[2] != mib {
					t.Errorf("summary names %s %s MiB", m[1], m[2])
				}
				if total != served || total != 2*pages {
					t.Errorf("summary: %d pages served; the bounces say %d; want %d (each page once per bounce)", total, served, 2*pages)
				}
				if rate, _ := strconv.Atoi(m[8]); rate <= 0 {
					t.Errorf("summary: %d pages/s", rate)
				}
				if server == "-pager" && m[4] != "off" {
					t.Errorf("the pager server write-protected")
				}
			})
		}
	}
}

func TestStressBadArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "want <memory-type> <MiB> <bounces>"},
		{[]string{"anon", "1"}, "got 2 arguments"},
		{[]string{"tmpfs", "1", "1"}, `unknown memory kind "tmpfs"`},
		{[]string{"anon", "zero", "1"}, "not a size in MiB"},
		{[]string{"anon", "-1", "1"}, "not a size in MiB"},
		{[]string{"anon", "1", "0"}, "not a number of bounces"},
		{[]string{"-cpus", "-2", "anon", "1", "1"}, "-cpus -2"},
		{[]string{"-bogus", "anon", "1", "1"}, "flag provided but not defined"},
	} {
		var out, errOut bytes.Buffer
		err := runStress(context.Background(), tc.args, &out, &errOut)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "stress") {
			t.Errorf("%q: %v, want a usage error saying %q", tc.args, err, tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("%q: printed %q", tc.args, out.String())
		}
	}
}
