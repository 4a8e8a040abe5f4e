/* test_http1.c: the HTTP/1.1 request parser and response heads (net/http1.h), and the local
 * calls of the gRPC core (net/grpc.h) the JSON gateway runs handlers with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc.h"
#include "http1.h"

static struct net_http1_request *req_new(void)
{
	struct net_http1_request *r = malloc(sizeof *r);
	assert_non_null(r);
	return r;
}

static int parse(const char *s, uint64_t max_body, struct net_http1_request *r, size_t *used)
{
	return net_http1_parse((const uint8_t *)s, strlen(s), max_body, r, used);
}

static void test_simple_get(void **state)
{
	(void)state;
	struct net_http1_request *r = req_new();
	size_t used;
	const char *s = "GET /health?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent:  curl/7 \r\n\r\n";
	assert_int_equal(parse(s, 100, r, &used), 1);
	assert_int_equal(used, strlen(s));
	assert_string_equal(r->method, "GET");
	assert_string_equal(r->path, "/health");
	assert_string_equal(r->query, "x=1");
	assert_int_equal(r->minor, 1);
	assert_true(r->keep_alive);
	assert_string_equal(net_http1_header(r, "user-agent"), "curl/7");
	assert_null(net_http1_header(r, "accept"));
	free(r);
}

static void test_post_body_and_pipelining(void **state)
{
	(void)state;
	struct net_http1_request *r = req_new();
	size_t used;
	const char *s = "POST /v3/kv/put HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
			"GET /version HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
	assert_int_equal(parse(s, 100, r, &used), 1);
	assert_int_equal(r->content_length, 5);
	assert_memory_equal(r->body, "hello", 5);
	size_t first = used;
	assert_int_equal(
		net_http1_parse((const uint8_t *)s + first, strlen(s) - first, 100, r, &used), 1);
	assert_string_equal(r->path, "/version");
	assert_false(r->keep_alive);
	free(r);
}

/* Every prefix of a good request asks for more; the whole of it parses. */
static void test_every_prefix(void **state)
{
	(void)state;
	struct net_http1_request *r = req_new();
	const char *s = "POST /v3/kv/range HTTP/1.1\nHost: a\nContent-Length: 2\n\n{}";
	size_t n = strlen(s), used;
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(net_http1_parse((const uint8_t *)s, i, 100, r, &used), 0);
	}
	assert_int_equal(net_http1_parse((const uint8_t *)s, n, 100, r, &used), 1);
	assert_int_equal(used, n);
	free(r);
}

static void test_errors(void **state)
{
	(void)state;
	struct net_http1_request *r = req_new();
	size_t used;
	static const struct {
		const char *in;
		int want;
	} cases[] = {
		{ "GET /x HTTP/1.1\r\n\r\n", -400 },                       /* no Host */
		{ "GET /x HTTP/2.0\r\nHost: a\r\n\r\n", -505 },            /* version */
		{ "GET /x HTTX/1.1\r\nHost: a\r\n\r\n", -400 },            /* protocol */
		{ "G(T /x HTTP/1.1\r\nHost: a\r\n\r\n", -400 },            /* method */
		{ "GET x HTTP/1.1\r\nHost: a\r\n\r\n", -400 },             /* target */
		{ "GET /x HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", -400 }, /* obs-fold */
		{ "GET /x HTTP/1.1\r\nHost : a\r\n\r\n", -400 },           /* blank */
		{ "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", -400 }, /* two hosts */
		{ "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\n", -413 },
		{ "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", -400 },
		{ "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		  -400 },
		{ "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", -411 },
		{ "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", -501 },
		{ "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1"
		  "\r\n\r\n",
		  -400 },
		{ "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
		  -413 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int rv = parse(cases[i].in, 8, r, &used);
		if (rv != cases[i].want) {
			fail_msg("case %zu: %d, want %d", i, rv, cases[i].want);
		}
	}
	/* a NUL in the head */
	static const uint8_t nul[] = "GET /x HTTP/1.1\r\nHost: a\0b\r\n\r\n";
	assert_int_equal(net_http1_parse(nul, sizeof nul - 1, 8, r, &used), -400);
	free(r);
}

static void test_head_bounds(void **state)
{
	(void)state;
	struct net_http1_request *r = req_new();
	size_t used;
	/* a head that never ends, past the bound */
	size_t n = NET_HTTP1_MAX_HEAD + 10;
	char *big = malloc(n + 1);
	assert_non_null(big);
	memset(big, 'a', n);
	memcpy(big, "GET /x HTTP/1.1\r\nX: ", 20);
	big[n] = '\0';
	assert_int_equal(parse(big, 8, r, &used), -431);
	/* too many fields */
	struct {
		char s[8192];
	} *b = calloc(1, sizeof *b);
	assert_non_null(b);
	strcpy(b->s, "GET /x HTTP/1.1\r\nHost: a\r\n");
	for (int i = 0; i < NET_HTTP1_MAX_HEADERS; i++) {
		strcat(b->s, "X: y\r\n");
	}
	strcat(b->s, "\r\n");
	assert_int_equal(parse(b->s, 8, r, &used), -431);
	free(b);
	free(big);
	free(r);
}

static void test_http10_keep_alive(void **state)
{
	(void)state;
	struct net_http1_request *r = req_new();
	size_t used;
	assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", 0, r, &used), 1);
	assert_false(r->keep_alive);
	assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0, r, &used), 1);
	assert_true(r->keep_alive);
	assert_int_equal(
		parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", 0, r, &used),
		1);
	assert_false(r->keep_alive);
	free(r);
}

