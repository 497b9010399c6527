/* ref.h: what the C references of `uffd bench` share (refbench.c, the
 * workload of `uffd bench`; fchandler.c, a handler of Firecracker's
 * protocol): errors, the clock, the allowed CPUs, and installing pages.
 *
 * Each reference is one translation unit that includes this header first;
 * `uffd bench` compiles them with -O2 -Wall -Wextra -Werror -pthread.
 */
#ifndef UFFD_BENCH_REF_H
#define UFFD_BENCH_REF_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* progname prefixes every message; main sets it. */
static const char *progname = "ref";

/* die reports what failed with errno's text and exits 1. */
__attribute__((noreturn)) static inline void die(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", progname, what, strerror(errno));
	exit(1);
}

/* fatal reports a formatted message and exits with status code. */
__attribute__((noreturn, format(printf, 2, 3))) static inline void fatal(int code, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

/* now_ns is the monotonic clock in nanoseconds (one vDSO call). */
static inline uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* allowed_cpus lists the CPUs this process may run on, as
 * sched_getaffinity(2) reports them (taskset and cpusets honoured), in
 * ascending order, at most max of them; it returns how many. */
static inline int allowed_cpus(int *cpus, int max)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set))
		die("sched_getaffinity");
	int n = 0;
	for (int c = 0; c < CPU_SETSIZE && n < max; c++)
		if (CPU_ISSET(c, &set))
			cpus[n++] = c;
	return n;
}

/* pin_thread binds the calling thread to one CPU. */
static inline void pin_thread(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	int e = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
	if (e) {
		errno = e;
		die("pthread_setaffinity_np");
	}
}

/* make_blocking clears O_NONBLOCK on fd, so that read(2) waits in the
 * kernel. The flag belongs to the open file description, which a
 * descriptor received over a socket shares with its sender. */
static inline void make_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_NONBLOCK && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK)))
		die("fcntl(O_NONBLOCK)");
}

/* install resolves [dst, end) in the memory of the userfaultfd's process,
 * pages of size page: with UFFDIO_COPY from src (the bytes for dst), or
 * with UFFDIO_ZEROPAGE when src is NULL. A page that exists already
 * (EEXIST: another handler won the race) is skipped and its waiters woken.
 * *done counts the bytes of the range dealt with, so that a call after an
 * error continues where the last one stopped (start it at 0).
 *
 * It returns 0 once every page of the range is present and its waiters
 * woken, or the errno that stopped it: EAGAIN with nothing done (a
 * non-cooperative event is pending, mmap_changing: it must be read before
 * anything resolves), ESRCH (the process is gone), or another error. The
 * kernel's result field is bytes done or a negated errno: only a positive
 * value is progress. */
static inline int install(int uffd, uint64_t dst, uint64_t end, const char *src, uint64_t page, uint64_t *done)
{
	while (dst + *done < end) {
		uint64_t at = dst + *done, len = end - at;
		int64_t got;
		int rc;
		if (src) {
			struct uffdio_copy c = { .dst = at, .src = (uint64_t)(uintptr_t)(src + *done), .len = len, .mode = 0 };
			rc = ioctl(uffd, UFFDIO_COPY, &c);
			got = c.copy;
		} else {
			struct uffdio_zeropage z = { .range = { .start = at, .len = len }, .mode = 0 };
			rc = ioctl(uffd, UFFDIO_ZEROPAGE, &z);
			got = z.zeropage;
		}
		if (rc == 0) {
			*done = end - dst;
			return 0;
		}
		int e = errno;
		if (got > 0) {
			/* Partial (EAGAIN): the kernel woke what it installed. */
			*done += (uint64_t)got;
			continue;
		}
		if (e == EEXIST) {
			struct uffdio_range r = { .start = at, .len = page };
			ioctl(uffd, UFFDIO_WAKE, &r);
			*done += page;
			continue;
		}
		if (e == EINTR)
			continue;
		return e;
	}
	return 0;
}

/* send_fd writes len bytes of buf on the socket sock with fd attached
 * (SCM_RIGHTS), in one sendmsg(2). */
static inline int send_fd(int sock, const void *buf, size_t len, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	memset(&ctl, 0, sizeof ctl);
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	return n == (ssize_t)len ? 0 : -1;
}

/* recv_fds reads up to len bytes from sock into buf with recvmsg(2),
 * collecting the descriptors that came with them (close-on-exec) into fds
 * (at most maxfds; *nfds counts them, including any beyond maxfds, which
 * are closed). It returns recvmsg's result; control data the kernel had to
 * truncate shows as *nfds > maxfds. */
static inline ssize_t recv_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds)
{
	union {
		char buf[CMSG_SPACE(8 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf };
	ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return n;
	if (mh.msg_flags & MSG_CTRUNC)
		*nfds = maxfds + 1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (*nfds < maxfds)
				fds[*nfds] = fd;
			else
				close(fd);
			(*nfds)++;
		}
	}
	return n;
}

/* read_full reads exactly len bytes (0), or fails at end of file or on an
 * error (-1). */
static inline int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* write_full writes all of buf (0) or fails (-1). */
static inline int write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

#endif
