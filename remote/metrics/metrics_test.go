package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gouffd/uffd/remote"
	"github.com/gouffd/uffd/remote/metrics"
)

func TestCollector(t *testing.T) {
	c := metrics.NewCollector("uffd")
	st := remote.Stats{Requests: 7, Bytes: 7 << 20, Hits: 3, Misses: 7, Retries: 2, InFlight: 1}
	st.Errors[remote.KindChanged] = 1
	st.Latency.Buckets[24] = 7   // [16.8, 33.6) ms
	st.FaultWait.Buckets[20] = 2 // [1.05, 2.1) ms
	c.Add("vm.mem", func() remote.Stats { return st })
	want := `
# HELP uffd_remote_requests_total Range requests sent, retries included.
# TYPE uffd_remote_requests_total counter
uffd_remote_requests_total{image="vm.mem"} 7
# HELP uffd_remote_fetched_bytes_total Bytes brought by range requests.
# TYPE uffd_remote_fetched_bytes_total counter
uffd_remote_fetched_bytes_total{image="vm.mem"} 7.340032e+06
# HELP uffd_remote_requests_in_flight Range requests in progress.
# TYPE uffd_remote_requests_in_flight gauge
uffd_remote_requests_in_flight{image="vm.mem"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "uffd_remote_requests_total", "uffd_remote_fetched_bytes_total", "uffd_remote_requests_in_flight"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "uffd_remote_errors_total"); n != 8 {
		t.Fatalf("%d error series; want one per kind", n)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP uffd_remote_errors_total Range requests given up on (transient ones after retries), by kind.
# TYPE uffd_remote_errors_total counter
uffd_remote_errors_total{image="vm.mem",kind="changed"} 1
uffd_remote_errors_total{image="vm.mem",kind="corrupt"} 0
uffd_remote_errors_total{image="vm.mem",kind="denied"} 0
uffd_remote_errors_total{image="vm.mem",kind="not_found"} 0
uffd_remote_errors_total{image="vm.mem",kind="other"} 0
uffd_remote_errors_total{image="vm.mem",kind="transient"} 0
uffd_remote_errors_total{image="vm.mem",kind="unsupported"} 0
uffd_remote_errors_total{image="vm.mem",kind="wrong_region"} 0
`), "uffd_remote_errors_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "uffd_remote_fault_wait_seconds"); n != 1 {
		t.Fatalf("%d fault wait histograms", n)
	}
	c.Remove("vm.mem")
	if n := testutil.CollectAndCount(c, "uffd_remote_requests_total"); n != 0 {
		t.Fatalf("%d series after Remove", n)
	}
}
