/* test_grpc_client.c: net/grpc_client.h against the real server (net_grpc_server behind a
 * net_grpc_listener) on 127.0.0.1 with ephemeral ports, in one process and one loop: unary and
 * streaming calls, statuses, deadlines, connection failures, GOAWAY, keepalive, cancellation,
 * bounds, backpressure, TLS, and a thousand concurrent calls on one connection. Every wait is
 * bounded, and uv_loop_close() returns 0 at the end of each test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <uv.h>

#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "grpc_client.h"
#include "grpc_uv.h"
#include "certs.h"
#include "tmpdir.h"

/* ---- bounded loop driving ---- */

typedef bool (*cond_fn)(void *arg);

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static bool run_until(uv_loop_t *loop, cond_fn cond, void *arg, uint64_t timeout_ms)
{
	uint64_t end = uv_hrtime() + timeout_ms * 1000000u;
	while (!cond(arg)) {
		if (uv_hrtime() > end) {
			return false;
		}
		if (uv_run(loop, UV_RUN_NOWAIT) == 0) {
			sleep_ms(1);
		}
	}
	return true;
}

static bool never(void *arg)
{
	(void)arg;
	return false;
}

static void run_for(uv_loop_t *loop, uint64_t ms)
{
	run_until(loop, never, NULL, ms);
}

static bool flag_set(void *arg)
{
	return *(bool *)arg;
}

/* ---- certificates ---- */

struct pki {
	char dir[256];
	char ca[320];
	char server_cert[320];
	char server_key[320];
};

static struct pki g;

static int pki_setup(void **state)
{
	(void)state;
	h_tmpdir_make(g.dir, sizeof g.dir, "cairn-grpc-client");
	snprintf(g.ca, sizeof g.ca, "%s/ca.pem", g.dir);
	snprintf(g.server_cert, sizeof g.server_cert, "%s/server.pem", g.dir);
	snprintf(g.server_key, sizeof g.server_key, "%s/server.key", g.dir);
	EVP_PKEY *ca_key = h_key_new();
	X509 *ca = h_cert_new(ca_key, "cairn", "cairn-ca", NULL, NULL, NULL, 1);
	EVP_PKEY *server_key = h_key_new();
	X509 *server = h_cert_new(server_key, "cairn", "cairn-server", ca, ca_key,
				  "IP:127.0.0.1,DNS:localhost", 2);
	h_pem_write(g.ca, ca, NULL);
	h_pem_write(g.server_cert, server, NULL);
	h_pem_write(g.server_key, NULL, server_key);
	X509_free(ca);
	X509_free(server);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(server_key);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int pki_teardown(void **state)
{
	(void)state;
	h_tmpdir_remove(g.dir);
	return 0;
}

/* ---- the server side ---- */

#define BIG_LIMIT ((uint32_t)64 << 10)
#define FAIL_TEXT "key \"a\" is naïve — 100% ✓\nsecond line"

struct fx {
	uv_loop_t loop;
	struct net_grpc_server *srv;
	struct net_grpc_listener *l;
	struct net_tls_ctx *server_tls;
	struct net_tls_ctx *client_tls;
	struct net_tls_filter_ctx ltls;
	bool l_closed;
	char url[64];

	/* Never: calls held without an answer. */
	struct net_grpc_call *held[8];
	int n_held;
	int never_cancelled;
	/* Sink: a call paused at once, resumed by the test. */
	struct net_grpc_call *sink;
	size_t sink_bytes;
	bool sink_done;
	int echo_msgs;
	int64_t last_timeout; /* grpc-timeout of the last Never call, -1 if none */
	char last_auth[64];   /* "authorization" of the last Echo call */
	char last_authority[64];

	/* The client connection. */
	struct net_grpc_conn *conn;
	bool ready;
	bool closed;
	int closed_err;
	int closed_calls_open; /* calls still counted when on_closed ran */
};

static struct fx F;

static void echo_on_message(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct fx *f = user;
	f->echo_msgs++;
	assert_int_equal(net_grpc_call_send(call, data, len), 0);
}

static void echo_on_half_close(struct net_grpc_call *call, void *user)
{
	(void)user;
	net_grpc_call_finish(call, NET_GRPC_OK, NULL);
}

static void echo_handler(struct net_grpc_call *call, void *data)
{
	struct fx *f = data;
	const char *a = net_grpc_call_metadata(call, "authorization");
	snprintf(f->last_auth, sizeof f->last_auth, "%s", a != NULL ? a : "");
	snprintf(f->last_authority, sizeof f->last_authority, "%s", net_grpc_call_authority(call));
	static const struct net_grpc_call_callbacks cbs = {
		.on_message = echo_on_message,
		.on_half_close = echo_on_half_close,
	};
	net_grpc_call_set_callbacks(call, &cbs, data);
}

/* Stream: the request is a 4-byte big-endian count N; the answer is N messages 0..N-1. */
static void stream_on_message(struct net_grpc_call *call, const uint8_t *data, size_t len,
			      void *user)
{
	(void)user;
	assert_int_equal(len, 4);
	uint32_t n = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 |
		     data[3];
	for (uint32_t i = 0; i < n; i++) {
		uint8_t m[4] = { (uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
				 (uint8_t)i };
		assert_int_equal(net_grpc_call_send(call, m, sizeof m), 0);
	}
	net_grpc_call_finish(call, NET_GRPC_OK, NULL);
}

static void stream_handler(struct net_grpc_call *call, void *data)
{
	static const struct net_grpc_call_callbacks cbs = { .on_message = stream_on_message };
	net_grpc_call_set_callbacks(call, &cbs, data);
}

static void never_on_cancel(struct net_grpc_call *call, void *user)
{
	struct fx *f = user;
	for (int i = 0; i < f->n_held; i++) {
		if (f->held[i] == call) {
			f->held[i] = f->held[--f->n_held];
			break;
		}
	}
	f->never_cancelled++;
}

static void never_handler(struct net_grpc_call *call, void *data)
{
	struct fx *f = data;
	static const struct net_grpc_call_callbacks cbs = { .on_cancel = never_on_cancel };
	net_grpc_call_set_callbacks(call, &cbs, f);
	f->last_timeout = net_grpc_call_timeout_ms(call);
	assert_true(f->n_held < 8);
	f->held[f->n_held++] = call;
}

static void fail_on_half_close(struct net_grpc_call *call, void *user)
{
	(void)user;
	net_grpc_call_finish(call, NET_GRPC_FAILED_PRECONDITION, FAIL_TEXT);
}

static void fail_handler(struct net_grpc_call *call, void *data)
{
	static const struct net_grpc_call_callbacks cbs = { .on_half_close = fail_on_half_close };
	net_grpc_call_set_callbacks(call, &cbs, data);
}

/* Big: answers one message of the requested size (4-byte big-endian), bytes i & 0xff. */
static void big_on_message(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	(void)user;
	assert_int_equal(len, 4);
	uint32_t n = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 |
		     data[3];
	uint8_t *m = malloc(n);
	assert_non_null(m);
	for (uint32_t i = 0; i < n; i++) {
		m[i] = (uint8_t)i;
	}
	assert_int_equal(net_grpc_call_send(call, m, n), 0);
	free(m);
	net_grpc_call_finish(call, NET_GRPC_OK, NULL);
}

static void big_handler(struct net_grpc_call *call, void *data)
{
	static const struct net_grpc_call_callbacks cbs = { .on_message = big_on_message };
	net_grpc_call_set_callbacks(call, &cbs, data);
}

static void sink_on_message(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	(void)call;
	(void)data;
	struct fx *f = user;
	f->sink_bytes += len;
}

static void sink_on_half_close(struct net_grpc_call *call, void *user)
{
	struct fx *f = user;
	f->sink = NULL;
	f->sink_done = true;
	net_grpc_call_finish(call, NET_GRPC_OK, NULL);
}

static void sink_on_cancel(struct net_grpc_call *call, void *user)
{
	(void)call;
	struct fx *f = user;
	f->sink = NULL;
}

static void sink_handler(struct net_grpc_call *call, void *data)
{
	struct fx *f = data;
	static const struct net_grpc_call_callbacks cbs = {
		.on_message = sink_on_message,
		.on_half_close = sink_on_half_close,
		.on_cancel = sink_on_cancel,
	};
	net_grpc_call_set_callbacks(call, &cbs, f);
	net_grpc_call_pause(call, true);
	f->sink = call;
}

static void fx_log(void *data, enum net_log_level level, const char *msg)
{
	(void)data;
	(void)level;
	(void)msg;
}

/* The TLS server prefers ALPN "http/1.1" and the client offers it too (test_tls_alpn). */
static bool server_prefers_h1;

static void fx_server(struct fx *f, bool tls)
{
	memset(f, 0, sizeof *f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	struct net_grpc_limits lim;
	net_grpc_limits_default(&lim);
	lim.max_concurrent_streams = 2048;
	assert_int_equal(net_grpc_server_new(&lim, &f->srv), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/t.S/Echo", echo_handler, f), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/t.S/Stream", stream_handler, f), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/t.S/Never", never_handler, f), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/t.S/Fail", fail_handler, f), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/t.S/Big", big_handler, f), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/t.S/Sink", sink_handler, f), 0);
	struct net_grpc_listener_opts lo = { .log = fx_log, .log_data = f };
	struct net_tls_filter_ctx *tp = NULL;
	if (tls) {
		static const char *const alpn_h2[] = { "h2" };
		static const char *const alpn_h1[] = { "http/1.1", "h2" };
		const char *const *alpn = server_prefers_h1 ? alpn_h1 : alpn_h2;
		size_t n_alpn = server_prefers_h1 ? 2 : 1;
		struct net_tls_config scfg = { .role = NET_TLS_SERVER,
					       .cert_file = g.server_cert,
					       .key_file = g.server_key,
					       .alpn = alpn,
					       .n_alpn = n_alpn };
		char msg[NET_TLS_ERRMSG_MAX];
		if (net_tls_ctx_new(&scfg, &f->server_tls, msg, sizeof msg) != 0) {
			fail_msg("server tls: %s", msg);
		}
		struct net_tls_config ccfg = { .role = NET_TLS_CLIENT,
					       .trusted_ca_file = g.ca,
					       .alpn = alpn,
					       .n_alpn = n_alpn };
		if (net_tls_ctx_new(&ccfg, &f->client_tls, msg, sizeof msg) != 0) {
			fail_msg("client tls: %s", msg);
		}
		f->ltls.server = f->server_tls;
		tp = &f->ltls;
	}
	const char *scheme = tls ? "https" : "http";
	char url[64];
	snprintf(url, sizeof url, "%s://127.0.0.1:0", scheme);
	assert_int_equal(net_grpc_listener_open(&f->loop, url, f->srv, tp, &lo, &f->l), 0);
	snprintf(f->url, sizeof f->url, "%s://127.0.0.1:%u", scheme,
		 (unsigned)net_grpc_listener_port(f->l));
}

