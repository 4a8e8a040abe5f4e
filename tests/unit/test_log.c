/* test_log.c: the member's log lines (server/log.h): the exact format with a fixed clock,
 * levels and the threshold, quoting and escaping, UTF-8, the line bound and its truncation
 * marker, and one write(2) per line (read back from a pipe). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define STAMP "2026-11-28T09:30:00.123Z "

static int g_pipe[2] = { -1, -1 };
static char g_out[4 * SRV_LOG_LINE_MAX];

/* 2026-11-28T09:30:00.123456789Z: milliseconds are cut, not rounded. */
static void fixed_clock(struct timespec *ts)
{
	ts->tv_sec = 1795858200;
	ts->tv_nsec = 123456789;
}

static int setup(void **state)
{
	(void)state;
	if (pipe(g_pipe) != 0) {
		return -1;
	}
	/* Non-blocking read end: drain() stops when the pipe is empty. */
	if (fcntl(g_pipe[0], F_SETFL, O_NONBLOCK) != 0) {
		return -1;
	}
	srv_log_set_fd(g_pipe[1]);
	srv_log_set_clock(fixed_clock);
	srv_log_set_level(SRV_LOG_INFO);
	srv_log_set_member(NULL);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	srv_log_set_fd(2);
	srv_log_set_clock(NULL);
	srv_log_set_member(NULL);
	srv_log_set_level(SRV_LOG_INFO);
	close(g_pipe[0]);
	close(g_pipe[1]);
	return 0;
}

/* Everything written since the last drain, NUL-terminated in g_out; its length. Also counts
 * the read(2) calls needed, each of which returns what one or more write(2) calls put in. */
static size_t drain(void)
{
	size_t len = 0;
	for (;;) {
		ssize_t n = read(g_pipe[0], g_out + len, sizeof g_out - 1 - len);
		if (n <= 0) {
			assert_true(n == 0 || errno == EAGAIN);
			break;
		}
		len += (size_t)n;
		assert_true(len < sizeof g_out - 1);
	}
	g_out[len] = '\0';
	return len;
}

static void expect(const char *want)
{
	drain();
	assert_string_equal(g_out, want);
}

static void format_exact(void **state)
{
	(void)state;
	srv_log_set_member("default");
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "elected");
	srv_log_u64(&l, "term", 3);
	srv_log_hex(&l, "leader", 0x8e9e05c52164694dull);
	srv_log_end(&l);
	expect(STAMP "INFO  member=default event=elected term=3 leader=8e9e05c52164694d\n");

	srv_log_begin(&l, SRV_LOG_WARN, "slow-disk");
	srv_log_i64(&l, "delta", -12);
	srv_log_bool(&l, "synced", true);
	srv_log_hex(&l, "id", 1);
	srv_log_fmt(&l, "took", "%d.%03ds", 1, 5);
	srv_log_end(&l);
	expect(STAMP "WARN  member=default event=slow-disk delta=-12 synced=true "
		     "id=0000000000000001 took=1.005s\n");
}

static void no_member(void **state)
{
	(void)state;
	srv_log(SRV_LOG_ERROR, "wal-corrupt", "file", "wal/0000000000000001.wal", NULL);
	expect(STAMP "ERROR event=wal-corrupt file=wal/0000000000000001.wal\n");
}

static void levels(void **state)
{
	(void)state;
	srv_log(SRV_LOG_DEBUG, "dropped", NULL);
	expect("");
	assert_false(srv_log_enabled(SRV_LOG_DEBUG));
	assert_true(srv_log_enabled(SRV_LOG_INFO));

	srv_log_set_level(SRV_LOG_DEBUG);
	assert_int_equal(srv_log_get_level(), SRV_LOG_DEBUG);
	srv_log(SRV_LOG_DEBUG, "kept", NULL);
	expect(STAMP "DEBUG event=kept\n");

	srv_log_set_level(SRV_LOG_WARN);
	srv_log(SRV_LOG_INFO, "dropped", NULL);
	srv_log(SRV_LOG_WARN, "w", NULL);
	srv_log(SRV_LOG_ERROR, "e", NULL);
	expect(STAMP "WARN  event=w\n" STAMP "ERROR event=e\n");

	/* etcd's panic and fatal levels: an error threshold, and lines written as ERROR. */
	srv_log_set_level(SRV_LOG_FATAL);
	assert_int_equal(srv_log_get_level(), SRV_LOG_ERROR);
	srv_log(SRV_LOG_WARN, "dropped", NULL);
	srv_log(SRV_LOG_ERROR, "e", NULL);
	srv_log(SRV_LOG_PANIC, "p", NULL);
	srv_log(SRV_LOG_FATAL, "f", NULL);
	expect(STAMP "ERROR event=e\n" STAMP "ERROR event=p\n" STAMP "ERROR event=f\n");
	srv_log_set_level(SRV_LOG_PANIC);
	assert_int_equal(srv_log_get_level(), SRV_LOG_ERROR);

	/* A disabled line: every call is a no-op, and end writes nothing. */
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "off");
	srv_log_str(&l, "k", "v");
	srv_log_fmt(&l, "f", "%s", "x");
	srv_log_end(&l);
	expect("");
}

