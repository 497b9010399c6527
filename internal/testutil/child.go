package testutil

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// RunTestChild runs this test binary again with only the test named test
// and env (KEY=VALUE) added to the environment, for at most limit: the
// way to run a workload that may hang the whole process (a stop-the-world
// stalled by a fault stops every goroutine, a watchdog included). At the
// deadline the child is asked for a goroutine dump (SIGQUIT), then
// killed. It returns the last 80 lines of the child's output, the error
// of its run, and whether the deadline passed.
func RunTestChild(test, env string, limit time.Duration) (out string, err error, hung bool) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), env)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) } // a goroutine dump
	cmd.WaitDelay = 5 * time.Second                                          // then SIGKILL
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	lines := strings.Split(buf.String(), "\n")
	if len(lines) > 80 {
		lines = lines[len(lines)-80:]
	}
	return strings.Join(lines, "\n"), err, ctx.Err() != nil
}
