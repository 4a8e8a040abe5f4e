/* powerloss_shim.c: an LD_PRELOAD library that logs what a process writes to
 * files named data.mdb (LMDB's data file) and when it syncs them, so that
 * test_mvcc_powerloss can rebuild what a power loss could leave on the disk.
 * Record format: powerloss_log.h; the log's path comes from PL_LOG_ENV.
 *
 * Intercepted: open, open64, openat, openat64 (a path whose last component is
 * data.mdb marks the descriptor), dup, dup2, dup3 and close (which follow it),
 * write and writev (logged at the descriptor's offset), pwrite, pwrite64,
 * pwritev, pwritev64, fsync, fdatasync, ftruncate, ftruncate64, mmap, mmap64
 * (a writable shared mapping is reported as PL_REC_BAD: writes through it are
 * invisible here) and msync. liblmdb 0.9.24 (Debian), under strace, creates
 * data.mdb with one 8 KiB pwrite of both meta pages, writes a commit's pages
 * with pwrite (a single page) or lseek + writev (a run of pages), syncs with
 * fdatasync and, under MDB_NOMETASYNC, writes the meta page with a 120-byte
 * pwrite (offset 32 or 4128) on the same descriptor. It also opens data.mdb a
 * second time with O_DSYNC, used for the meta page when meta syncs are on; a
 * write on such a descriptor is logged as a write and a sync.
 *
 * Each call runs first; a write that returned n > 0 is then logged with its
 * first n bytes, a sync that returned 0 with a marker, so a sync marker in
 * the log means every write logged before it was durable. Logging uses raw
 * system calls on a descriptor opened at load time: no allocation, no stdio,
 * no lock, errno preserved; a failed log write aborts the process (a silent
 * gap would make the images wrong). Descriptor state is a table of atomics,
 * and each record is one writev on an O_APPEND file, so records from several
 * threads never interleave. A sync covers the file, not the descriptor: the
 * shim assumes one data.mdb per process. Descriptors closed by paths the shim
 * does not see (glibc's internal closes) keep their mark until an intercepted
 * open reuses the number. */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE /* open() must stay a plain function to be replaced */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "powerloss_log.h"

#define SHIM_API __attribute__((visibility("default")))
#define SHIM_MAX_FD 4096
#define SHIM_MAX_IOV 128 /* LMDB writes at most 64 pages (MDB_COMMIT_PAGES) per writev */

enum { FD_DATA = 1, FD_DSYNC = 2 };

static _Atomic unsigned char fd_state[SHIM_MAX_FD];
static atomic_int log_fd = -1;
static atomic_bool writable_map; /* a writable shared mapping of data.mdb exists */

/* The next definitions of the intercepted functions (libc's, or a sanitizer's). */
static int (*next_open)(const char *, int, ...);
static int (*next_open64)(const char *, int, ...);
static int (*next_openat)(int, const char *, int, ...);
static int (*next_openat64)(int, const char *, int, ...);
static int (*next_close)(int);
static int (*next_dup)(int);
static int (*next_dup2)(int, int);
static int (*next_dup3)(int, int, int);
static ssize_t (*next_write)(int, const void *, size_t);
static ssize_t (*next_writev)(int, const struct iovec *, int);
static ssize_t (*next_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*next_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*next_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*next_pwritev64)(int, const struct iovec *, int, off64_t);
static int (*next_fsync)(int);
static int (*next_fdatasync)(int);
static int (*next_ftruncate)(int, off_t);
static int (*next_ftruncate64)(int, off64_t);
static void *(*next_mmap)(void *, size_t, int, int, int, off_t);
static void *(*next_mmap64)(void *, size_t, int, int, int, off64_t);
static int (*next_msync)(void *, size_t, int);
static atomic_bool resolved;

static void *next_sym(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);
	if (p == NULL) {
		abort(); /* every intercepted name exists in glibc */
	}
	return p;
}

/* Resolves the next definitions: at the first intercepted call, which may
 * come before this library's constructor (an ASan runtime starts from the
 * executable's preinit functions, before libc has set up the environment). */
