/* fchandler.c: a page-fault handler of Firecracker's UFFD protocol, in C,
 * with one reader per CPU: the reference `uffd firecracker` is measured
 * against (`uffd bench firecracker`).
 *
 * It listens on a UNIX socket and serves every VM that connects, each
 * independently, from one memory file (a snapshot's), until it is killed.
 * A VM sends Firecracker's handshake: with a single sendmsg(2), a compact
 * JSON array of GuestRegionUffdMapping objects
 *   [{"base_host_virt_addr":N,"size":N,"offset":N,"page_size":N,"page_size_kib":N},...]
 * (no length prefix, no terminator: the message ends where the array does)
 * and the userfaultfd as SCM_RIGHTS, then keeps the connection open for its
 * life. The handler checks the regions (aligned to their page size, the
 * base page size or 2 MiB; within the file; not overlapping) and the
 * descriptor (one, a userfaultfd), clears O_NONBLOCK on it, and starts one
 * reader thread per CPU of its allowed set, pinned there, each blocking in
 * read(2): the kernel wakes every blocked reader for each message, so the
 * reader on the faulting CPU reads it first. A reader resolves each fault
 * on the spot with one UFFDIO_COPY of the faulting page (4 KiB, or the
 * whole 2 MiB page of a hugetlbfs region) from the memory file, no
 * prefetch. EEXIST (another reader won) wakes the page; a partial copy
 * continues where the kernel stopped; EAGAIN with nothing done means an
 * event is pending, which the reader reads itself (waiting at most 1 ms,
 * queueing any fault it reads meanwhile) before it tries again; ESRCH ends
 * the reader. A REMOVE event (the balloon's MADV_DONTNEED) marks its pages:
 * the next fault on each is served zeroes (UFFDIO_ZEROPAGE, or a copy of
 * zeroes for huge pages). When the VM closes its connection (it exited),
 * its readers are cancelled in read(2) and its descriptor closed.
 *
 * Known limit, shared by every handler with several readers that read
 * without a lock: the kernel lets the process that raised an event go on
 * as soon as a reader has read the event, before that reader has applied
 * it; a fault on a removed page read by another reader in that window (the
 * first reader preempted between its read(2) and marking the range) is
 * served the file's bytes. The Go pager reads under a lock that its
 * resolves share, and has no such window; its readers do not block in
 * read(2).
 *
 * Usage: fchandler -s SOCKET -m MEMFILE [-n READERS] [-P]
 *   -s  the socket to listen on (must not exist)
 *   -m  the memory file, mapped read-only and shared
 *   -n  readers per VM (default 0: one per CPU of the allowed set)
 *   -P  do not pin the readers
 * It logs one line on stderr per VM connected, rejected and ended:
 *   fchandler: serving SOCKET readers=N pinned=yes
 *   fchandler: VM 1 connected pid=P regions=R bytes=B
 *   fchandler: VM 1 ended faults=F zeroed=Z removes=R outside=O errors=E
 *   fchandler: connection 2 rejected reason=REASON: DETAIL
 */
#include "ref.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/un.h>

#define MAXREG 64
#define MAXMSG (1 << 20)
#define MAXT 64
#define HUGE_PAGE (2UL << 20)

/* glibc before 2.35 does not name this member of struct sigevent. */
#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

static char *file;
static size_t file_size, pg;
static char *zeros; /* HUGE_PAGE bytes of zeroes, never written */
static int cpus[CPU_SETSIZE], ncpus, nreaders, pin = 1;
static int next_id;

struct region {
	uint64_t start, len, offset, psize;
	uint64_t *removed; /* a bit per page: served zeroes on its next fault */
};

struct reader;

struct vm {
	int id, uffd, conn;
	pid_t pid;
	int nreg;
	struct region reg[MAXREG];
	struct reader *readers;
	uint64_t faults, zeroed, removes, outside, errors; /* __atomic counters */
};

/* A reader's state; faults it read while waiting for an event wait in
 * pending until it is done with the current one. */
struct reader {
	struct vm *vm;
	int i;
	pthread_t thread;
	timer_t timer;
	int have_timer;
	uint64_t *pending;
	size_t head, tail, cap;
};

static void count(uint64_t *c) { __atomic_fetch_add(c, 1, __ATOMIC_RELAXED); }
static uint64_t load(uint64_t *c) { return __atomic_load_n(c, __ATOMIC_RELAXED); }

static void on_signal(int sig) { (void)sig; }

