/* log.h: the member's log, one structured line per event worth an operator's attention
 * (design.md, "Conventions toward users"; nothing is logged per request at the default level).
 *
 * FORMAT. One line per event, fields separated by one space:
 *
 *   2026-11-28T09:30:00.123Z INFO  member=default event=elected term=3 leader=8e9e05c52164694d
 *
 *   - the time in UTC with milliseconds (RFC 3339, always 24 bytes);
 *   - the level, DEBUG, INFO, WARN or ERROR, padded to 5 bytes;
 *   - member=<name> when srv_log_set_member() was called, then event=<event>;
 *   - the fields, key=value, in the order they were added.
 * A key (and the event) keeps only [A-Za-z0-9_.-], other bytes become '_'; an empty key is "_".
 * A value is written bare when it is non-empty printable ASCII without space, '"', '=' or '\';
 * otherwise it is quoted: "..." with \" \\ \n \r \t, \xHH for other control bytes and for bytes
 * that are not valid UTF-8 (valid UTF-8 is copied as is). So a line never contains a newline
 * but its last byte, a field never contains an unquoted space, and `grep event=elected` or
 * splitting on spaces outside quotes is enough to read the log.
 *
 * BOUNDS. A line is at most SRV_LOG_LINE_MAX bytes with its newline; nothing is allocated.
 * A line that would be longer is cut at a field or character boundary (never inside an escape
 * or a UTF-8 sequence): the cut value ends with "..." (inside the quotes when quoted), later
 * fields are dropped, and the line ends with the field truncated=true.
 *
 * OUTPUT. Each line goes out in one write(2) to the log fd (stderr by default); lines are at
 * most PIPE_BUF (4096 on Linux) bytes, so lines from the loop thread and the storage thread
 * never interleave, even into a pipe. A failed or short write is not reported (retried on
 * EINTR and for the rest of a short write): logging never stops the member.
 *
 * LEVELS. One global threshold: lines below it cost one atomic load. PANIC and FATAL (accepted
 * from etcd's --log-level) mean ERROR, both as a threshold and as the level of a line.
 *
 * THREADS. srv_log_begin() ... srv_log_end() and srv_log() may run on any thread, at any time.
 * srv_log_set_level() and srv_log_set_fd() are atomic and may run at any time;
 * srv_log_set_member() and srv_log_set_clock() must run before other threads log (at start). */
#ifndef CAIRN_SERVER_LOG_H
#define CAIRN_SERVER_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h" /* enum srv_log_level */

#ifndef SRV_API
#define SRV_API __attribute__((visibility("default")))
#endif

/* Bytes in one line, newline included: PIPE_BUF on Linux, so one write(2) is atomic. */
#define SRV_LOG_LINE_MAX 4096
/* Bytes kept of a member name (longer names are cut). */
#define SRV_LOG_MEMBER_MAX 128

/* One line being built. Lives on the caller's stack (about 4 KiB); owns nothing. Fill it with
 * srv_log_begin(), any number of field calls, then srv_log_end(), which writes it. When the
 * level is below the threshold every call is a no-op. */
struct srv_log_line {
	char buf[SRV_LOG_LINE_MAX];
	size_t len;
	bool on;        /* the level passes the threshold */
	bool truncated; /* a field did not fit: later fields are dropped */
};

/* The threshold: lines below it are dropped. Default SRV_LOG_INFO. */
SRV_API void srv_log_set_level(enum srv_log_level level);
SRV_API enum srv_log_level srv_log_get_level(void);
/* Whether a line at level would be written (to skip costly formatting). */
SRV_API bool srv_log_enabled(enum srv_log_level level);

/* Where lines go: a file descriptor the caller keeps open. Default 2 (stderr). */
SRV_API void srv_log_set_fd(int fd);

/* The member name written as member=<name> on every line; NULL or "" for none (the default).
 * Copied (at most SRV_LOG_MEMBER_MAX - 1 bytes). */
SRV_API void srv_log_set_member(const char *name);

/* The clock of the timestamps, for tests; NULL restores clock_gettime(CLOCK_REALTIME). */
SRV_API void srv_log_set_clock(void (*now)(struct timespec *ts));

/* Start a line at level for event (e.g. "elected", "snapshot-saved"). */
SRV_API void srv_log_begin(struct srv_log_line *l, enum srv_log_level level, const char *event);

/* Fields. key and value are copied into the line; NULL value is written as "(null)". */
SRV_API void srv_log_str(struct srv_log_line *l, const char *key, const char *value);
/* n bytes of p, e.g. a key of the store (need not be NUL-terminated or text). */
SRV_API void srv_log_mem(struct srv_log_line *l, const char *key, const void *p, size_t n);
SRV_API void srv_log_u64(struct srv_log_line *l, const char *key, uint64_t v);
SRV_API void srv_log_i64(struct srv_log_line *l, const char *key, int64_t v);
/* 16 lower-case hex digits, as etcd prints member and cluster ids. */
SRV_API void srv_log_hex(struct srv_log_line *l, const char *key, uint64_t v);
SRV_API void srv_log_bool(struct srv_log_line *l, const char *key, bool v);
/* A value formatted by printf rules (at most SRV_LOG_LINE_MAX bytes of it), then quoted as
 * any other value. */
SRV_API void srv_log_fmt(struct srv_log_line *l, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* End the line (the truncation marker and the newline) and write it. */
SRV_API void srv_log_end(struct srv_log_line *l);

/* One line with string fields, as key, value pairs ending with NULL:
 *   srv_log(SRV_LOG_WARN, "config", "warning", msg, NULL);
 * A NULL where a value belongs ends the list, the key written as key=!MISSING (so a NULL value
 * or an odd count shows in the line instead of reading past the arguments). */
SRV_API void srv_log(enum srv_log_level level, const char *event, ...) __attribute__((sentinel));

#endif /* CAIRN_SERVER_LOG_H */
