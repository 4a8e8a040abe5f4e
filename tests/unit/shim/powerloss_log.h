/* powerloss_log.h: the record format of the log that powerloss_shim.c (an
 * LD_PRELOAD library) writes and test_mvcc_powerloss.c reads back to build
 * the images a power loss could leave of data.mdb.
 *
 * The log is a sequence of records in the order the calls returned, each a
 * header, then for PL_REC_WRITE `len` bytes of data. A record is appended
 * with one writev(2) on an O_APPEND descriptor, so a process killed with
 * SIGKILL leaves every record it finished and at most one cut short at the
 * end (the reader drops it: the call it describes had returned, but nothing
 * after it ran, so no sync can have covered it). */
#ifndef CAIRN_TEST_POWERLOSS_LOG_H
#define CAIRN_TEST_POWERLOSS_LOG_H

#include <stdint.h>

/* The environment variable naming the log file; unset: the shim only passes
 * calls through. */
#define PL_LOG_ENV "CAIRN_POWERLOSS_LOG"
#define PL_MAGIC 0x504c4f47u /* "PLOG" */

enum pl_rec_type {
	PL_REC_WRITE = 1, /* `len` bytes written at file offset `off` (data follows) */
	PL_REC_SYNC = 2,  /* fsync/fdatasync/msync returned 0: all earlier writes are durable */
	PL_REC_SIZE = 3,  /* ftruncate to `off` bytes returned 0 */
	/* The log cannot be trusted: a descriptor beyond the shim's table, an
	 * O_APPEND descriptor, or a writable shared mapping (writes through it
	 * are invisible to the shim). `off` names the reason (enum pl_bad). */
	PL_REC_BAD = 4,
};

enum pl_bad { PL_BAD_FD = 1, PL_BAD_APPEND = 2, PL_BAD_MAP = 3, PL_BAD_IOV = 4 };

struct pl_rec {
	uint32_t magic;
	uint32_t type; /* enum pl_rec_type */
	uint64_t off;
	uint64_t len;
};

_Static_assert(sizeof(struct pl_rec) == 24, "the log header has no padding");

#endif /* CAIRN_TEST_POWERLOSS_LOG_H */