static void resolve(void)
{
	if (atomic_load(&resolved)) {
		return;
	}
	next_open = (int (*)(const char *, int, ...))next_sym("open");
	next_open64 = (int (*)(const char *, int, ...))next_sym("open64");
	next_openat = (int (*)(int, const char *, int, ...))next_sym("openat");
	next_openat64 = (int (*)(int, const char *, int, ...))next_sym("openat64");
	next_close = (int (*)(int))next_sym("close");
	next_dup = (int (*)(int))next_sym("dup");
	next_dup2 = (int (*)(int, int))next_sym("dup2");
	next_dup3 = (int (*)(int, int, int))next_sym("dup3");
	next_write = (ssize_t(*)(int, const void *, size_t))next_sym("write");
	next_writev = (ssize_t(*)(int, const struct iovec *, int))next_sym("writev");
	next_pwrite = (ssize_t(*)(int, const void *, size_t, off_t))next_sym("pwrite");
	next_pwrite64 = (ssize_t(*)(int, const void *, size_t, off64_t))next_sym("pwrite64");
	next_pwritev = (ssize_t(*)(int, const struct iovec *, int, off_t))next_sym("pwritev");
	next_pwritev64 = (ssize_t(*)(int, const struct iovec *, int, off64_t))next_sym("pwritev64");
	next_fsync = (int (*)(int))next_sym("fsync");
	next_fdatasync = (int (*)(int))next_sym("fdatasync");
	next_ftruncate = (int (*)(int, off_t))next_sym("ftruncate");
	next_ftruncate64 = (int (*)(int, off64_t))next_sym("ftruncate64");
	next_mmap = (void *(*)(void *, size_t, int, int, int, off_t))next_sym("mmap");
	next_mmap64 = (void *(*)(void *, size_t, int, int, int, off64_t))next_sym("mmap64");
	next_msync = (int (*)(void *, size_t, int))next_sym("msync");
	atomic_store(&resolved, true);
}

/* Opens the log, at load time: the environment is readable from the
 * constructors on. Calls before it pass through unlogged (nothing opens
 * data.mdb that early). */
__attribute__((constructor)) static void shim_init(void)
{
	resolve();
	const char *path = getenv(PL_LOG_ENV);
	if (path != NULL && path[0] != 0) {
		long fd = syscall(SYS_openat, AT_FDCWD, path,
				  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0) {
			abort(); /* asked to log and cannot: say so loudly */
		}
		atomic_store(&log_fd, (int)fd);
	}
}

#define INIT()                                 \
	do {                                   \
		if (!atomic_load(&resolved)) { \
			resolve();             \
		}                              \
	} while (0)

static unsigned fd_mark_of(int fd)
{
	if (fd < 0 || fd >= SHIM_MAX_FD || atomic_load(&log_fd) < 0) {
		return 0;
	}
	return atomic_load(&fd_state[fd]);
}

static void fd_mark(int fd, unsigned st)
{
	if (fd >= 0 && fd < SHIM_MAX_FD) {
		atomic_store(&fd_state[fd], (unsigned char)st);
	}
}

/* Appends iov[0..n) to the log as one record (several writev calls only if
 * the kernel takes part of one). */