static void test_write_head(void **state)
{
	(void)state;
	char out[256];
	int n = net_http1_write_head(out, sizeof out, 404, "text/plain", 10, true, "X-A: b\r\n");
	assert_true(n > 0);
	assert_string_equal(out, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
				 "Content-Length: 10\r\nConnection: close\r\nX-A: b\r\n\r\n");
	n = net_http1_write_head(out, sizeof out, 200, NULL, -1, false, NULL);
	assert_string_equal(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	assert_int_equal(net_http1_write_head(out, 10, 200, NULL, 0, false, NULL), NET_ETOOBIG);
	char sz[24];
	assert_int_equal(net_http1_chunk_size(sz, sizeof sz, 26), 4);
	assert_string_equal(sz, "1a\r\n");
}

/* ---- local calls ---- */

struct seen {
	char msgs[4][32];
	int n_msgs;
	int status;
	char message[64];
	int finished;
	int cancelled;
	int refuse; /* on_message answers NET_EAGAIN this many times */
	int writable;
	struct net_grpc_call *held; /* the handler's call, for a reply later */
};

static struct seen seen;

static int l_message(void *user, const uint8_t *data, size_t len)
{
	(void)user;
	if (seen.refuse > 0) {
		seen.refuse--;
		return NET_EAGAIN;
	}
	assert_true(seen.n_msgs < 4 && len < 32);
	memcpy(seen.msgs[seen.n_msgs], data, len);
	seen.msgs[seen.n_msgs++][len] = '\0';
	return 0;
}

static void l_finish(void *user, int status, const char *message)
{
	(void)user;
	seen.finished++;
	seen.status = status;
	snprintf(seen.message, sizeof seen.message, "%s", message);
}

static const struct net_grpc_local_callbacks lcbs = { l_message, l_finish };

/* Echo: answers each request message twice, finishes on half-close. */
static void echo_msg(struct net_grpc_call *call, const uint8_t *d, size_t len, void *user)
{
	(void)user;
	assert_int_equal(net_grpc_call_send(call, d, len), 0);
	int rv = net_grpc_call_send(call, d, len);
	if (rv == NET_EAGAIN) {
		seen.held = call;
	}
}

static void echo_half(struct net_grpc_call *call, void *user)
{
	(void)user;
	net_grpc_call_finish(call, 5, "etcdserver: requested lease not found");
}

static void echo_cancel(struct net_grpc_call *call, void *user)
{
	(void)call;
	(void)user;
	seen.cancelled++;
}

static void echo_writable(struct net_grpc_call *call, void *user)
{
	(void)user;
	seen.writable++;
	assert_int_equal(net_grpc_call_send(call, (const uint8_t *)"late", 4), 0);
}

static void h_echo(struct net_grpc_call *call, void *data)
{
	(void)data;
	static const struct net_grpc_call_callbacks cbs = { .on_message = echo_msg,
							    .on_half_close = echo_half,
							    .on_cancel = echo_cancel,
							    .on_writable = echo_writable };
	assert_null(net_grpc_call_session(call));
	assert_string_equal(net_grpc_call_path(call), "/t.S/Echo");
	net_grpc_call_set_callbacks(call, &cbs, NULL);
}

/* Answers at once, from the handler itself. */
static void h_now(struct net_grpc_call *call, void *data)
{
	(void)data;
	net_grpc_call_finish(call, 0, NULL);
}

static void test_local_calls(void **state)
{
	(void)state;
	struct net_grpc_server *srv;
	assert_int_equal(net_grpc_server_new(NULL, &srv), 0);
	assert_int_equal(net_grpc_server_register(srv, "/t.S/Echo", h_echo, NULL), 0);
	assert_int_equal(net_grpc_server_register(srv, "/t.S/Now", h_now, NULL), 0);
	struct net_grpc_call *call;

	/* unknown method */
	assert_int_equal(net_grpc_local_start(srv, "/t.S/Nope", &lcbs, NULL, &call), NET_EINVAL);
	assert_null(call);

	/* a full exchange */
	memset(&seen, 0, sizeof seen);
	assert_int_equal(net_grpc_local_start(srv, "/t.S/Echo", &lcbs, NULL, &call), 0);
	assert_int_equal(net_grpc_local_send(call, (const uint8_t *)"hi", 2), 0);
	assert_int_equal(seen.n_msgs, 2);
	assert_string_equal(seen.msgs[1], "hi");
	net_grpc_local_half_close(call);
	assert_int_equal(seen.finished, 1);
	assert_int_equal(seen.status, 5);
	assert_string_equal(seen.message, "etcdserver: requested lease not found");
	assert_int_equal(net_grpc_local_send(call, (const uint8_t *)"x", 1), NET_ECLOSED);
	net_grpc_local_release(call);

	/* backpressure: a refused reply comes again through on_writable */
	memset(&seen, 0, sizeof seen);
	assert_int_equal(net_grpc_local_start(srv, "/t.S/Echo", &lcbs, NULL, &call), 0);
	assert_int_equal(net_grpc_local_send(call, (const uint8_t *)"a", 1), 0);
	seen.refuse = 1;
	assert_int_equal(net_grpc_call_send(call, (const uint8_t *)"b", 1), NET_EAGAIN);
	net_grpc_local_writable(call);
	assert_int_equal(seen.writable, 1);
	assert_string_equal(seen.msgs[seen.n_msgs - 1], "late");
	net_grpc_local_writable(call); /* nothing was refused since: no callback */
	assert_int_equal(seen.writable, 1);

	/* release before the handler finished: it is cancelled */
	net_grpc_local_release(call);
	assert_int_equal(seen.cancelled, 1);
	assert_int_equal(seen.finished, 0);

	/* a handler that finishes from inside start */
	memset(&seen, 0, sizeof seen);
	assert_int_equal(net_grpc_local_start(srv, "/t.S/Now", &lcbs, NULL, &call), 0);
	assert_int_equal(seen.finished, 1);
	assert_int_equal(seen.status, 0);
	net_grpc_local_release(call);

	/* a request over max_recv_message */
	assert_int_equal(net_grpc_local_start(srv, "/t.S/Echo", &lcbs, NULL, &call), 0);
	size_t big = net_grpc_server_limits(srv)->max_recv_message + 1;
	uint8_t *b = calloc(1, big);
	assert_non_null(b);
	assert_int_equal(net_grpc_local_send(call, b, big), NET_ETOOBIG);
	free(b);
	net_grpc_local_release(call);
	net_grpc_server_free(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_post_body_and_pipelining),
		cmocka_unit_test(test_every_prefix),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_head_bounds),
		cmocka_unit_test(test_http10_keep_alive),
		cmocka_unit_test(test_write_head),
		cmocka_unit_test(test_local_calls),
	};
	return cmocka_run_group_tests_name("http1", tests, NULL, NULL);
}
