/* refbench.c: the C reference of `uffd bench`.
 *
 * The benchmark's workload in plain C, so that the pager's figures can be
 * read against what the machine allows. Each run opens a userfaultfd, maps a
 * private anonymous region (MADV_NOHUGEPAGE) and registers it in missing
 * mode. F faulting threads touch one byte of every page of their own slice
 * of the region, in address order or in a fixed shuffled order, timing each
 * touch; N handler threads each block in read(2) on the userfaultfd and
 * resolve every fault they read on the spot, installing the CHUNK-sized
 * block of the region that holds it (aligned to the region's start) with
 * UFFDIO_COPY from a source of 0x5a bytes, or with UFFDIO_ZEROPAGE. After
 * the faulters finish, every byte of the region is checked. The run with
 * the median time is reported, with its touch latency percentiles, as one
 * JSON line; its first fields, their order and number formats are those of
 * the project's earlier reference, ref_handler.c, and its options are a
 * superset of that program's, so figures compare across the two.
 *
 * Usage: refbench [-s MiB] [-c CHUNK] [-f FAULTERS] [-n HANDLERS] [-o copy|zero]
 *                 [-r RUNS] [-R] [-x] [-p] [-X] [-m uffd|touch|prefill] [-k OFFSET]
 *   -s  region size in MiB (default 256)
 *   -c  bytes resolved per fault, a multiple of the page size (default a page)
 *   -f  faulting threads, each touching its own slice (default 1)
 *   -n  handler threads, each blocking in read(2) (default 1; 0: one per CPU
 *       of the allowed set)
 *   -o  resolve with UFFDIO_COPY (copy, default) or UFFDIO_ZEROPAGE (zero)
 *   -r  runs; the median run is reported (default 5)
 *   -R  read-touch (checking the byte served) instead of write-touch (storing 1)
 *   -x  touch each faulter's pages in a fixed shuffled order: xorshift64 with
 *       seed 0x9e3779b97f4a7c15, Fisher-Yates within each slice in turn
 *   -p  pin handler i to the i-th CPU of the allowed set (sched_getaffinity);
 *       with -n 0, one reader blocks on each CPU and every fault is read on
 *       the CPU that raised it first (the kernel wakes every blocked reader).
 *       Faulters stay unpinned, as a VM's vCPU threads are.
 *   -X  the faulters live in another process, forked for each run, which
 *       creates the userfaultfd (close-on-exec, non-blocking), registers its
 *       region and hands the descriptor over SCM_RIGHTS, as a VM does; it
 *       closes its own copy once sent, so that a page never served reads as
 *       zeroes in the check instead of hanging it
 *   -m  what is measured: uffd (default) the faults served as above; touch,
 *       the kernel's own first touch of anonymous memory, no userfaultfd (a
 *       floor for any handler); prefill, the handlers installing the whole
 *       region in CHUNK pieces with no fault waiting, each its share of the
 *       chunks, then the faulters' touch (the limit of resolving ahead)
 *   -k  flip the source byte at this offset of the region (a test of the
 *       check: the run must fail)
 * Output: one JSON object on stdout:
 *   {"op","chunk","faulters","handlers","mib","median_ns","faults",
 *    "faults_per_s","ns_per_page","gb_per_s","touch_p50_ns","touch_p99_ns",
 *    "pinned","cross_process","measure","impl":"c","cpu_ns","runs_ns":[...]}
 *   cpu_ns is this process's CPU time (user and system, every thread) during
 *   the median run's faulting: the faulters' and the handlers', or with -X the
 *   handlers' alone
 * Exit status 2 for bad arguments, 1 for a failure (a byte that does not
 * hold what it should is one).
 */
#include "ref.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define MAXT 64
#define MAXRUNS 99
#define SRCBYTE 0x5a

enum { MEASURE_UFFD, MEASURE_TOUCH, MEASURE_PREFILL };
static const char *measure_names[] = { "uffd", "touch", "prefill" };

static size_t pg, region, pages, chunk;
static int nfault = 1, nhand = 1, opzero, readtouch, shuffled, pin, cross, measure;
static int cpus[CPU_SETSIZE], ncpus;
static size_t *order; /* page visiting order with -x */
static char *src;     /* the copy source, in this process */
static uint64_t *lat; /* touch latency per page, ns */

/* The handlers' side of a run: the userfaultfd and the region's address in
 * the faulting process (this one, or the child with -X). */