static void quoting(void **state)
{
	(void)state;
	srv_log(SRV_LOG_INFO, "q", "plain", "a-b_c.d/e:f,g", "space", "two words", "empty", "",
		"quote", "say \"hi\"", "backslash", "a\\b", "equals", "a=b", NULL);
	expect(STAMP "INFO  event=q plain=a-b_c.d/e:f,g space=\"two words\" empty=\"\" "
		     "quote=\"say \\\"hi\\\"\" backslash=\"a\\\\b\" equals=\"a=b\"\n");

	srv_log(SRV_LOG_INFO, "ctl", "v", "l1\nl2\r\tx\x01\x7f", NULL);
	expect(STAMP "INFO  event=ctl v=\"l1\\nl2\\r\\tx\\x01\\x7f\"\n");

	/* Valid UTF-8 is copied; invalid bytes (a lone continuation byte, an overlong form, a
	 * surrogate, a cut sequence) are escaped byte by byte. */
	srv_log(SRV_LOG_INFO, "utf8", "ok", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "bad",
		"\x80|\xc0\xaf|\xed\xa0\x80|\xe2\x82", NULL);
	expect(STAMP "INFO  event=utf8 ok=\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\" "
		     "bad=\"\\x80|\\xc0\\xaf|\\xed\\xa0\\x80|\\xe2\\x82\"\n");

	/* A non-ASCII value is always quoted, even without spaces. */
	srv_log(SRV_LOG_INFO, "u", "name", "n\xc3\xb8", NULL);
	expect(STAMP "INFO  event=u name=\"n\xc3\xb8\"\n");

	/* Bytes from the store, with a NUL inside. */
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "key");
	srv_log_mem(&l, "key", "a\0b", 3);
	srv_log_mem(&l, "none", NULL, 5);
	srv_log_str(&l, "null", NULL);
	srv_log_end(&l);
	expect(STAMP "INFO  event=key key=\"a\\x00b\" none=\"\" null=(null)\n");
}

static void keys_and_events(void **state)
{
	(void)state;
	srv_log_set_member("node 1");
	srv_log(SRV_LOG_INFO, "bad event!", "a key", "v", "", "w", "k=\"", "x", NULL);
	expect(STAMP "INFO  member=\"node 1\" event=bad_event_ a_key=v _=w k__=x\n");

	srv_log(SRV_LOG_INFO, "", NULL);
	expect(STAMP "INFO  member=\"node 1\" event=_\n");

	/* A NULL value ends the list and shows. */
	srv_log(SRV_LOG_INFO, "odd", "a", "1", "b", NULL);
	expect(STAMP "INFO  member=\"node 1\" event=odd a=1 b=!MISSING\n");
}

static void assert_ends_with(size_t len, const char *tail)
{
	size_t n = strlen(tail);
	assert_true(len >= n);
	assert_string_equal(g_out + len - n, tail);
}

/* Checks what every line must be: at most SRV_LOG_LINE_MAX bytes, one newline, at the end. */
static void check_line(size_t len)
{
	assert_true(len <= SRV_LOG_LINE_MAX);
	assert_int_equal(g_out[len - 1], '\n');
	assert_ptr_equal(strchr(g_out, '\n'), g_out + len - 1);
}

