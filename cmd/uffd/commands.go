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
	summary: "measure the pager on the C reference's workload (a private anonymous region touched page by page, by threads of this process or of another); --ref runs the C reference in the same invocation and prints the ratios; --targets all checks the engine's targets; bench firecracker compares uffd firecracker with a C handler",
	about: `
Measure the pager on the C reference's workload: a private anonymous region
touched page by page by faulter threads (of this process, or of a child that
hands its userfaultfd over as a VM does), its faults served by the pager.
With --ref, runs of the repository's C reference (internal/bench/ref, built
on first use) alternate with the Go runs, and the ratios are printed; its
handlers are pinned one per CPU unless --ref-mode naive. --targets runs the
engine's targets, each against the strongest C configuration.`,
	setup: setupBench,
	sub:   []*command{benchFirecrackerCmd, benchSnapshotCmd},
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