static void fx_l_closed(struct net_grpc_listener *l, void *data)
{
	(void)l;
	struct fx *f = data;
	f->l_closed = true;
	f->l = NULL;
}

static void fx_close_listener(struct fx *f, uint64_t drain_ms)
{
	if (f->l != NULL) {
		net_grpc_listener_close(f->l, drain_ms, fx_l_closed, f);
	}
}

/* ---- the client connection ---- */

static void c_on_ready(struct net_grpc_conn *c, void *data)
{
	struct fx *f = data;
	assert_ptr_equal(c, f->conn);
	f->ready = true;
}

static void c_on_closed(struct net_grpc_conn *c, int err, void *data)
{
	struct fx *f = data;
	assert_ptr_equal(c, f->conn);
	assert_false(f->closed);
	f->closed = true;
	f->closed_err = err;
	f->closed_calls_open = (int)net_grpc_conn_calls(c);
	f->conn = NULL;
}

static const struct net_grpc_conn_cbs conn_cbs = { .on_ready = c_on_ready,
						   .on_closed = c_on_closed };

static void fx_connect(struct fx *f, const char *url, const struct net_grpc_conn_opts *opts_in)
{
	struct net_grpc_conn_opts o = { 0 };
	if (opts_in != NULL) {
		o = *opts_in;
	}
	o.tls = f->client_tls;
	o.log = fx_log;
	f->ready = f->closed = false;
	assert_int_equal(net_grpc_conn_open(&f->loop, url, &o, &conn_cbs, f, &f->conn), 0);
	assert_false(f->ready);
}

