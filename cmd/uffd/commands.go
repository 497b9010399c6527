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
	summary: "measure the pager on ref_handler.c's workload (a private anonymous region touched page by page); --ref path runs the C reference in the same run and prints the ratios",
	about: `
Measure the pager on ref_handler.c's workload: a private anonymous region
touched page by page by faulter threads, its faults served by the pager. With
--ref, runs of the C reference alternate with the Go runs, and the ratios are
printed.`,
	setup: setupBench,
}