static void log_append(struct iovec *iov, int n)
{
	int fd = atomic_load(&log_fd);
	while (n > 0) {
		long k = syscall(SYS_writev, fd, iov, n);
		if (k < 0) {
			if (errno == EINTR) {
				continue;
			}
			abort();
		}
		size_t left = (size_t)k;
		while (n > 0 && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
}

static void log_mark(uint32_t type, uint64_t off)
{
	struct pl_rec h = { .magic = PL_MAGIC, .type = type, .off = off, .len = 0 };
	struct iovec v = { .iov_base = &h, .iov_len = sizeof h };
	log_append(&v, 1);
}

/* A write of `done` bytes (> 0) at `off`, the first `done` bytes of iov[0..n),
 * on a descriptor in state st. */
static void log_write(unsigned st, uint64_t off, const struct iovec *iov, int n, size_t done)
{
	struct pl_rec h = { .magic = PL_MAGIC, .type = PL_REC_WRITE, .off = off, .len = done };
	struct iovec v[SHIM_MAX_IOV + 1];
	if (n > SHIM_MAX_IOV) {
		log_mark(PL_REC_BAD, PL_BAD_IOV);
		return;
	}
	v[0].iov_base = &h;
	v[0].iov_len = sizeof h;
	int m = 1;
	for (int i = 0; i < n && done > 0; i++) {
		size_t len = iov[i].iov_len < done ? iov[i].iov_len : done;
		v[m].iov_base = iov[i].iov_base;
		v[m].iov_len = len;
		m++;
		done -= len;
	}
	log_append(v, m);
	if (st & FD_DSYNC) {
		log_mark(PL_REC_SYNC, 0);
	}
}

static bool is_data_path(const char *path)
{
	if (path == NULL) {
		return false;
	}
	const char *base = strrchr(path, '/');
	return strcmp(base != NULL ? base + 1 : path, "data.mdb") == 0;
}

/* After an open that returned fd: mark it if it is data.mdb, clear any
 * stale mark otherwise. */
static int after_open(int fd, const char *path, int flags)
{
	if (fd < 0 || atomic_load(&log_fd) < 0) {
		return fd;
	}
	int e = errno;
	if (!is_data_path(path)) {
		fd_mark(fd, 0);
	} else if (fd >= SHIM_MAX_FD) {
		log_mark(PL_REC_BAD, PL_BAD_FD);
	} else {
		if (flags & O_APPEND) {
			log_mark(PL_REC_BAD, PL_BAD_APPEND);
		}
		fd_mark(fd, FD_DATA | ((flags & O_DSYNC) == O_DSYNC ? FD_DSYNC : 0u));
	}
	errno = e;
	return fd;
}

static mode_t open_mode(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, mode_t) : 0;
}

SHIM_API int open(const char *path, int flags, ...)
{
	INIT();
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	return after_open(next_open(path, flags, mode), path, flags);
}

SHIM_API int open64(const char *path, int flags, ...)
{
	INIT();
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	return after_open(next_open64(path, flags, mode), path, flags);
}

SHIM_API int openat(int dirfd, const char *path, int flags, ...)
{
	INIT();
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	return after_open(next_openat(dirfd, path, flags, mode), path, flags);
}

SHIM_API int openat64(int dirfd, const char *path, int flags, ...)
{
	INIT();
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	return after_open(next_openat64(dirfd, path, flags, mode), path, flags);
}

SHIM_API int close(int fd)
{
	INIT();
	fd_mark(fd, 0); /* before the number can be reused by another thread */
	return next_close(fd);
}

SHIM_API int dup(int fd)
{
	INIT();
	int nfd = next_dup(fd);
	if (nfd >= 0) {
		fd_mark(nfd, fd_mark_of(fd));
	}
	return nfd;
}

SHIM_API int dup2(int fd, int nfd)
{
	INIT();
	int rc = next_dup2(fd, nfd);
	if (rc >= 0) {
		fd_mark(rc, fd_mark_of(fd));
	}
	return rc;
}

SHIM_API int dup3(int fd, int nfd, int flags)
{
	INIT();
	int rc = next_dup3(fd, nfd, flags);
	if (rc >= 0) {
		fd_mark(rc, fd_mark_of(fd));
	}
	return rc;
}

/* The offset write/writev will write at (single writer per descriptor). */
static uint64_t cur_off(int fd)
{
	long pos = syscall(SYS_lseek, fd, 0L, SEEK_CUR);
	return pos < 0 ? 0 : (uint64_t)pos;
}

SHIM_API ssize_t write(int fd, const void *buf, size_t n)
{
	INIT();
	unsigned st = fd_mark_of(fd);
	uint64_t off = st ? cur_off(fd) : 0;
	ssize_t rc = next_write(fd, buf, n);
	if (st && rc > 0) {
		int e = errno;
		struct iovec v = { .iov_base = (void *)(uintptr_t)buf, .iov_len = (size_t)rc };
		log_write(st, off, &v, 1, (size_t)rc);
		errno = e;
	}
	return rc;
}

SHIM_API ssize_t writev(int fd, const struct iovec *iov, int n)
{
	INIT();
	unsigned st = fd_mark_of(fd);
	uint64_t off = st ? cur_off(fd) : 0;
	ssize_t rc = next_writev(fd, iov, n);
	if (st && rc > 0) {
		int e = errno;
		log_write(st, off, iov, n, (size_t)rc);
		errno = e;
	}
	return rc;
}

static ssize_t after_pwrite(int fd, const void *buf, ssize_t rc, int64_t off)
{
	unsigned st = fd_mark_of(fd);
	if (st && rc > 0) {
		int e = errno;
		struct iovec v = { .iov_base = (void *)(uintptr_t)buf, .iov_len = (size_t)rc };
		log_write(st, (uint64_t)off, &v, 1, (size_t)rc);
		errno = e;
	}
	return rc;
}

SHIM_API ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	INIT();
	return after_pwrite(fd, buf, next_pwrite(fd, buf, n, off), off);
}

