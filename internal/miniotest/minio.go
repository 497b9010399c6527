// Package miniotest starts a real MinIO server for tests, on 127.0.0.1
// with a temporary directory.
//
// The binary is found at $UFFD_MINIO, as minio in $PATH, or where .ci/run
// builds it ($XDG_CACHE_HOME or ~/.cache, then uffd-ci/bin/minio). Tests
// skip, naming the way to install it, when it is nowhere (and fail when
// $CI is set: CI builds it):
//
//	GOBIN=~/.cache/uffd-ci/bin go install github.com/minio/minio@latest
package miniotest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Credentials of the servers started here.
const (
	AccessKey = "uffdtestaccess"
	SecretKey = "uffdtestsecret0123456789"
	Region    = "us-east-1"
)

// Install is how to build MinIO where the tests find it.
const Install = "GOBIN=~/.cache/uffd-ci/bin go install github.com/minio/minio@latest (about 5 minutes; .ci/run does it), or set UFFD_MINIO to a minio binary"

// Find returns the path of the minio binary, or an error saying how to
// install it.
func Find() (string, error) {
	if p := os.Getenv("UFFD_MINIO"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("miniotest: UFFD_MINIO=%s: %w", p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cache = filepath.Join(home, ".cache")
		}
	}
	if cache != "" {
		p := filepath.Join(cache, "uffd-ci", "bin", "minio")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("miniotest: MinIO is not installed: " + Install)
}

// Server is a running MinIO.
type Server struct {
	bin, dir, addr string
	env            []string
	cmd            *exec.Cmd
	exited         chan struct{}
}

// Start starts MinIO on a free port of 127.0.0.1 with a temporary data
// directory, and stops it when the test ends. It skips the test when
// MinIO is not installed. extraEnv (KEY=VALUE) is added to the server's
// environment (MINIO_REGION=..., for instance).
func Start(tb testing.TB, extraEnv ...string) *Server {
	tb.Helper()
	if _, err := Find(); err != nil {
		if os.Getenv("CI") != "" { // CI builds MinIO: a skip there is a failure
			tb.Fatal(err.Error())
		}
		tb.Skip(err.Error())
	}
	s, err := Launch(tb.TempDir(), extraEnv...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Launch starts MinIO (found by Find) on a free port of 127.0.0.1 with
// its data in dir, outside a test (a benchmark command); the caller
// stops it with Stop.
func Launch(dir string, extraEnv ...string) (*Server, error) {
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir, addr: addr}
	s.env = append(os.Environ(), "MINIO_ROOT_USER="+AccessKey, "MINIO_ROOT_PASSWORD="+SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1")
	s.env = append(s.env, extraEnv...)
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("miniotest: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (s *Server) start() error {
	console := "127.0.0.1:" + strconv.Itoa(0)
	cmd := exec.Command(s.bin, "server", "--quiet", "--address", s.addr, "--console-address", console, s.dir)
	cmd.Env = s.env
	logf, err := os.Create(filepath.Join(filepath.Dir(s.dir), filepath.Base(s.dir)+".log"))
	if err == nil {
		cmd.Stdout, cmd.Stderr = logf, logf
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("miniotest: start %s: %w", s.bin, err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(s.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("miniotest: minio exited at start (log: %s)", logf.Name())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint()+"/minio/health/ready", nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Stop()
	return fmt.Errorf("miniotest: minio not ready on %s within 60s", s.addr)
}

// PID is the server process's id (0 when stopped).
func (s *Server) PID() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Addr is the server's host:port; Endpoint, its URL.
func (s *Server) Addr() string     { return s.addr }
func (s *Server) Endpoint() string { return "http://" + s.addr }

// Stop kills the server (it can be started again with Restart).
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart starts a stopped server again on the same address and data.
func (s *Server) Restart() error {
	s.Stop()
	return s.start()
}

// Env points the standard AWS configuration of this process (and of
// processes it starts) at the server, through endpoint if it is not ""
// (a proxy), for the rest of the test. Shared config files and the
// instance metadata service are turned off.
func (s *Server) Env(t *testing.T, endpoint string) {
	if endpoint == "" {
		endpoint = s.Endpoint()
	}
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           AccessKey,
		"AWS_SECRET_ACCESS_KEY":       SecretKey,
		"AWS_SESSION_TOKEN":           "",
		"AWS_REGION":                  Region,
		"AWS_ENDPOINT_URL":            endpoint,
		"AWS_ENDPOINT_URL_S3":         "",
		"AWS_PROFILE":                 "",
		"AWS_CONFIG_FILE":             "/nonexistent/aws-config",
		"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
}