/* Closes everything and checks the loop closes cleanly. */
static void fx_finish(struct fx *f)
{
	if (f->conn != NULL) {
		net_grpc_conn_close(f->conn);
		assert_non_null(f->conn); /* on_closed never runs from inside close() */
	}
	assert_true(run_until(&f->loop, flag_set, &f->closed, 3000));
	fx_close_listener(f, 100);
	if (f->srv != NULL) {
		assert_true(run_until(&f->loop, flag_set, &f->l_closed, 5000));
	}
	uint64_t end = uv_hrtime() + (uint64_t)3000 * 1000000u;
	while (uv_loop_alive(&f->loop) && uv_hrtime() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_int_equal(uv_loop_close(&f->loop), 0);
	net_grpc_server_free(f->srv);
	net_tls_ctx_free(f->server_tls);
	net_tls_ctx_free(f->client_tls);
}

/* ---- one call's outcome ---- */

#define MAX_KEEP 256

struct res {
	struct net_grpc_ccall *call;
	bool closed;
	int status;
	char message[NET_GRPC_MAX_STATUS_MESSAGE];
	bool unprocessed;
	int n_msgs;
	size_t bytes;
	uint8_t last[MAX_KEEP];
	size_t last_len;
	bool bad_bytes;
	int writable;
	int cancel_after; /* cancel from inside on_message after this many (0: never) */
	struct fx *f;
};

static void r_on_message(struct net_grpc_ccall *call, const uint8_t *data, size_t len, void *user)
{
	struct res *r = user;
	assert_false(r->closed);
	assert_ptr_equal(net_grpc_ccall_user(call), r);
	r->n_msgs++;
	r->bytes += len;
	r->last_len = len < MAX_KEEP ? len : MAX_KEEP;
	memcpy(r->last, data, r->last_len);
	for (size_t i = 0; i < len && len > MAX_KEEP; i++) {
		if (data[i] != (uint8_t)i) {
			r->bad_bytes = true;
			break;
		}
	}
	if (r->cancel_after > 0 && r->n_msgs == r->cancel_after) {
		net_grpc_ccall_cancel(call);
		r->call = NULL;
	}
}

static void r_on_close(struct net_grpc_ccall *call, int status, const char *message, void *user)
{
	struct res *r = user;
	assert_false(r->closed);
	assert_non_null(message);
	r->closed = true;
	r->status = status;
	snprintf(r->message, sizeof r->message, "%s", message);
	r->unprocessed = net_grpc_ccall_unprocessed(call);
	r->call = NULL;
}

static void r_on_writable(struct net_grpc_ccall *call, void *user)
{
	(void)call;
	struct res *r = user;
	r->writable++;
}

static const struct net_grpc_ccall_cbs r_cbs = {
	.on_message = r_on_message,
	.on_close = r_on_close,
	.on_writable = r_on_writable,
};

static bool r_closed(void *arg)
{
	return ((struct res *)arg)->closed;
}

static void be32(uint8_t out[4], uint32_t v)
{
	out[0] = (uint8_t)(v >> 24);
	out[1] = (uint8_t)(v >> 16);
	out[2] = (uint8_t)(v >> 8);
	out[3] = (uint8_t)v;
}

/* ---- tests ---- */

/* A unary call made before the connection is up waits for it, then echoes. */
static void test_unary_ok(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, false);
	fx_connect(f, f->url, NULL);
	static struct res r;
	memset(&r, 0, sizeof r);
	const char *md[] = { "authorization", "token-1", "x-cairn", "v" };
	struct net_grpc_ccall_opts co = { .timeout_ms = 5000, .metadata = md, .n_metadata = 2 };
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"hello", 5, &co,
					     &r_cbs, &r, &r.call),
			 0);
	assert_int_equal(net_grpc_conn_calls(f->conn), 1);
	assert_false(r.closed);
	assert_true(run_until(&f->loop, r_closed, &r, 3000));
	assert_true(f->ready);
	assert_true(net_grpc_conn_ready(f->conn));
	assert_int_equal(r.status, NET_GRPC_OK);
	assert_string_equal(r.message, "");
	assert_int_equal(r.n_msgs, 1);
	assert_int_equal(r.last_len, 5);
	assert_memory_equal(r.last, "hello", 5);
	assert_int_equal(net_grpc_conn_calls(f->conn), 0);
	assert_string_equal(f->last_auth, "token-1");
	assert_string_equal(f->last_authority, f->url + strlen("http://"));

	/* An empty request and the same connection again; *out may be NULL. */
	memset(&r, 0, sizeof r);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", NULL, 0, NULL, &r_cbs, &r, NULL),
			 0);
	assert_true(run_until(&f->loop, r_closed, &r, 3000));
	assert_int_equal(r.status, NET_GRPC_OK);
	assert_int_equal(r.n_msgs, 1);
	assert_int_equal(r.last_len, 0);

	/* An unknown method: the server's UNIMPLEMENTED. */
	memset(&r, 0, sizeof r);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Nope", (const uint8_t *)"x", 1, NULL,
					     &r_cbs, &r, NULL),
			 0);
	assert_true(run_until(&f->loop, r_closed, &r, 3000));
	assert_int_equal(r.status, NET_GRPC_UNIMPLEMENTED);
	assert_string_equal(net_grpc_conn_url(f->conn), f->url);
	assert_ptr_equal(net_grpc_conn_data(f->conn), f);
	fx_finish(f);
	assert_int_equal(f->closed_err, 0);
}

/* grpc-status and a percent-encoded grpc-message with non-ASCII text come back decoded. */
static void test_status_message(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, false);
	fx_connect(f, f->url, NULL);
	static struct res r;
	memset(&r, 0, sizeof r);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Fail", (const uint8_t *)"x", 1, NULL,
					     &r_cbs, &r, NULL),
			 0);
	assert_true(run_until(&f->loop, r_closed, &r, 3000));
	assert_int_equal(r.status, NET_GRPC_FAILED_PRECONDITION);
	assert_string_equal(r.message, FAIL_TEXT);
	assert_int_equal(r.n_msgs, 0);
	assert_false(r.unprocessed);
	fx_finish(f);
}

/* Server streaming (N messages in order) and bidi streaming (each message echoed before the
 * next is sent), then half-close ends the call OK. */
static struct res bidi_r;
static int bidi_sent;

static void bidi_on_message(struct net_grpc_ccall *call, const uint8_t *data, size_t len,
			    void *user)
{
	r_on_message(call, data, len, user);
	uint8_t m[4];
	be32(m, (uint32_t)bidi_sent);
	assert_int_equal(len, 4);
	assert_memory_equal(data, m, 4);
	if (++bidi_sent < 50) {
		be32(m, (uint32_t)bidi_sent);
		assert_int_equal(net_grpc_ccall_send(call, m, 4), 0);
	} else {
		net_grpc_ccall_half_close(call);
		net_grpc_ccall_half_close(call);
		assert_int_equal(net_grpc_ccall_send(call, m, 4), NET_ECLOSED);
	}
}