static int uffd;
static uint64_t base;

/* The byte every page holds where the faulters did not write. */
static char want_byte(void)
{
	return (opzero || measure == MEASURE_TOUCH) ? 0 : SRCBYTE;
}

/* resolve installs the chunk that holds the fault at addr. */
static void resolve(uint64_t addr)
{
	if (addr < base || addr >= base + region)
		return; /* not ours: nothing else is registered */
	uint64_t off = (addr - base) / chunk * chunk, end = off + chunk, done = 0;
	if (end > region)
		end = region;
	for (;;) {
		int e = install(uffd, base + off, base + end, opzero ? NULL : src + off, pg, &done);
		switch (e) {
		case 0:
			return;
		case EAGAIN:
			continue; /* no events are enabled: cannot last */
		case ESRCH:
			pthread_exit(NULL); /* the faulting process is gone */
		}
		errno = e;
		die(opzero ? "UFFDIO_ZEROPAGE" : "UFFDIO_COPY");
	}
}

/* handler reads faults and resolves them until it is cancelled, which can
 * happen only while it waits in read(2). */
static void *handler(void *arg)
{
	int i = (int)(intptr_t)arg;
	if (pin)
		pin_thread(cpus[i % ncpus]);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	for (;;) {
		struct uffd_msg m;
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		ssize_t n = read(uffd, &m, sizeof m);
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die("read");
		}
		if (n != sizeof m)
			fatal(1, "read %zd bytes of a message", n);
		if (m.event == UFFD_EVENT_PAGEFAULT)
			resolve(m.arg.pagefault.address);
	}
	return NULL;
}

/* prefiller i installs its share of the region's chunks, no fault waiting. */
static void *prefiller(void *arg)
{
	int i = (int)(intptr_t)arg;
	if (pin)
		pin_thread(cpus[i % ncpus]);
	size_t nchunks = (region + chunk - 1) / chunk;
	size_t lo = nchunks * (size_t)i / (size_t)nhand * chunk, hi = nchunks * (size_t)(i + 1) / (size_t)nhand * chunk;
	if (hi > region)
		hi = region;
	for (size_t off = lo; off < hi; off += chunk) {
		size_t end = off + chunk < hi ? off + chunk : hi;
		uint64_t done = 0;
		int e;
		while ((e = install(uffd, base + off, base + end, opzero ? NULL : src + off, pg, &done)) == EAGAIN)
			;
		if (e) {
			errno = e;
			die("prefill");
		}
	}
	return NULL;
}

static void start_handlers(pthread_t *h, void *(*fn)(void *))
{
	for (int i = 0; i < nhand; i++) {
		int e = pthread_create(&h[i], NULL, fn, (void *)(intptr_t)i);
		if (e) {
			errno = e;
			die("pthread_create");
		}
	}
}

static void stop_handlers(pthread_t *h)
{
	for (int i = 0; i < nhand; i++)
		pthread_cancel(h[i]);
	for (int i = 0; i < nhand; i++)
		pthread_join(h[i], NULL);
}

/* One run's measurements, as the faulting side reports them. */
struct result {
	uint64_t elapsed, p50, p99;
	uint64_t cpu; /* CPU time of this process (every thread) while the faulters ran */
	int64_t bad; /* offset of a read-touch that saw a wrong byte, or -1 */
	uint64_t bad_got;
};

/* The check after a run. */
struct check {
	int64_t bad; /* offset of the first wrong byte, or -1 */
	uint64_t got, want;
};

struct slice {
	char *mem;
	size_t lo, hi; /* page indexes */
	int64_t bad;
	char bad_got;
};

