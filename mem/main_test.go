//go:build linux

package mem_test

import (
	"os"
	"testing"

	"github.com/gouffd/uffd/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }
