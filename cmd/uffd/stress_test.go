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
		testutil.Skipf(t, "no userfaultfd: %v", err)
	}
	line := regexp.MustCompile(`^bounce (\d)/2, mode: (seq|rnd)( racing)?( ver)? (read|poll): (\d+) faults, (\d+) wp faults, (\d+) background copies, (\d+) exists, (\d+) increments, \S+, (\d+) pages/s$`)
	final := regexp.MustCompile(`^(\S+), (\d+) MiB, 2 bounces, \d+ CPUs, (direct|pager) server, write-protect (on|off): (\d+) pages of (\d+) bytes per area; (\d+) pages served in \S+: (\d+) pages/s \(\S+ MiB/s\); every counter verified$`)
	for _, kind := range mem.Kinds {
		for _, server := range []string{"", "-pager"} {
			t.Run(kind.String()+server, func(t *testing.T) {
				mib := "2"
				if kind.Huge() {
					mib = "8"
					// Two areas.
					n, err := mem.HugePagesFor(kind, 8<<20)
					if err != nil {
						testutil.Skipf(t, "no huge pages: %v", err)
					}
					testutil.ReserveHugePages(t, 2*n)
				}
				// Flags before and after the arguments.
				args := []string{"-cpus", "2", kind.String(), mib, "2"}
				if server != "" {
					args = append(args, server)
				}
				var out, errOut bytes.Buffer
				err := runStress(context.Background(), args, &out, &errOut)
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
		{nil, "want TYPE MiB BOUNCES"},
		{[]string{"anon", "1"}, "got 2 arguments"},
		{[]string{"tmpfs", "1", "1"}, `TYPE tmpfs: want anon, shmem, shmem-private, hugetlb or hugetlb-private`},
		{[]string{"anon", "zero", "1"}, "MiB zero: not a number; want 1 to 1048576"},
		{[]string{"anon", "1048577", "1"}, "MiB 1048577: want 1 to 1048576"},
		{[]string{"anon", "1", "0"}, "BOUNCES 0: want at least 1"},
		{[]string{"-cpus", "-2", "anon", "1", "1"}, "--cpus -2: want 1 to 1024"},
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

// TestStressTooBig: a run larger than the memory available is refused
// before it starts (it was killed by the OOM killer, printing nothing).
func TestStressTooBig(t *testing.T) {
	avail, err := mem.Available()
	if err != nil {
		t.Fatal(err)
	}
	mib := strconv.Itoa(min(avail>>20, 1<<20)) // two areas of it
	_, stderr, err := runCmd(context.Background(), "stress", "anon", mib, "1")
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(stderr, "MemAvailable") || !strings.Contains(stderr, "choose a smaller size") {
		t.Errorf("stress anon %s 1 with %d MiB available: %v\n%s", mib, avail>>20, err, stderr)
	}
}