static void test_streaming(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, false);
	fx_connect(f, f->url, NULL);
	assert_true(run_until(&f->loop, flag_set, &f->ready, 3000));

	static struct res r;
	memset(&r, 0, sizeof r);
	uint8_t req[4];
	be32(req, 300);
	assert_int_equal(
		net_grpc_conn_unary(f->conn, "/t.S/Stream", req, 4, NULL, &r_cbs, &r, NULL), 0);
	assert_true(run_until(&f->loop, r_closed, &r, 3000));
	assert_int_equal(r.status, NET_GRPC_OK);
	assert_int_equal(r.n_msgs, 300);
	be32(req, 299);
	assert_memory_equal(r.last, req, 4);

	memset(&bidi_r, 0, sizeof bidi_r);
	bidi_sent = 0;
	static const struct net_grpc_ccall_cbs bcbs = { .on_message = bidi_on_message,
							.on_close = r_on_close };
	struct net_grpc_ccall *call = NULL;
	assert_int_equal(net_grpc_conn_call(f->conn, "/t.S/Echo", NULL, &bcbs, &bidi_r, &call), 0);
	assert_ptr_equal(net_grpc_ccall_conn(call), f->conn);
	be32(req, 0);
	assert_int_equal(net_grpc_ccall_send(call, req, 4), 0);
	assert_true(run_until(&f->loop, r_closed, &bidi_r, 5000));
	assert_int_equal(bidi_r.status, NET_GRPC_OK);
	assert_int_equal(bidi_r.n_msgs, 50);
	assert_int_equal(f->echo_msgs, 50);
	fx_finish(f);
}

/* The deadline ends the call DEADLINE_EXCEEDED and resets the stream (the server sees the
 * cancel); grpc-timeout reached the server. */
static void test_deadline(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, false);
	fx_connect(f, f->url, NULL);
	static struct res r, r2;
	memset(&r, 0, sizeof r);
	memset(&r2, 0, sizeof r2);
	struct net_grpc_ccall_opts co = { .timeout_ms = 150 };
	uint64_t t0 = uv_hrtime();
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Never", (const uint8_t *)"x", 1, &co,
					     &r_cbs, &r, NULL),
			 0);
	struct net_grpc_ccall_opts co2 = { .timeout_ms = 5000 };
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"y", 1, &co2,
					     &r_cbs, &r2, NULL),
			 0);
	assert_true(run_until(&f->loop, r_closed, &r, 3000));
	uint64_t ms = (uv_hrtime() - t0) / 1000000u;
	assert_int_equal(r.status, NET_GRPC_DEADLINE_EXCEEDED);
	assert_true(ms >= 140 && ms < 1500);
	assert_true(r2.closed);
	assert_int_equal(r2.status, NET_GRPC_OK);
	uint64_t end = uv_hrtime() + (uint64_t)2000 * 1000000u;
	while (f->never_cancelled == 0 && uv_hrtime() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_int_equal(f->never_cancelled, 1);
	assert_true(f->last_timeout >= 140 && f->last_timeout <= 150);
	assert_int_equal(net_grpc_conn_calls(f->conn), 0);
	fx_finish(f);
}

/* Nothing listens: on_closed with NET_EREFUSED, the waiting call UNAVAILABLE and unprocessed. */
static void test_refused(void **state)
{
	(void)state;
	struct fx *f = &F;
	memset(f, 0, sizeof *f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	socklen_t sl = sizeof sa;
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd); /* bound, never listened: connecting is refused */
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
	fx_connect(f, url, NULL);
	static struct res r;
	memset(&r, 0, sizeof r);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"x", 1, NULL,
					     &r_cbs, &r, NULL),
			 0);
	assert_true(run_until(&f->loop, flag_set, &f->closed, 3000));
	assert_true(r.closed);
	assert_int_equal(r.status, NET_GRPC_UNAVAILABLE);
	assert_true(r.unprocessed);
	assert_int_equal(f->closed_err, NET_EREFUSED);
	assert_false(f->ready);
	assert_int_equal(f->closed_calls_open, 0);

	/* Bad arguments: nothing runs. */
	struct net_grpc_conn *c = NULL;
	assert_int_equal(net_grpc_conn_open(&f->loop, "ftp://x", NULL, &conn_cbs, f, &c),
			 NET_EADDR);
	assert_int_equal(
		net_grpc_conn_open(&f->loop, "https://127.0.0.1:1", NULL, &conn_cbs, f, &c),
		NET_EINVAL);
	fx_finish(f);
}

/* A graceful drain: GOAWAY makes the connection draining, new calls get NET_ECLOSED, the call in
 * flight runs to the drain deadline (then the server cancels it), and the connection ends
 * cleanly once it has no call left. */
static void test_goaway_drain(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, false);
	fx_connect(f, f->url, NULL);
	static struct res r, r2;
	memset(&r, 0, sizeof r);
	memset(&r2, 0, sizeof r2);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Never", (const uint8_t *)"x", 1, NULL,
					     &r_cbs, &r, NULL),
			 0);
	assert_true(run_until(&f->loop, flag_set, &f->ready, 3000));
	uint64_t end = uv_hrtime() + (uint64_t)3000 * 1000000u;
	while (f->n_held == 0 && uv_hrtime() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_int_equal(f->n_held, 1);
	fx_close_listener(f, 400);
	end = uv_hrtime() + (uint64_t)3000 * 1000000u;
	while (!net_grpc_conn_draining(f->conn) && uv_hrtime() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_true(net_grpc_conn_draining(f->conn));
	assert_false(f->closed);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"x", 1, NULL,
					     &r_cbs, &r2, NULL),
			 NET_ECLOSED);
	assert_true(run_until(&f->loop, flag_set, &f->closed, 3000));
	assert_true(r.closed);
	/* The server gave up on the call at its drain deadline (RST_STREAM CANCEL). */
	assert_int_equal(r.status, NET_GRPC_CANCELLED);
	assert_false(r.unprocessed);
	assert_false(r2.closed);
	assert_int_equal(f->closed_err, 0);
	fx_finish(f);
}

/* ---- a raw TCP peer: accepts, reads, and either closes at the first bytes or stays mute ---- */

struct raw {
	uv_tcp_t server;
	uv_tcp_t peer;
	bool accepted;
	bool close_on_read;
	bool got_bytes;
	int handles;
	uint16_t port;
};

static void raw_closed(uv_handle_t *h)
{
	struct raw *w = h->data;
	w->handles--;
}

static void raw_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)h;
	(void)hint;
	static char b[65536];
	*buf = uv_buf_init(b, sizeof b);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	(void)buf;
	struct raw *w = s->data;
	if (n > 0) {
		w->got_bytes = true;
		if (w->close_on_read && !uv_is_closing((uv_handle_t *)s)) {
			uv_close((uv_handle_t *)s, raw_closed);
		}
	}
}

static void raw_conn(uv_stream_t *srv, int status)
{
	struct raw *w = srv->data;
	assert_int_equal(status, 0);
	assert_false(w->accepted);
	assert_int_equal(uv_tcp_init(srv->loop, &w->peer), 0);
	w->peer.data = w;
	w->handles++;
	assert_int_equal(uv_accept(srv, (uv_stream_t *)&w->peer), 0);
	w->accepted = true;
	if (w->close_on_read) {
		assert_int_equal(uv_read_start((uv_stream_t *)&w->peer, raw_alloc, raw_read), 0);
	}
}

static void raw_open(uv_loop_t *loop, struct raw *w, bool close_on_read)
{
	memset(w, 0, sizeof *w);
	w->close_on_read = close_on_read;
	assert_int_equal(uv_tcp_init(loop, &w->server), 0);
	w->server.data = w;
	w->handles = 1;
	struct sockaddr_in sa;
	uv_ip4_addr("127.0.0.1", 0, &sa);
	assert_int_equal(uv_tcp_bind(&w->server, (struct sockaddr *)&sa, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&w->server, 8, raw_conn), 0);
	int len = sizeof sa;
	assert_int_equal(uv_tcp_getsockname(&w->server, (struct sockaddr *)&sa, &len), 0);
	w->port = ntohs(sa.sin_port);
}

static void raw_close(struct raw *w)
{
	uv_close((uv_handle_t *)&w->server, raw_closed);
	if (w->accepted && !uv_is_closing((uv_handle_t *)&w->peer)) {
		uv_close((uv_handle_t *)&w->peer, raw_closed);
	}
}

/* ---- a scripted HTTP/2 server (nghttp2) for answers the real server never gives ---- */

enum fake_mode {
	FAKE_GOAWAY,      /* two requests: GOAWAY with last stream 1, then answer stream 1 */
	FAKE_REFUSE,      /* RST_STREAM REFUSED_STREAM */
	FAKE_COMPRESSED,  /* a message with the compressed flag set */
	FAKE_NO_TRAILERS, /* a message, then END_STREAM on the DATA */
	FAKE_HTTP_503,    /* :status 503, no grpc-status */
	FAKE_TRUNCATED,   /* half a message, then trailers with grpc-status 0 */
};

struct fake {
	uv_tcp_t server;
	uv_tcp_t peer;
	nghttp2_session *h2;
	enum fake_mode mode;
	bool accepted;
	int handles;
	uint16_t port;
	int requests;
	int32_t ids[4];
	const uint8_t *body;
	size_t body_len;
	bool trailers;
};

static void fake_closed(uv_handle_t *h)
{
	struct fake *k = h->data;
	k->handles--;
}

static void fake_pump(struct fake *k)
{
	for (;;) {
		const uint8_t *p;
		ssize_t n = nghttp2_session_mem_send(k->h2, &p);
		assert_true(n >= 0);
		if (n == 0) {
			return;
		}
		uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
		assert_int_equal(uv_try_write((uv_stream_t *)&k->peer, &b, 1), (int)n);
	}
}

static ssize_t fake_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
			 uint32_t *flags, nghttp2_data_source *src, void *user)
{
	(void)src;
	struct fake *k = user;
	assert_true(k->body_len <= length);
	memcpy(buf, k->body, k->body_len);
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (k->trailers) {
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		static const nghttp2_nv tr[] = { { (uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1,
						   NGHTTP2_NV_FLAG_NONE } };
		assert_int_equal(nghttp2_submit_trailer(h2, id, tr, 1), 0);
	}
	return (ssize_t)k->body_len;
}

static void fake_answer(struct fake *k, int32_t id, const uint8_t *body, size_t len, bool trailers)
{
	static const nghttp2_nv hd[] = {
		{ (uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
		  NGHTTP2_NV_FLAG_NONE },
	};
	k->body = body;
	k->body_len = len;
	k->trailers = trailers;
	nghttp2_data_provider prd = { .read_callback = fake_read };
	assert_int_equal(nghttp2_submit_response(k->h2, id, hd, 2, &prd), 0);
}

static int fake_on_frame_recv(nghttp2_session *h2, const nghttp2_frame *fr, void *user)
{
	struct fake *k = user;
	if ((fr->hd.type != NGHTTP2_HEADERS && fr->hd.type != NGHTTP2_DATA) ||
	    (fr->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
		return 0;
	}
	int32_t id = fr->hd.stream_id;
	assert_true(k->requests < 4);
	k->ids[k->requests++] = id;
	static const uint8_t ok_msg[] = { 0, 0, 0, 0, 2, 'o', 'k' };
	static const uint8_t zipped[] = { 1, 0, 0, 0, 1, 'z' };
	static const uint8_t half[] = { 0, 0, 0, 0, 5, 'a', 'b' };
	switch (k->mode) {
	case FAKE_GOAWAY:
		if (k->requests == 2) {
			assert_int_equal(nghttp2_submit_goaway(h2, NGHTTP2_FLAG_NONE, k->ids[0],
							       NGHTTP2_NO_ERROR, NULL, 0),
					 0);
			fake_answer(k, k->ids[0], ok_msg, sizeof ok_msg, true);
		}
		break;
	case FAKE_REFUSE:
		assert_int_equal(nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, id,
							   NGHTTP2_REFUSED_STREAM),
				 0);
		break;
	case FAKE_COMPRESSED:
		fake_answer(k, id, zipped, sizeof zipped, true);
		break;
	case FAKE_NO_TRAILERS:
		fake_answer(k, id, ok_msg, sizeof ok_msg, false);
		break;
	case FAKE_HTTP_503: {
		static const nghttp2_nv hd[] = {
			{ (uint8_t *)":status", (uint8_t *)"503", 7, 3, NGHTTP2_NV_FLAG_NONE },
		};
		assert_int_equal(nghttp2_submit_response(h2, id, hd, 1, NULL), 0);
		break;
	}
	case FAKE_TRUNCATED:
		fake_answer(k, id, half, sizeof half, true);
		break;
	}
	return 0;
}

static void fake_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct fake *k = s->data;
	if (n <= 0) {
		if (n < 0 && !uv_is_closing((uv_handle_t *)s)) {
			uv_close((uv_handle_t *)s, fake_closed);
		}
		return;
	}
	ssize_t rv = nghttp2_session_mem_recv(k->h2, (const uint8_t *)buf->base, (size_t)n);
	assert_int_equal(rv, n);
	fake_pump(k);
}

static void fake_conn(uv_stream_t *srv, int status)
{
	struct fake *k = srv->data;
	assert_int_equal(status, 0);
	assert_false(k->accepted);
	assert_int_equal(uv_tcp_init(srv->loop, &k->peer), 0);
	k->peer.data = k;
	k->handles++;
	assert_int_equal(uv_accept(srv, (uv_stream_t *)&k->peer), 0);
	k->accepted = true;
	nghttp2_session_callbacks *cbs;
	assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, fake_on_frame_recv);
	assert_int_equal(nghttp2_session_server_new(&k->h2, cbs, k), 0);
	nghttp2_session_callbacks_del(cbs);
	assert_int_equal(nghttp2_submit_settings(k->h2, NGHTTP2_FLAG_NONE, NULL, 0), 0);
	fake_pump(k);
	assert_int_equal(uv_read_start((uv_stream_t *)&k->peer, raw_alloc, fake_on_read), 0);
}

static void fake_open(uv_loop_t *loop, struct fake *k, enum fake_mode mode)
{
	memset(k, 0, sizeof *k);
	k->mode = mode;
	assert_int_equal(uv_tcp_init(loop, &k->server), 0);
	k->server.data = k;
	k->handles = 1;
	struct sockaddr_in sa;
	uv_ip4_addr("127.0.0.1", 0, &sa);
	assert_int_equal(uv_tcp_bind(&k->server, (struct sockaddr *)&sa, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&k->server, 8, fake_conn), 0);
	int len = sizeof sa;
	assert_int_equal(uv_tcp_getsockname(&k->server, (struct sockaddr *)&sa, &len), 0);
	k->port = ntohs(sa.sin_port);
}

static void fake_close(struct fake *k)
{
	uv_close((uv_handle_t *)&k->server, fake_closed);
	if (k->accepted && !uv_is_closing((uv_handle_t *)&k->peer)) {
		uv_close((uv_handle_t *)&k->peer, fake_closed);
	}
	nghttp2_session_del(k->h2);
	k->h2 = NULL;
}

/* Runs one scripted exchange: `n` unary calls, each result in r[]. */
static void fake_run(struct fx *f, struct fake *k, enum fake_mode mode, struct res *r, int n)
{
	memset(f, 0, sizeof *f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	fake_open(&f->loop, k, mode);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)k->port);
	fx_connect(f, url, NULL);
	for (int i = 0; i < n; i++) {
		memset(&r[i], 0, sizeof r[i]);
		assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"x", 1,
						     NULL, &r_cbs, &r[i], NULL),
				 0);
	}
	for (int i = 0; i < n; i++) {
		assert_true(run_until(&f->loop, r_closed, &r[i], 3000));
	}
}

/* GOAWAY with last stream id 1: the call on stream 3 ends UNAVAILABLE and unprocessed, the call on
 * stream 1 completes, and the connection ends cleanly once it has. */
static void test_goaway_last_stream(void **state)
{
	(void)state;
	struct fx *f = &F;
	static struct fake k;
	static struct res r[2];
	fake_run(f, &k, FAKE_GOAWAY, r, 2);
	assert_int_equal(r[0].status, NET_GRPC_OK);
	assert_false(r[0].unprocessed);
	assert_int_equal(r[0].last_len, 2);
	assert_memory_equal(r[0].last, "ok", 2);
	assert_int_equal(r[1].status, NET_GRPC_UNAVAILABLE);
	assert_true(r[1].unprocessed);
	assert_true(run_until(&f->loop, flag_set, &f->closed, 3000));
	assert_int_equal(f->closed_err, 0);
	fake_close(&k);
	fx_finish(f);
}

/* RST_STREAM REFUSED_STREAM: UNAVAILABLE, unprocessed; the connection stays. */
static void test_refused_stream(void **state)
{
	(void)state;
	struct fx *f = &F;
	static struct fake k;
	static struct res r[1];
	fake_run(f, &k, FAKE_REFUSE, r, 1);
	assert_int_equal(r[0].status, NET_GRPC_UNAVAILABLE);
	assert_true(r[0].unprocessed);
	assert_false(f->closed);
	fake_close(&k);
	fx_finish(f);
}

/* Protocol breaches end the call INTERNAL: a compressed message, no trailers, a non-200 status,
 * a stream that ends inside a message. */
static void test_bad_responses(void **state)
{
	(void)state;
	static const enum fake_mode modes[] = { FAKE_COMPRESSED, FAKE_NO_TRAILERS, FAKE_HTTP_503,
						FAKE_TRUNCATED };
	static const char *const why[] = { "compressed", "trailers", "HTTP status code 503",
					   "inside a response message" };
	for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
		struct fx *f = &F;
		static struct fake k;
		static struct res r[1];
		fake_run(f, &k, modes[i], r, 1);
		assert_int_equal(r[0].status, NET_GRPC_INTERNAL);
		if (strstr(r[0].message, why[i]) == NULL) {
			fail_msg("mode %zu: message \"%s\"", i, r[0].message);
		}
		/* Whole messages before the breach were delivered. */
		assert_int_equal(r[0].n_msgs, modes[i] == FAKE_NO_TRAILERS ? 1 : 0);
		assert_false(r[0].unprocessed);
		fake_close(&k);
		fx_finish(f);
	}
}

/* The peer closes the connection with a call in flight: UNAVAILABLE, on_closed NET_ECLOSED. */
static void test_peer_closes(void **state)
{
	(void)state;
	struct fx *f = &F;
	memset(f, 0, sizeof *f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	static struct raw w;
	raw_open(&f->loop, &w, true);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)w.port);
	fx_connect(f, url, NULL);
	static struct res r;
	memset(&r, 0, sizeof r);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"x", 1, NULL,
					     &r_cbs, &r, NULL),
			 0);
	assert_true(run_until(&f->loop, flag_set, &f->closed, 3000));
	assert_true(w.got_bytes);
	assert_true(r.closed);
	assert_int_equal(r.status, NET_GRPC_UNAVAILABLE);
	assert_true(f->closed_err == NET_ECLOSED || f->closed_err == NET_EIO);
	raw_close(&w);
	fx_finish(f);
}

/* A peer that accepts and never answers: the keepalive PING goes unanswered, NET_ETIMEOUT. */
static void test_keepalive(void **state)
{
	(void)state;
	struct fx *f = &F;
	memset(f, 0, sizeof *f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	static struct raw w;
	raw_open(&f->loop, &w, false);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)w.port);
	struct net_grpc_conn_opts o = { .keepalive_ms = 100, .keepalive_timeout_ms = 150 };
	fx_connect(f, url, &o);
	static struct res r;
	memset(&r, 0, sizeof r);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"x", 1, NULL,
					     &r_cbs, &r, NULL),
			 0);
	assert_true(run_until(&f->loop, flag_set, &f->ready, 3000));
	uint64_t t0 = uv_hrtime();
	assert_true(run_until(&f->loop, flag_set, &f->closed, 3000));
	uint64_t ms = (uv_hrtime() - t0) / 1000000u;
	assert_int_equal(f->closed_err, NET_ETIMEOUT);
	assert_true(ms >= 200 && ms < 2000);
	assert_true(r.closed);
	assert_int_equal(r.status, NET_GRPC_UNAVAILABLE);
	assert_false(r.unprocessed); /* its HEADERS went out: the peer may have acted on it */
	raw_close(&w);
	fx_finish(f);
}

/* Keepalive against a live server: PINGs are answered and the connection stays up. */
static void test_keepalive_alive(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, false);
	struct net_grpc_conn_opts o = { .keepalive_ms = 50, .keepalive_timeout_ms = 100 };
	fx_connect(f, f->url, &o);
	assert_true(run_until(&f->loop, flag_set, &f->ready, 3000));
	run_for(&f->loop, 500);
	assert_false(f->closed);
	static struct res r;
	memset(&r, 0, sizeof r);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"x", 1, NULL,
					     &r_cbs, &r, NULL),
			 0);
	assert_true(run_until(&f->loop, r_closed, &r, 3000));
	assert_int_equal(r.status, NET_GRPC_OK);
	fx_finish(f);
}

/* Cancel from inside on_message: no further callback; the server sees the cancel. */
static void test_cancel_in_on_message(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, false);
	fx_connect(f, f->url, NULL);
	static struct res r, r2;
	memset(&r, 0, sizeof r);
	memset(&r2, 0, sizeof r2);
	r.cancel_after = 3;
	uint8_t req[4];
	be32(req, 100);
	assert_int_equal(
		net_grpc_conn_unary(f->conn, "/t.S/Stream", req, 4, NULL, &r_cbs, &r, &r.call), 0);
	/* And a streaming call cancelled before it ever got anything. */
	struct net_grpc_ccall *c2 = NULL;
	assert_int_equal(net_grpc_conn_call(f->conn, "/t.S/Never", NULL, &r_cbs, &r2, &c2), 0);
	net_grpc_ccall_cancel(c2);
	assert_int_equal(net_grpc_conn_calls(f->conn), 1);
	run_for(&f->loop, 300);
	assert_int_equal(r.n_msgs, 3);
	assert_false(r.closed);
	assert_false(r2.closed);
	assert_int_equal(net_grpc_conn_calls(f->conn), 0);
	/* The connection still works. */
	static struct res r3;
	memset(&r3, 0, sizeof r3);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"z", 1, NULL,
					     &r_cbs, &r3, NULL),
			 0);
	assert_true(run_until(&f->loop, r_closed, &r3, 3000));
	assert_int_equal(r3.status, NET_GRPC_OK);
	fx_finish(f);
}

/* net_grpc_conn_close() with calls open: no call callback, on_closed(0) later from the loop. */
static void test_close_with_calls(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, false);
	fx_connect(f, f->url, NULL);
	static struct res r[3];
	memset(r, 0, sizeof r);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Never", (const uint8_t *)"x", 1,
						     NULL, &r_cbs, &r[i], NULL),
				 0);
	}
	assert_true(run_until(&f->loop, flag_set, &f->ready, 3000));
	uint64_t end = uv_hrtime() + (uint64_t)3000 * 1000000u;
	while (f->n_held < 3 && uv_hrtime() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_int_equal(f->n_held, 3);
	net_grpc_conn_close(f->conn);
	net_grpc_conn_close(f->conn); /* idempotent */
	assert_false(f->closed);
	assert_true(run_until(&f->loop, flag_set, &f->closed, 3000));
	assert_int_equal(f->closed_err, 0);
	for (int i = 0; i < 3; i++) {
		assert_false(r[i].closed);
	}
	/* The server notices the connection is gone. */
	end = uv_hrtime() + (uint64_t)3000 * 1000000u;
	while (f->never_cancelled < 3 && uv_hrtime() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_int_equal(f->never_cancelled, 3);
	fx_finish(f);
}

/* A response message above max_recv_message ends the call INTERNAL; one at the bound passes,
 * split over many DATA frames and reassembled. */
static void test_max_recv_message(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, false);
	struct net_grpc_conn_opts o = { .max_recv_message = BIG_LIMIT };
	fx_connect(f, f->url, &o);
	static struct res r, r2;
	memset(&r, 0, sizeof r);
	memset(&r2, 0, sizeof r2);
	uint8_t req[4];
	be32(req, BIG_LIMIT);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Big", req, 4, NULL, &r_cbs, &r, NULL),
			 0);
	be32(req, BIG_LIMIT + 1);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Big", req, 4, NULL, &r_cbs, &r2, NULL),
			 0);
	assert_true(run_until(&f->loop, r_closed, &r, 3000));
	assert_true(run_until(&f->loop, r_closed, &r2, 3000));
	assert_int_equal(r.status, NET_GRPC_OK);
	assert_int_equal(r.n_msgs, 1);
	assert_int_equal(r.bytes, BIG_LIMIT);
	assert_false(r.bad_bytes);
	assert_int_equal(r2.status, NET_GRPC_INTERNAL);
	assert_int_equal(r2.n_msgs, 0);
	assert_non_null(strstr(r2.message, "larger than max"));

	/* The send side bound: refused here. */
	static uint8_t big[BIG_LIMIT + 1];
	struct net_grpc_conn_opts o2 = { .max_send_message = BIG_LIMIT };
	net_grpc_conn_close(f->conn);
	assert_true(run_until(&f->loop, flag_set, &f->closed, 3000));
	fx_connect(f, f->url, &o2);
	assert_int_equal(
		net_grpc_conn_unary(f->conn, "/t.S/Echo", big, sizeof big, NULL, &r_cbs, &r, NULL),
		NET_ETOOBIG);
	assert_int_equal(net_grpc_conn_calls(f->conn), 0);
	fx_finish(f);
}

/* Backpressure: a server that stops reading closes the stream window; the call's queue fills,
 * send says NET_EAGAIN, and on_writable follows once the server reads again. */
static void test_backpressure(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, false);
	/* No keepalive: nothing but the resume below may prod the server into returning the
	 * stream window. */
	struct net_grpc_conn_opts o = { .max_call_queue = 64u << 10 };
	fx_connect(f, f->url, &o);
	static struct res r;
	memset(&r, 0, sizeof r);
	struct net_grpc_ccall *call = NULL;
	assert_int_equal(net_grpc_conn_call(f->conn, "/t.S/Sink", NULL, &r_cbs, &r, &call), 0);
	static uint8_t chunk[16u << 10];
	size_t sent = 0;
	int rv = 0, eagains = 0;
	uint64_t end = uv_hrtime() + (uint64_t)5000 * 1000000u;
	while (uv_hrtime() < end) {
		rv = net_grpc_ccall_send(call, chunk, sizeof chunk);
		if (rv == NET_EAGAIN) {
			/* Let what can go out go, and try again: EAGAIN must persist. */
			eagains++;
			run_for(&f->loop, 50);
			rv = net_grpc_ccall_send(call, chunk, sizeof chunk);
			if (rv == NET_EAGAIN) {
				break;
			}
		}
		assert_int_equal(rv, 0);
		sent += sizeof chunk;
		if ((sent / sizeof chunk) % 8 == 0) {
			run_for(&f->loop, 5);
		}
	}
	assert_int_equal(rv, NET_EAGAIN);
	/* At least the server's stream window (1 MiB) went before the queue filled. */
	assert_true(sent >= (1u << 20));
	assert_true(sent < (8u << 20));
	/* Every earlier NET_EAGAIN was followed by on_writable once the queue drained. */
	assert_int_equal(r.writable, eagains - 1);
	assert_non_null(f->sink);
	net_grpc_call_pause(f->sink, false);
	end = uv_hrtime() + (uint64_t)3000 * 1000000u;
	while (r.writable < eagains && uv_hrtime() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_int_equal(r.writable, eagains);
	assert_int_equal(net_grpc_ccall_send(call, chunk, sizeof chunk), 0);
	sent += sizeof chunk;
	net_grpc_ccall_half_close(call);
	assert_true(run_until(&f->loop, r_closed, &r, 5000));
	assert_int_equal(r.status, NET_GRPC_OK);
	assert_true(f->sink_done);
	assert_int_equal(f->sink_bytes, sent);
	fx_finish(f);
}

/* TLS with ALPN h2 against the listener: unary and streaming. */
static void test_tls(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, true);
	fx_connect(f, f->url, NULL);
	static struct res r;
	memset(&r, 0, sizeof r);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"secret", 6,
					     NULL, &r_cbs, &r, NULL),
			 0);
	assert_true(run_until(&f->loop, r_closed, &r, 5000));
	assert_true(f->ready);
	assert_int_equal(r.status, NET_GRPC_OK);
	assert_memory_equal(r.last, "secret", 6);
	memset(&r, 0, sizeof r);
	uint8_t req[4];
	be32(req, 1000);
	assert_int_equal(
		net_grpc_conn_unary(f->conn, "/t.S/Stream", req, 4, NULL, &r_cbs, &r, NULL), 0);
	assert_true(run_until(&f->loop, r_closed, &r, 5000));
	assert_int_equal(r.status, NET_GRPC_OK);
	assert_int_equal(r.n_msgs, 1000);
	fx_finish(f);
}

/* TLS against a server whose certificate the client does not trust: on_closed with NET_ECERT. */
static void test_tls_untrusted(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, true);
	net_tls_ctx_free(f->client_tls);
	static const char *const alpn[] = { "h2" };
	struct net_tls_config ccfg = { .role = NET_TLS_CLIENT,
				       .trusted_ca_file = g.server_cert, /* not the CA */
				       .alpn = alpn,
				       .n_alpn = 1 };
	char msg[NET_TLS_ERRMSG_MAX];
	assert_int_equal(net_tls_ctx_new(&ccfg, &f->client_tls, msg, sizeof msg), 0);
	fx_connect(f, f->url, NULL);
	static struct res r;
	memset(&r, 0, sizeof r);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"x", 1, NULL,
					     &r_cbs, &r, NULL),
			 0);
	assert_true(run_until(&f->loop, flag_set, &f->closed, 5000));
	assert_int_equal(f->closed_err, NET_ECERT);
	assert_true(r.closed);
	assert_int_equal(r.status, NET_GRPC_UNAVAILABLE);
	/* The TLS layer's reason reaches the call's message. */
	if (strstr(r.message, "certificate verify failed") == NULL) {
		fail_msg("message \"%s\"", r.message);
	}
	assert_true(r.unprocessed);
	fx_finish(f);
}

/* A server that selects ALPN "http/1.1" is refused before any HTTP/2 goes out. */
static void test_tls_alpn(void **state)
{
	(void)state;
	struct fx *f = &F;
	server_prefers_h1 = true;
	fx_server(f, true);
	server_prefers_h1 = false;
	fx_connect(f, f->url, NULL);
	static struct res r;
	memset(&r, 0, sizeof r);
	assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", (const uint8_t *)"x", 1, NULL,
					     &r_cbs, &r, NULL),
			 0);
	assert_true(run_until(&f->loop, flag_set, &f->closed, 5000));
	assert_int_equal(f->closed_err, NET_EPROTO);
	assert_false(f->ready);
	assert_int_equal(r.status, NET_GRPC_UNAVAILABLE);
	assert_true(r.unprocessed);
	if (strstr(r.message, "ALPN") == NULL) {
		fail_msg("message \"%s\"", r.message);
	}
	fx_finish(f);
}

/* A thousand unary calls at once on one connection all complete; max_calls bounds them. */
#define MANY 1000

static void test_many_concurrent(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_server(f, false);
	struct net_grpc_conn_opts o = { .max_calls = MANY };
	fx_connect(f, f->url, &o);
	assert_true(run_until(&f->loop, flag_set, &f->ready, 3000));
	static struct res r[MANY];
	memset(r, 0, sizeof r);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < MANY; i++) {
			memset(&r[i], 0, sizeof r[i]);
			uint8_t m[4];
			be32(m, (uint32_t)i);
			struct net_grpc_ccall_opts co = { .timeout_ms = 10000 };
			assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", m, 4, &co,
							     &r_cbs, &r[i], NULL),
					 0);
		}
		assert_int_equal(net_grpc_conn_calls(f->conn), MANY);
		static struct res extra;
		assert_int_equal(net_grpc_conn_unary(f->conn, "/t.S/Echo", NULL, 0, NULL, &r_cbs,
						     &extra, NULL),
				 NET_ELIMIT);
		uint64_t end = uv_hrtime() + (uint64_t)10000 * 1000000u;
		while (net_grpc_conn_calls(f->conn) > 0 && uv_hrtime() < end) {
			uv_run(&f->loop, UV_RUN_NOWAIT);
		}
		for (int i = 0; i < MANY; i++) {
			assert_true(r[i].closed);
			assert_int_equal(r[i].status, NET_GRPC_OK);
			uint8_t m[4];
			be32(m, (uint32_t)i);
			assert_int_equal(r[i].last_len, 4);
			assert_memory_equal(r[i].last, m, 4);
		}
	}
	fx_finish(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unary_ok),
		cmocka_unit_test(test_status_message),
		cmocka_unit_test(test_streaming),
		cmocka_unit_test(test_deadline),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_goaway_drain),
		cmocka_unit_test(test_peer_closes),
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_goaway_last_stream),
		cmocka_unit_test(test_refused_stream),
		cmocka_unit_test(test_bad_responses),
		cmocka_unit_test(test_keepalive_alive),
		cmocka_unit_test(test_cancel_in_on_message),
		cmocka_unit_test(test_close_with_calls),
		cmocka_unit_test(test_max_recv_message),
		cmocka_unit_test(test_backpressure),
		cmocka_unit_test(test_tls),
		cmocka_unit_test(test_tls_untrusted),
		cmocka_unit_test(test_tls_alpn),
		cmocka_unit_test(test_many_concurrent),
	};
	return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