static struct region *find_region(struct vm *vm, uint64_t addr)
{
	for (int i = 0; i < vm->nreg; i++)
		if (addr - vm->reg[i].start < vm->reg[i].len)
			return &vm->reg[i];
	return NULL;
}

/* mark_removed marks the pages of [start, end) that the VM's regions hold. */
static void mark_removed(struct vm *vm, uint64_t start, uint64_t end)
{
	for (int k = 0; k < vm->nreg; k++) {
		struct region *r = &vm->reg[k];
		uint64_t lo = start > r->start ? start : r->start, hi = end < r->start + r->len ? end : r->start + r->len;
		if (lo >= hi)
			continue;
		for (uint64_t p = (lo - r->start) / r->psize; p < (hi - r->start + r->psize - 1) / r->psize; p++)
			__atomic_fetch_or(&r->removed[p / 64], 1ull << (p % 64), __ATOMIC_SEQ_CST);
	}
}

/* take_removed clears page p's mark and reports whether it was set. */
static int take_removed(struct region *r, uint64_t p)
{
	uint64_t bit = 1ull << (p % 64);
	if (!(__atomic_load_n(&r->removed[p / 64], __ATOMIC_SEQ_CST) & bit))
		return 0;
	return (__atomic_fetch_and(&r->removed[p / 64], ~bit, __ATOMIC_SEQ_CST) & bit) != 0;
}

/* wait_msg reads one message, blocking (at most about 1 ms when bounded).
 * It returns 1 with a message, 0 without. Cancellation acts only here. */
static int wait_msg(struct reader *r, struct uffd_msg *m, int bounded)
{
	if (bounded && r->have_timer) {
		struct itimerspec t = { .it_value = { .tv_sec = 0, .tv_nsec = 1000000 } };
		timer_settime(r->timer, 0, &t, NULL);
	}
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	ssize_t n = read(r->vm->uffd, m, sizeof *m);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	if (bounded && r->have_timer) {
		struct itimerspec t = { 0 };
		timer_settime(r->timer, 0, &t, NULL);
	}
	if (n == sizeof *m)
		return 1;
	if (n < 0 && errno != EINTR && errno != EAGAIN)
		die("read userfaultfd");
	if (n >= 0)
		fatal(1, "read %zd bytes of a message", n);
	if (bounded && !r->have_timer)
		sched_yield();
	return 0;
}

static void push_pending(struct reader *r, uint64_t addr)
{
	if (r->tail == r->cap) {
		if (r->head > 0) {
			memmove(r->pending, r->pending + r->head, (r->tail - r->head) * sizeof *r->pending);
			r->tail -= r->head;
			r->head = 0;
		} else {
			r->cap = r->cap ? 2 * r->cap : 16;
			r->pending = realloc(r->pending, r->cap * sizeof *r->pending);
			if (!r->pending)
				die("realloc");
		}
	}
	r->pending[r->tail++] = addr;
}

static void apply_event(struct vm *vm, const struct uffd_msg *m)
{
	if (m->event == UFFD_EVENT_REMOVE) {
		mark_removed(vm, m->arg.remove.start, m->arg.remove.end);
		count(&vm->removes);
	}
	/* Firecracker enables no other event. */
}

/* serve resolves the fault at addr. It returns -1 when the VM is gone. */
static int serve(struct reader *rd, uint64_t addr)
{
	struct vm *vm = rd->vm;
	count(&vm->faults);
	struct region *r = find_region(vm, addr);
	if (!r) {
		/* Nothing to serve it from: the thread keeps waiting. */
		count(&vm->outside);
		return 0;
	}
	uint64_t p = (addr - r->start) / r->psize, dst = r->start + p * r->psize, done = 0;
	int zero = 0;
	for (;;) {
		zero |= take_removed(r, p);
		const char *src = file + r->offset + p * r->psize;
		if (zero)
			src = r->psize == pg ? NULL : zeros;
		int e = install(vm->uffd, dst, dst + r->psize, src, r->psize, &done);
		if (e == 0) {
			if (zero)
				count(&vm->zeroed);
			return 0;
		}
		if (e == EAGAIN) {
			/* An event is pending: read it (or let another reader). */
			struct uffd_msg m;
			if (wait_msg(rd, &m, 1)) {
				if (m.event == UFFD_EVENT_PAGEFAULT)
					push_pending(rd, m.arg.pagefault.address);
				else
					apply_event(vm, &m);
			}
			continue;
		}
		if (zero)
			mark_removed(vm, dst, dst + r->psize);
		if (e == ESRCH)
			return -1;
		if (__atomic_fetch_add(&vm->errors, 1, __ATOMIC_RELAXED) == 0)
			fprintf(stderr, "%s: VM %d: resolve %#llx: %s\n", progname, vm->id, (unsigned long long)dst, strerror(e));
		return 0;
	}
}

