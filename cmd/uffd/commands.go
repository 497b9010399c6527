package main

var firecrackerCmd = &command{
	name:     "firecracker",
	summary:  "serve the guest memory of Firecracker microVMs restored from a snapshot (its UFFD backend)",
	required: []string{"socket", "mem-file"},
	about: `
Serve the guest memory of Firecracker microVMs restored from a snapshot
(mem_backend {"backend_type": "Uffd", "backend_path": PATH}): every VM that
connects to the socket is served from the snapshot's memory file, until
SIGTERM or until a new instance takes the VMs over (--takeover).`,
	setup: setupFirecracker,
}

var benchCmd = &command{
	name:    "bench",
	summary: "measure the pager on the C reference's workload (a private anonymous region touched page by page, by threads of this process or of another); --ref runs the C reference in the same invocation and prints the ratios; --targets all checks the engine's targets; bench firecracker compares uffd firecracker with a C handler; bench remote measures remote images against their targets",
	about: `
Measure the pager on the C reference's workload: a private anonymous region
touched page by page by faulter threads (of this process, or of a child that
hands its userfaultfd over as a VM does), its faults served by the pager.
With --ref, runs of the repository's C reference (internal/bench/ref, built
on first use) alternate with the Go runs, and the ratios are printed; its
handlers are pinned one per CPU unless --ref-mode naive. --targets runs the
engine's targets, each against the strongest C configuration.`,
	setup: setupBench,
	sub:   []*command{benchFirecrackerCmd, benchSnapshotCmd, benchRemoteCmd},
}

var benchFirecrackerCmd = &command{
	name:    "bench firecracker",
	summary: "uffd firecracker --prefetch none against a C handler of Firecracker's protocol (one pinned reader per CPU), under test VMs",
	about: `
Compare 'uffd firecracker --prefetch none' with a C handler of Firecracker's
protocol (internal/bench/ref/fchandler.c: one pinned reader per CPU, blocking
in read(2)), both serving test VMs (package fctest) that touch every page of
their guest once: one VM, and several at once (the C handler then runs as one
process per VM, the daemon serves them all). Runs are interleaved; medians
and ratios are reported.`,
	setup: setupBenchFirecracker,
}

var benchRemoteCmd = &command{
	name:    "bench remote",
	summary: "uffd firecracker --mem-file URL (an S3 object on MinIO, or a file on an HTTP server) under test VMs, through a proxy adding latency and a bandwidth cap: the figures and targets of remote images",
	about: `
Measure remote memory images end to end against their targets: a real
server (MinIO, which the tests use, or net/http's FileServer) holds the
images; a TCP proxy of this process adds the round-trip time (and a
bandwidth cap for record-replay) between it and every client; 'uffd
firecracker --mem-file URL' runs with a fresh cache for each run, and test
VMs (each a process of its own) touch every 4 KiB page of their guest and
check every byte. The cases: seq (address order on demand at each --rtt,
against downloading the whole object at the same concurrency, and the first
fault's latency), random (shuffled order at --random-rtt, against one
single-page request at a time), replay (record-replay under --bandwidth at
--replay-rtt: how fast the recorded pages arrive), shared (--shared-vms VMs
from one image with zero chunks: bytes fetched against its non-zero
chunks). Medians of --runs runs are reported with each target's ratio.`,
	setup: setupBenchRemote,
}

var imageCmd = &command{
	name:    "image",
	summary: "memory images in S3 (s3://BUCKET/KEY) and on HTTP servers: upload with an index of zero chunks and checksums, download, describe",
	about: `
Memory images in object storage and on HTTP servers. URLs: s3://BUCKET/KEY
(credentials, region and endpoint from the standard AWS configuration:
AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_S3, ...),
http(s)://... (a server honouring Range requests), or a file.`,
	sub: []*command{imagePushCmd, imagePullCmd, imageStatCmd, imageIndexCmd, imageCompactCmd},
}