static void *faulter(void *arg)
{
	struct slice *s = arg;
	volatile char *m = s->mem;
	char want = want_byte();
	for (size_t i = s->lo; i < s->hi; i++) {
		size_t p = shuffled ? order[i] : i;
		uint64_t t0 = now_ns();
		if (readtouch) {
			char got = m[p * pg];
			if (got != want) {
				s->bad = (int64_t)(p * pg);
				s->bad_got = got;
				return NULL;
			}
		} else {
			m[p * pg] = 1;
		}
		lat[p] = now_ns() - t0;
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* run_faulters touches mem with the faulting threads and times them. */
/* cpu_ns is the CPU time, user and system, of this process's threads. */
static uint64_t cpu_ns(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return (uint64_t)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000000u +
	       (uint64_t)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1000u;
}

static struct result run_faulters(char *mem)
{
	pthread_t f[MAXT];
	struct slice s[MAXT];
	struct result r = { .bad = -1 };
	uint64_t c0 = cpu_ns();
	uint64_t t0 = now_ns();
	for (int i = 0; i < nfault; i++) {
		s[i] = (struct slice){ .mem = mem, .lo = pages * (size_t)i / (size_t)nfault, .hi = pages * (size_t)(i + 1) / (size_t)nfault, .bad = -1 };
		int e = pthread_create(&f[i], NULL, faulter, &s[i]);
		if (e) {
			errno = e;
			die("pthread_create");
		}
	}
	for (int i = 0; i < nfault; i++)
		pthread_join(f[i], NULL);
	r.elapsed = now_ns() - t0;
	r.cpu = cpu_ns() - c0;
	for (int i = 0; i < nfault; i++)
		if (s[i].bad >= 0 && r.bad < 0) {
			r.bad = s[i].bad;
			r.bad_got = (unsigned char)s[i].bad_got;
		}
	qsort(lat, pages, sizeof *lat, cmp_u64);
	r.p50 = lat[pages / 2];
	r.p99 = lat[pages * 99 / 100];
	return r;
}

/* verify checks every byte of mem: the first byte of each page holds 1
 * after a write-touch, every other byte what was served. */
static struct check verify(const char *mem)
{
	char want = want_byte();
	char *tmpl = malloc(pg);
	if (!tmpl)
		die("malloc");
	memset(tmpl, want, pg);
	struct check c = { .bad = -1 };
	for (size_t p = 0; p < pages && c.bad < 0; p++) {
		const char *b = mem + p * pg;
		char first = readtouch ? want : 1;
		if (b[0] != first) {
			c = (struct check){ (int64_t)(p * pg), (unsigned char)b[0], (unsigned char)first };
		} else if (memcmp(b + 1, tmpl + 1, pg - 1)) {
			for (size_t k = 1; k < pg; k++)
				if (b[k] != want) {
					c = (struct check){ (int64_t)(p * pg + k), (unsigned char)b[k], (unsigned char)want };
					break;
				}
		}
	}
	free(tmpl);
	return c;
}

/* map_region maps the region to fault on, and registers it with ufd
 * (unless ufd < 0). */
static char *map_region(int ufd)
{
	char *mem = mmap(NULL, region, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap region");
	if (madvise(mem, region, MADV_NOHUGEPAGE))
		die("madvise(MADV_NOHUGEPAGE)");
	if (ufd >= 0) {
		struct uffdio_register reg = { .range = { .start = (uint64_t)(uintptr_t)mem, .len = region }, .mode = UFFDIO_REGISTER_MODE_MISSING };
		if (ioctl(ufd, UFFDIO_REGISTER, &reg))
			die("UFFDIO_REGISTER");
	}
	return mem;
}

static int open_uffd(int flags)
{
	int fd = (int)syscall(SYS_userfaultfd, flags);
	if (fd < 0)
		die("userfaultfd");
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	if (ioctl(fd, UFFDIO_API, &api))
		die("UFFDIO_API");
	return fd;
}

static void report_bad(struct result r, struct check c)
{
	if (r.bad >= 0)
		fatal(1, "bad byte on read-touch at offset %lld (page %lld): got %#llx, want %#x", (long long)r.bad,
		      (long long)r.bad / (long long)pg, (unsigned long long)r.bad_got, (unsigned char)want_byte());
	if (c.bad >= 0)
		fatal(1, "verify failed at offset %lld (page %lld): got %#llx, want %#llx", (long long)c.bad,
		      (long long)c.bad / (long long)pg, (unsigned long long)c.got, (unsigned long long)c.want);
}

/* run_local is one run with the faulters in this process. */
static struct result run_local(void)
{
	pthread_t h[MAXT];
	struct result r;
	char *mem;
	if (measure == MEASURE_TOUCH) {
		mem = map_region(-1);
		r = run_faulters(mem);
	} else {
		uffd = open_uffd(O_CLOEXEC);
		mem = map_region(uffd);
		base = (uint64_t)(uintptr_t)mem;
		if (measure == MEASURE_PREFILL) {
			uint64_t t0 = now_ns();
			start_handlers(h, prefiller);
			for (int i = 0; i < nhand; i++)
				pthread_join(h[i], NULL);
			uint64_t fill = now_ns() - t0;
			r = run_faulters(mem);
			r.elapsed += fill;
		} else {
			start_handlers(h, handler);
			r = run_faulters(mem);
			stop_handlers(h);
		}
		/* Closed: a page never served reads as zeroes, not forever. */
		close(uffd);
	}
	report_bad(r, verify(mem));
	munmap(mem, region);
	return r;
}

/* The handover message of -X. */
struct hello {
	uint64_t base, len;
};

/* faulter_process is the child of -X: it makes the userfaultfd and the
 * region, hands them over on sock, faults when told, reports, and checks
 * every byte when told (the handler has closed its userfaultfd then). */
static int faulter_process(int sock)
{
	int ufd = open_uffd(O_CLOEXEC | O_NONBLOCK);
	char *mem = map_region(ufd);
	struct hello h = { (uint64_t)(uintptr_t)mem, region };
	if (send_fd(sock, &h, sizeof h, ufd))
		die("sendmsg");
	close(ufd);
	char go;
	if (read_full(sock, &go, 1))
		return 1;
	struct result r = run_faulters(mem);
	if (write_full(sock, &r, sizeof r) || read_full(sock, &go, 1))
		return 1;
	struct check c = verify(mem);
	if (write_full(sock, &c, sizeof c))
		return 1;
	return 0;
}

/* run_cross is one run with the faulters in a child process. */
static struct result run_cross(void)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		die("socketpair");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(sv[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(faulter_process(sv[1]));
	}
	close(sv[1]);
	struct hello h;
	int fds[1] = { -1 }, nfds = 0;
	ssize_t n = recv_fds(sv[0], &h, sizeof h, fds, 1, &nfds);
	if (n != (ssize_t)sizeof h || nfds != 1 || h.len != region)
		fatal(1, "the faulting process sent no userfaultfd (%zd bytes, %d descriptors)", n, nfds);
	uffd = fds[0];
	make_blocking(uffd);
	base = h.base;
	pthread_t hs[MAXT];
	start_handlers(hs, handler);
	struct result r;
	struct check c;
	char go = 1;
	uint64_t c0 = cpu_ns();
	if (write_full(sv[0], &go, 1) || read_full(sv[0], &r, sizeof r))
		fatal(1, "the faulting process died during the run");
	r.cpu = cpu_ns() - c0; /* the handlers' alone: the faulters are the child's */
	stop_handlers(hs);
	close(uffd);
	if (write_full(sv[0], &go, 1) || read_full(sv[0], &c, sizeof c))
		fatal(1, "the faulting process died during the check");
	int st;
	if (waitpid(pid, &st, 0) < 0)
		die("waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fatal(1, "the faulting process ended with status %#x", st);
	close(sv[0]);
	report_bad(r, c);
	return r;
}

static __attribute__((noreturn)) void usage(const char *why)
{
	fatal(2, "bad arguments: %s\nusage: refbench [-s MiB] [-c CHUNK] [-f FAULTERS] [-n HANDLERS] [-o copy|zero] [-r RUNS] [-R] [-x] [-p] [-X] [-m uffd|touch|prefill] [-k OFFSET]", why);
}

/* number parses a decimal argument in [lo, hi]. */
static long number(const char *s, long lo, long hi, const char *what)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		usage(what);
	return v;
}

int main(int argc, char **argv)
{
	progname = "refbench";
	pg = (size_t)sysconf(_SC_PAGESIZE);
	chunk = pg;
	long mib = 256, corrupt = -1;
	int runs = 5, o;
	while ((o = getopt(argc, argv, "s:c:f:n:o:r:RxpXm:k:")) != -1) {
		switch (o) {
		case 's': mib = number(optarg, 1, 1 << 20, "-s: want 1 to 1048576 MiB"); break;
		case 'c': chunk = (size_t)number(optarg, 1, 1L << 40, "-c: want a positive multiple of the page size"); break;
		case 'f': nfault = (int)number(optarg, 1, MAXT, "-f: want 1 to 64 faulters"); break;
		case 'n': nhand = (int)number(optarg, 0, MAXT, "-n: want 0 (one per allowed CPU) to 64 handlers"); break;
		case 'o':
			if (strcmp(optarg, "copy") && strcmp(optarg, "zero"))
				usage("-o: want copy or zero");
			opzero = !strcmp(optarg, "zero");
			break;
		case 'r': runs = (int)number(optarg, 1, MAXRUNS, "-r: want 1 to 99 runs"); break;
		case 'R': readtouch = 1; break;
		case 'x': shuffled = 1; break;
		case 'p': pin = 1; break;
		case 'X': cross = 1; break;
		case 'm':
			for (measure = 0; measure < 3 && strcmp(optarg, measure_names[measure]); measure++)
				;
			if (measure == 3)
				usage("-m: want uffd, touch or prefill");
			break;
		case 'k': corrupt = number(optarg, 0, 1L << 40, "-k: want a byte offset"); break;
		default: usage("unknown option");
		}
	}
	if (optind != argc)
		usage("unexpected operand");
	region = (size_t)mib << 20;
	pages = region / pg;
	if (chunk % pg || chunk > region)
		usage("-c: want a multiple of the page size, at most the region");
	if ((size_t)nfault > pages)
		usage("-f: more faulters than pages");
	if (cross && measure != MEASURE_UFFD)
		usage("-X measures faults: not with -m touch or prefill");
	ncpus = allowed_cpus(cpus, CPU_SETSIZE);
	if (nhand == 0)
		nhand = ncpus < MAXT ? ncpus : MAXT;
	if (measure == MEASURE_TOUCH)
		chunk = pg;
	if (corrupt >= 0 && ((size_t)corrupt >= region || opzero || measure == MEASURE_TOUCH))
		usage("-k: want an offset in the region, with -o copy");

	lat = malloc(pages * sizeof *lat);
	order = malloc(pages * sizeof *order);
	if (!lat || !order)
		die("malloc");
	for (size_t i = 0; i < pages; i++)
		order[i] = i;
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	for (int f = 0; f < nfault; f++) {
		size_t lo = pages * (size_t)f / (size_t)nfault, hi = pages * (size_t)(f + 1) / (size_t)nfault;
		for (size_t i = hi - 1; i > lo; i--) {
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			size_t j = lo + (size_t)(seed % (uint64_t)(i - lo + 1)), t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
	}
	if (!opzero && measure != MEASURE_TOUCH) {
		src = mmap(NULL, region, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (src == MAP_FAILED)
			die("mmap source");
		memset(src, SRCBYTE, region);
		if (corrupt >= 0)
			src[corrupt] = (char)~SRCBYTE;
		madvise(src, region, MADV_DONTFORK); /* the -X child has no use for it */
	}

	struct result r[MAXRUNS];
	for (int i = 0; i < runs; i++)
		r[i] = cross ? run_cross() : run_local();

	int idx[MAXRUNS];
	for (int i = 0; i < runs; i++)
		idx[i] = i;
	for (int i = 1; i < runs; i++) /* stable: equal times keep run order */
		for (int j = i; j > 0 && r[idx[j]].elapsed < r[idx[j - 1]].elapsed; j--) {
			int k = idx[j];
			idx[j] = idx[j - 1];
			idx[j - 1] = k;
		}
	struct result m = r[idx[runs / 2]];
	double faults = (double)region / (double)chunk, t = (double)m.elapsed;
	printf("{\"op\":\"%s\",\"chunk\":%zu,\"faulters\":%d,\"handlers\":%d,\"mib\":%ld,\"median_ns\":%llu,"
	       "\"faults\":%.0f,\"faults_per_s\":%.0f,\"ns_per_page\":%.1f,\"gb_per_s\":%.3f,"
	       "\"touch_p50_ns\":%llu,\"touch_p99_ns\":%llu,\"pinned\":%s,\"cross_process\":%s,\"measure\":\"%s\",\"impl\":\"c\",\"cpu_ns\":%llu,\"runs_ns\":[",
	       opzero ? "zero" : "copy", chunk, nfault, measure == MEASURE_TOUCH ? 0 : nhand, mib, (unsigned long long)m.elapsed,
	       faults, faults / (t / 1e9), t / (double)pages, (double)region / t, (unsigned long long)m.p50,
	       (unsigned long long)m.p99, pin ? "true" : "false", cross ? "true" : "false", measure_names[measure], (unsigned long long)m.cpu);
	for (int i = 0; i < runs; i++)
		printf("%s%llu", i ? "," : "", (unsigned long long)r[i].elapsed);
	printf("]}\n");
	return 0;
}