static void reader_cleanup(void *arg)
{
	struct reader *r = arg;
	if (r->have_timer)
		timer_delete(r->timer);
	r->have_timer = 0;
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	if (pin)
		pin_thread(cpus[r->i % ncpus]);
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGUSR1;
	sev.sigev_notify_thread_id = gettid();
	r->have_timer = timer_create(CLOCK_MONOTONIC, &sev, &r->timer) == 0;
	pthread_cleanup_push(reader_cleanup, r);
	for (int gone = 0; !gone;) {
		struct uffd_msg m;
		if (!wait_msg(r, &m, 0))
			continue;
		if (m.event == UFFD_EVENT_PAGEFAULT)
			gone = serve(r, m.arg.pagefault.address) < 0;
		else
			apply_event(r->vm, &m);
		while (!gone && r->head < r->tail)
			gone = serve(r, r->pending[r->head++]) < 0;
		r->head = r->tail = 0;
	}
	pthread_cleanup_pop(1);
	return NULL;
}

/* The handshake. */

static const char *skip_ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

struct rawreg {
	uint64_t v[5];
	int have[5];
};
static const char *fields[5] = { "base_host_virt_addr", "size", "offset", "page_size", "page_size_kib" };

/* parse_mappings decodes the JSON array into vm's regions; it returns NULL
 * or what is wrong. */
static const char *parse_mappings(const char *p, const char *e, struct rawreg *out, int *n)
{
	*n = 0;
	p = skip_ws(p, e);
	if (p == e || *p++ != '[')
		return "not a JSON array";
	p = skip_ws(p, e);
	if (p < e && *p == ']')
		return "no regions";
	for (;;) {
		if (*n == MAXREG)
			return "too many regions";
		struct rawreg *r = &out[(*n)++];
		memset(r, 0, sizeof *r);
		p = skip_ws(p, e);
		if (p == e || *p++ != '{')
			return "not an array of objects";
		for (;;) {
			p = skip_ws(p, e);
			if (p == e || *p++ != '"')
				return "expected a field name";
			const char *k = p;
			while (p < e && *p != '"' && *p != '\\')
				p++;
			if (p == e || *p != '"')
				return "bad field name";
			size_t klen = (size_t)(p++ - k);
			p = skip_ws(p, e);
			if (p == e || *p++ != ':')
				return "expected ':'";
			p = skip_ws(p, e);
			if (p == e || *p < '0' || *p > '9')
				return "a field that is not a non-negative integer";
			uint64_t v = 0;
			for (; p < e && *p >= '0' && *p <= '9'; p++) {
				if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
					return "an integer out of range";
				v = v * 10 + (uint64_t)(*p - '0');
			}
			if (p < e && (*p == '.' || *p == 'e' || *p == 'E'))
				return "a field that is not an integer";
			for (int f = 0; f < 5; f++)
				if (strlen(fields[f]) == klen && !memcmp(fields[f], k, klen)) {
					if (r->have[f])
						return "a duplicate field";
					r->v[f] = v;
					r->have[f] = 1;
				}
			p = skip_ws(p, e);
			if (p < e && *p == ',') {
				p++;
				continue;
			}
			if (p < e && *p == '}') {
				p++;
				break;
			}
			return "expected ',' or '}'";
		}
		p = skip_ws(p, e);
		if (p < e && *p == ',') {
			p++;
			continue;
		}
		if (p < e && *p == ']')
			return NULL;
		return "expected ',' or ']'";
	}
}

/* message_end returns the length of the JSON value at the start of b
 * once it is complete (brackets balanced outside strings), or 0. */