SHIM_API ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	INIT();
	return after_pwrite(fd, buf, next_pwrite64(fd, buf, n, off), off);
}

static ssize_t after_pwritev(int fd, const struct iovec *iov, int n, ssize_t rc, int64_t off)
{
	unsigned st = fd_mark_of(fd);
	if (st && rc > 0) {
		int e = errno;
		log_write(st, (uint64_t)off, iov, n, (size_t)rc);
		errno = e;
	}
	return rc;
}

SHIM_API ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	INIT();
	return after_pwritev(fd, iov, n, next_pwritev(fd, iov, n, off), off);
}

SHIM_API ssize_t pwritev64(int fd, const struct iovec *iov, int n, off64_t off)
{
	INIT();
	return after_pwritev(fd, iov, n, next_pwritev64(fd, iov, n, off), off);
}

static int after_sync(int fd, int rc)
{
	if (rc == 0 && fd_mark_of(fd)) {
		int e = errno;
		log_mark(PL_REC_SYNC, 0);
		errno = e;
	}
	return rc;
}

SHIM_API int fsync(int fd)
{
	INIT();
	return after_sync(fd, next_fsync(fd));
}

SHIM_API int fdatasync(int fd)
{
	INIT();
	return after_sync(fd, next_fdatasync(fd));
}

static int after_truncate(int fd, int rc, int64_t len)
{
	if (rc == 0 && fd_mark_of(fd)) {
		int e = errno;
		log_mark(PL_REC_SIZE, (uint64_t)len);
		errno = e;
	}
	return rc;
}

SHIM_API int ftruncate(int fd, off_t len)
{
	INIT();
	return after_truncate(fd, next_ftruncate(fd, len), len);
}

SHIM_API int ftruncate64(int fd, off64_t len)
{
	INIT();
	return after_truncate(fd, next_ftruncate64(fd, len), len);
}

static void *after_mmap(void *p, int prot, int flags, int fd)
{
	if (p != MAP_FAILED && (prot & PROT_WRITE) && (flags & MAP_SHARED) && fd_mark_of(fd)) {
		int e = errno;
		atomic_store(&writable_map, true);
		log_mark(PL_REC_BAD, PL_BAD_MAP);
		errno = e;
	}
	return p;
}

SHIM_API void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	INIT();
	return after_mmap(next_mmap(addr, len, prot, flags, fd, off), prot, flags, fd);
}

SHIM_API void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
	INIT();
	return after_mmap(next_mmap64(addr, len, prot, flags, fd, off), prot, flags, fd);
}

/* Only a writable mapping of data.mdb (already reported as bad) can make an
 * msync matter to it; the marker keeps the log's order of events complete. */
SHIM_API int msync(void *addr, size_t len, int flags)
{
	INIT();
	int rc = next_msync(addr, len, flags);
	if (rc == 0 && atomic_load(&writable_map)) {
		int e = errno;
		log_mark(PL_REC_SYNC, 0);
		errno = e;
	}
	return rc;
}