static void truncation(void **state)
{
	(void)state;
	static char big[3 * SRV_LOG_LINE_MAX];

	/* A bare value: cut with "...", later fields dropped, the marker at the end. */
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	srv_log(SRV_LOG_INFO, "big", "a", "1", "v", big, "after", "dropped", NULL);
	size_t len = drain();
	check_line(len);
	assert_true(len > SRV_LOG_LINE_MAX - 32);
	assert_memory_equal(g_out, STAMP "INFO  event=big a=1 v=xxx", 36);
	assert_ends_with(len, "x... truncated=true\n");
	assert_null(strstr(g_out, "after"));

	/* A quoted value: cut at a character, closed with ..." so the line still parses. */
	memset(big, ' ', sizeof big - 1);
	srv_log(SRV_LOG_INFO, "big", "v", big, NULL);
	len = drain();
	check_line(len);
	assert_ends_with(len, "  ...\" truncated=true\n");

	/* Escapes and UTF-8 sequences are never split: fill with 4-byte escapes and 3-byte
	 * characters, and check the text before "..." ends on a whole one. */
	for (size_t i = 0; i + 1 < sizeof big; i++) {
		big[i] = '\x01';
	}
	srv_log(SRV_LOG_INFO, "big", "v", big, NULL);
	len = drain();
	check_line(len);
	assert_ends_with(len, "...\" truncated=true\n");
	const char *cut = g_out + len - 20;
	assert_memory_equal(cut - 4, "\\x01", 4);
	const char *first = strstr(g_out, "v=\"") + 3;
	assert_int_equal((size_t)(cut - first) % 4, 0);

	for (size_t i = 0; i + 3 < sizeof big; i += 3) {
		memcpy(big + i, "\xe2\x82\xac", 3);
	}
	big[(sizeof big - 1) / 3 * 3] = '\0';
	srv_log(SRV_LOG_INFO, "big", "v", big, NULL);
	len = drain();
	check_line(len);
	assert_ends_with(len, "...\" truncated=true\n");
	cut = g_out + len - 20;
	first = strstr(g_out, "v=\"") + 3;
	assert_int_equal((size_t)(cut - first) % 3, 0);
	assert_memory_equal(cut - 3, "\xe2\x82\xac", 3);

	/* A formatted value longer than any line. */
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "fmt");
	srv_log_fmt(&l, "v", "%s%s", big, big);
	srv_log_u64(&l, "dropped", 1);
	srv_log_end(&l);
	len = drain();
	check_line(len);
	assert_ends_with(len, "...\" truncated=true\n");
	assert_null(strstr(g_out, "dropped"));

	/* A field whose key no longer fits is dropped whole. */
	memset(big, 'y', SRV_LOG_LINE_MAX - 80);
	big[SRV_LOG_LINE_MAX - 80] = '\0';
	static char longkey[100];
	memset(longkey, 'k', sizeof longkey - 1);
	srv_log(SRV_LOG_INFO, "k", "v", big, longkey, "1", NULL);
	len = drain();
	check_line(len);
	assert_ends_with(len, "y truncated=true\n");
	assert_null(strstr(g_out, "kkk"));
}

/* Each line is one write(2): a line of the maximum size arrives in one read from a pipe. */
static void one_write_per_line(void **state)
{
	(void)state;
	static char big[SRV_LOG_LINE_MAX];
	memset(big, 'z', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	srv_log(SRV_LOG_INFO, "w", "v", big, NULL);
	ssize_t n = read(g_pipe[0], g_out, sizeof g_out);
	assert_true(n > 0);
	assert_true((size_t)n <= SRV_LOG_LINE_MAX);
	assert_int_equal(g_out[n - 1], '\n');
	assert_int_equal(drain(), 0);
}

/* errno survives logging, even when the write fails. */
static void keeps_errno(void **state)
{
	(void)state;
	srv_log_set_fd(-1);
	errno = ENOSPC;
	srv_log(SRV_LOG_ERROR, "x", NULL);
	assert_int_equal(errno, ENOSPC);
	srv_log_set_fd(g_pipe[1]);
	expect("");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(format_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(no_member, setup, teardown),
		cmocka_unit_test_setup_teardown(levels, setup, teardown),
		cmocka_unit_test_setup_teardown(quoting, setup, teardown),
		cmocka_unit_test_setup_teardown(keys_and_events, setup, teardown),
		cmocka_unit_test_setup_teardown(truncation, setup, teardown),
		cmocka_unit_test_setup_teardown(one_write_per_line, setup, teardown),
		cmocka_unit_test_setup_teardown(keeps_errno, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
