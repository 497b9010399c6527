package testutil

import (
	"fmt"
	"os"
	"testing"
)

// RequireEnv names the environment variable that turns skips into
// failures. With UFFD_TEST_REQUIRE=all, a test that would skip because the
// machine lacks a kernel feature, a privilege, a huge-page pool or a tool
// fails instead: CI sets it, where everything must be there.
const RequireEnv = "UFFD_TEST_REQUIRE"

// requireAll reports whether RequireEnv asks for everything. Another
// non-empty value is a mistake, reported rather than read as "skip".
func requireAll() (bool, error) {
	switch v := os.Getenv(RequireEnv); v {
	case "":
		return false, nil
	case "all":
		return true, nil
	default:
		return true, fmt.Errorf("%s=%q: want all, or leave it unset", RequireEnv, v)
	}
}

// Skipf skips the test because the machine lacks what it needs, which the
// message names (the kernel feature, the privilege, the huge pages, the
// tool). Every such skip goes through Skipf: with UFFD_TEST_REQUIRE=all it
// fails the test instead, with the same message.
func Skipf(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	all, err := requireAll()
	if err != nil {
		tb.Fatalf("%s (and %v)", msg, err)
	}
	if all {
		tb.Fatalf("%s (a skip, and %s=all requires everything)", msg, RequireEnv)
	}
	tb.Skip(msg)
}

// RequireRoot skips a test that needs root (CAP_SYS_ADMIN and friends),
// through Skipf.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Skipf(tb, "needs root (effective user ID %d)", os.Geteuid())
	}
}
