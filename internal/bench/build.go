//go:build linux

package bench

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// refSources are the C references, built on demand by BuildRef.
//
//go:embed ref/*.c ref/*.h
var refSources embed.FS

// CFlags are the flags the C references are compiled with, after those in
// CC.
var CFlags = []string{"-O2", "-Wall", "-Wextra", "-Werror", "-pthread"}

// The C references.
const (
	// RefBench is the workload of the benchmark (ref/refbench.c).
	RefBench = "refbench"
	// RefFirecracker is a handler of Firecracker's protocol
	// (ref/fchandler.c).
	RefFirecracker = "fchandler"
)

// NoCompilerError reports that the C references cannot be built: no C
// compiler.
type NoCompilerError struct {
	CC  string // the compiler looked for ($CC, or cc)
	Err error
}

func (e *NoCompilerError) Error() string {
	return fmt.Sprintf("bench: no C compiler to build the C references (%s: %v): install gcc or clang, or set CC", e.CC, e.Err)
}

func (e *NoCompilerError) Unwrap() error { return e.Err }

// DefaultCacheDir is where built references are kept: uffd/ under the
// user's cache directory ($XDG_CACHE_HOME, or ~/.cache), or a directory
// of this user's under the temporary directory when there is none.
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "uffd")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("uffd-cache-%d", os.Getuid()))
}

// compiler returns the C compiler's command line ($CC, default cc) with
// its program resolved in $PATH.
func compiler() ([]string, error) {
	cc := strings.Fields(os.Getenv("CC"))
	if len(cc) == 0 {
		cc = []string{"cc"}
	}
	path, err := exec.LookPath(cc[0])
	if err != nil {
		return nil, &NoCompilerError{CC: cc[0], Err: err}
	}
	cc[0] = path
	return cc, nil
}

// BuildRef builds the C reference name (RefBench or RefFirecracker) with
// the system C compiler, unless a build of the same sources with the same
// compiler and flags is in cacheDir (DefaultCacheDir when empty), and
// returns the path of the program.
func BuildRef(ctx context.Context, name, cacheDir string) (string, error) {
	if _, err := fs.Stat(refSources, "ref/"+name+".c"); err != nil {
		return "", fmt.Errorf("bench: no C reference %q", name)
	}
	cc, err := compiler()
	if err != nil {
		return "", err
	}
	if cacheDir == "" {
		cacheDir = DefaultCacheDir()
	}
	// The key: every source, the compiler (path, size, time) and the flags.
	h := sha256.New()
	entries, err := fs.ReadDir(refSources, "ref")
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		b, err := refSources.ReadFile("ref/" + e.Name())
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", e.Name(), len(b))
		h.Write(b)
	}
	if st, err := os.Stat(cc[0]); err == nil {
		fmt.Fprintf(h, "%d %d\n", st.Size(), st.ModTime().UnixNano())
	}
	fmt.Fprintf(h, "%q %q %s\n", cc, CFlags, name)
	dir := filepath.Join(cacheDir, "ref-"+hex.EncodeToString(h.Sum(nil))[:16])
	out := filepath.Join(dir, name)
	if st, err := os.Stat(out); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o100 != 0 {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("bench: build the C reference %s: %w", name, err)
	}
	src, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", fmt.Errorf("bench: build the C reference %s: %w", name, err)
	}
	defer os.RemoveAll(src)
	for _, e := range entries {
		b, _ := refSources.ReadFile("ref/" + e.Name())
		if err := os.WriteFile(filepath.Join(src, e.Name()), b, 0o600); err != nil {
			return "", fmt.Errorf("bench: build the C reference %s: %w", name, err)
		}
	}
	tmp := filepath.Join(src, name)
	args := append(append(append([]string{}, cc[1:]...), CFlags...), "-o", tmp, filepath.Join(src, name+".c"))
	cmd := exec.CommandContext(ctx, cc[0], args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("bench: build the C reference %s: %s %s: %w\n%s", name, cc[0], strings.Join(args, " "), err, b)
	}
	// Rename: a concurrent build of the same key leaves one whole program.
	if err := os.Rename(tmp, out); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("bench: build the C reference %s: %w", name, err)
	}
	return out, nil
}