static size_t message_end(const char *b, size_t n)
{
	int depth = 0, in_str = 0, esc = 0, started = 0;
	for (size_t i = 0; i < n; i++) {
		char c = b[i];
		if (in_str) {
			if (esc)
				esc = 0;
			else if (c == '\\')
				esc = 1;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		if (c == '"')
			in_str = 1;
		else if (c == '[' || c == '{')
			depth++, started = 1;
		else if (c == ']' || c == '}') {
			if (--depth == 0 && started)
				return i + 1;
		} else if (!started && c != ' ' && c != '\t' && c != '\n' && c != '\r')
			return i + 1; /* not an array: let the parser say so */
	}
	return 0;
}

static int is_userfaultfd(int fd)
{
	char path[64], link[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n < 0)
		return 0;
	link[n] = 0;
	return !strcmp(link, "anon_inode:[userfaultfd]");
}

/* handshake reads and checks a VM's message; it returns NULL or the reason
 * to reject the connection, with detail. */
static const char *handshake(struct vm *vm, char *detail, size_t dlen)
{
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(vm->conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	char *buf = malloc(MAXMSG);
	if (!buf)
		die("malloc");
	size_t n = 0, end = 0;
	int fds[4], nfds = 0;
	const char *why = NULL;
	while (!(end = message_end(buf, n))) {
		if (n == MAXMSG) {
			why = "too_large";
			break;
		}
		ssize_t k = recv_fds(vm->conn, buf + n, MAXMSG - n, fds, 4, &nfds);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			why = "timeout";
			break;
		}
		if (k <= 0) {
			why = "truncated";
			break;
		}
		n += (size_t)k;
	}
	struct rawreg raw[MAXREG];
	int nraw = 0;
	if (!why && nfds != 1) {
		why = "fd";
		snprintf(detail, dlen, "%d descriptors, want one", nfds);
	}
	if (!why && !is_userfaultfd(fds[0])) {
		why = "fd";
		snprintf(detail, dlen, "not a userfaultfd");
	}
	const char *perr;
	if (!why && (perr = parse_mappings(buf, buf + end, raw, &nraw))) {
		why = "json";
		snprintf(detail, dlen, "%s", perr);
	}
	if (!why && skip_ws(buf + end, buf + n) != buf + n) {
		why = "trailing";
		snprintf(detail, dlen, "%zu bytes after the JSON array", n - end);
	}
	for (int i = 0; !why && i < nraw; i++) {
		struct rawreg *r = &raw[i];
		struct region *g = &vm->reg[i];
		if (!r->have[0] || !r->have[1] || !r->have[2]) {
			why = "json";
			snprintf(detail, dlen, "region %d lacks base_host_virt_addr, size or offset", i);
			break;
		}
		g->start = r->v[0], g->len = r->v[1], g->offset = r->v[2];
		g->psize = r->have[3] ? r->v[3] : r->have[4] ? r->v[4] : pg;
		if ((r->have[3] && r->have[4] && r->v[3] != r->v[4]) || (g->psize != pg && g->psize != HUGE_PAGE)) {
			why = "page_size";
			snprintf(detail, dlen, "region %d: page size %llu", i, (unsigned long long)g->psize);
			break;
		}
		if (!g->len || g->start % g->psize || g->len % g->psize || g->offset % pg || g->offset > file_size ||
		    g->len > file_size - g->offset || g->start + g->len < g->start) {
			why = "region";
			snprintf(detail, dlen, "region %d: [%#llx, +%#llx) offset %#llx: empty, misaligned or outside the %zu-byte file", i,
				 (unsigned long long)g->start, (unsigned long long)g->len, (unsigned long long)g->offset, file_size);
			break;
		}
		for (int j = 0; j < i; j++)
			if (g->start < vm->reg[j].start + vm->reg[j].len && vm->reg[j].start < g->start + g->len) {
				why = "region";
				snprintf(detail, dlen, "regions %d and %d overlap", j, i);
			}
	}
	free(buf);
	if (why) {
		for (int i = 0; i < nfds && i < 4; i++)
			close(fds[i]);
		return why;
	}
	vm->nreg = nraw;
	vm->uffd = fds[0];
	return NULL;
}

static void *vm_main(void *arg)
{
	struct vm *vm = arg;
	char detail[256] = "";
	const char *why = handshake(vm, detail, sizeof detail);
	if (why) {
		fprintf(stderr, "%s: connection %d rejected reason=%s: %s\n", progname, vm->id, why, detail);
		close(vm->conn);
		free(vm);
		return NULL;
	}
	struct ucred cred = { 0 };
	socklen_t cl = sizeof cred;
	getsockopt(vm->conn, SOL_SOCKET, SO_PEERCRED, &cred, &cl);
	vm->pid = cred.pid;
	uint64_t bytes = 0;
	for (int i = 0; i < vm->nreg; i++) {
		bytes += vm->reg[i].len;
		vm->reg[i].removed = calloc((vm->reg[i].len / vm->reg[i].psize + 63) / 64, sizeof(uint64_t));
		if (!vm->reg[i].removed)
			die("calloc");
	}
	make_blocking(vm->uffd);
	vm->readers = calloc((size_t)nreaders, sizeof *vm->readers);
	if (!vm->readers)
		die("calloc");
	for (int i = 0; i < nreaders; i++) {
		vm->readers[i] = (struct reader){ .vm = vm, .i = i };
		int e = pthread_create(&vm->readers[i].thread, NULL, reader_main, &vm->readers[i]);
		if (e) {
			errno = e;
			die("pthread_create");
		}
	}
	fprintf(stderr, "%s: VM %d connected pid=%d regions=%d bytes=%llu\n", progname, vm->id, (int)vm->pid, vm->nreg,
		(unsigned long long)bytes);
	/* Firecracker sends nothing more: the end of the stream is its exit. */
	char b[64];
	for (;;) {
		ssize_t k = read(vm->conn, b, sizeof b);
		if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
			break;
	}
	for (int i = 0; i < nreaders; i++)
		pthread_cancel(vm->readers[i].thread);
	for (int i = 0; i < nreaders; i++) {
		pthread_join(vm->readers[i].thread, NULL);
		free(vm->readers[i].pending);
	}
	fprintf(stderr, "%s: VM %d ended faults=%llu zeroed=%llu removes=%llu outside=%llu errors=%llu\n", progname, vm->id,
		(unsigned long long)load(&vm->faults), (unsigned long long)load(&vm->zeroed), (unsigned long long)load(&vm->removes),
		(unsigned long long)load(&vm->outside), (unsigned long long)load(&vm->errors));
	close(vm->uffd);
	close(vm->conn);
	for (int i = 0; i < vm->nreg; i++)
		free(vm->reg[i].removed);
	free(vm->readers);
	free(vm);
	return NULL;
}

static __attribute__((noreturn)) void usage(const char *why)
{
	fatal(2, "bad arguments: %s\nusage: fchandler -s SOCKET -m MEMFILE [-n READERS] [-P]", why);
}

int main(int argc, char **argv)
{
	progname = "fchandler";
	pg = (size_t)sysconf(_SC_PAGESIZE);
	const char *sock = NULL, *mem = NULL;
	int o;
	while ((o = getopt(argc, argv, "s:m:n:P")) != -1) {
		switch (o) {
		case 's': sock = optarg; break;
		case 'm': mem = optarg; break;
		case 'n': {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (end == optarg || *end || v < 0 || v > MAXT)
				usage("-n: want 0 (one per allowed CPU) to 64 readers");
			nreaders = (int)v;
			break;
		}
		case 'P': pin = 0; break;
		default: usage("unknown option");
		}
	}
	if (!sock || !mem || optind != argc)
		usage("want -s SOCKET and -m MEMFILE, no operands");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(sock) >= sizeof sa.sun_path)
		fatal(2, "socket path %s: longer than %zu bytes", sock, sizeof sa.sun_path - 1);
	strcpy(sa.sun_path, sock);

	int fd = open(mem, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		die(mem);
	file_size = (size_t)st.st_size;
	if (file_size == 0)
		fatal(1, "%s: empty memory file", mem);
	file = mmap(NULL, file_size, PROT_READ, MAP_SHARED, fd, 0);
	if (file == MAP_FAILED)
		die("mmap memory file");
	close(fd);
	zeros = mmap(NULL, HUGE_PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (zeros == MAP_FAILED)
		die("mmap zeroes");

	ncpus = allowed_cpus(cpus, CPU_SETSIZE);
	if (nreaders == 0)
		nreaders = ncpus < MAXT ? ncpus : MAXT;
	struct sigaction sa_usr = { .sa_handler = on_signal }; /* no SA_RESTART: a bounded read ends with EINTR */
	sigemptyset(&sa_usr.sa_mask);
	if (sigaction(SIGUSR1, &sa_usr, NULL))
		die("sigaction");
	signal(SIGPIPE, SIG_IGN);

	int ln = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ln < 0)
		die("socket");
	if (bind(ln, (struct sockaddr *)&sa, sizeof sa))
		die(sock);
	if (listen(ln, 128))
		die("listen");
	fprintf(stderr, "%s: serving %s readers=%d pinned=%s\n", progname, sock, nreaders, pin ? "yes" : "no");
	for (;;) {
		int c = accept4(ln, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
				continue;
			die("accept");
		}
		struct vm *vm = calloc(1, sizeof *vm);
		if (!vm)
			die("calloc");
		vm->id = ++next_id;
		vm->conn = c;
		vm->uffd = -1;
		pthread_t t;
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		int e = pthread_create(&t, &at, vm_main, vm);
		pthread_attr_destroy(&at);
		if (e) {
			errno = e;
			die("pthread_create");
		}
	}
}
