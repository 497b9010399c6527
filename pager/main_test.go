package pager_test

import (
	"os"
	"testing"

	"github.com/gouffd/uffd/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }
