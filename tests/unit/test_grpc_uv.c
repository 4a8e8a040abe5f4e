/* test_grpc_uv.c: net/grpc_uv.h on real sockets (127.0.0.1, port 0). The real etcdctl (Debian's
 * etcd-client 3.4) runs as a child process against a small server that answers
 * /etcdserverpb.KV/Range: plain h2c, TLS, mTLS, a client without a certificate refused, an
 * unknown method, and a graceful close with a call in flight (finishing, and cancelled at the
 * drain deadline). Raw sockets bring garbage, HTTP/1.1 requests with and without the hand-off
 * callback, a slowloris preface, too many connections, and an HTTP/2 client (nghttp2) that stops
 * reading while a handler streams. Every wait has a deadline, every child is killed by pid on
 * every path, and uv_loop_close() returns 0 at the end of each test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
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
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "grpc_uv.h"
#include "certs.h"
#include "tmpdir.h"

/* ---- bounded loop driving (as in test_peer.c) ---- */

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
		} else {
			sleep_ms(0);
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

/* ---- certificates (the generator of test_tls.c) ---- */

struct pki {
	char dir[256];
	char ca[320];
	char server_cert[320]; /* SAN IP:127.0.0.1 */
	char server_key[320];
	char client_cert[320];
	char client_key[320];
};

static struct pki g;

static void path_make(char *out, size_t len, const char *name)
{
	int n = snprintf(out, len, "%s/%s", g.dir, name);
	assert_true(n > 0 && (size_t)n < len);
}

static int pki_setup(void **state)
{
	(void)state;
	h_tmpdir_make(g.dir, sizeof g.dir, "cairn-grpc-uv");
	path_make(g.ca, sizeof g.ca, "ca.pem");
	path_make(g.server_cert, sizeof g.server_cert, "server.pem");
	path_make(g.server_key, sizeof g.server_key, "server.key");
	path_make(g.client_cert, sizeof g.client_cert, "client.pem");
	path_make(g.client_key, sizeof g.client_key, "client.key");
	EVP_PKEY *ca_key = h_key_new();
	X509 *ca = h_cert_new(ca_key, "cairn", "cairn-ca", NULL, NULL, NULL, 1);
	EVP_PKEY *server_key = h_key_new();
	X509 *server = h_cert_new(server_key, "cairn", "cairn-server", ca, ca_key,
				  "IP:127.0.0.1,DNS:localhost", 2);
	EVP_PKEY *client_key = h_key_new();
	X509 *client = h_cert_new(client_key, "cairn", "cairn-client", ca, ca_key, NULL, 3);
	h_pem_write(g.ca, ca, NULL);
	h_pem_write(g.server_cert, server, NULL);
	h_pem_write(g.server_key, NULL, server_key);
	h_pem_write(g.client_cert, client, NULL);
	h_pem_write(g.client_key, NULL, client_key);
	X509 *certs[] = { ca, server, client };
	EVP_PKEY *keys[] = { ca_key, server_key, client_key };
	for (size_t i = 0; i < 3; i++) {
		X509_free(certs[i]);
		EVP_PKEY_free(keys[i]);
	}
	return 0;
}

static int pki_teardown(void **state)
{
	(void)state;
	h_tmpdir_remove(g.dir);
	return 0;
}

/* ---- the server under test ---- */

#define MAX_LOG 64
#define LOG_LINE 400
#define FLOOD_MSG ((size_t)64 << 10)
#define FLOOD_LIMIT ((size_t)512 << 20)

struct fx {
	uv_loop_t loop;
	struct net_grpc_server *srv;
	struct net_tls_ctx *tctx;
	struct net_tls_filter_ctx tls;
	struct net_grpc_listener *l;
	bool closed;
	struct net_grpc_listener_stats final; /* stats seen by the close callback */
	char url[64];
	char log[MAX_LOG][LOG_LINE];
	int n_log;

	/* Range */
	int ranges;
	bool hold;         /* keep the call instead of answering */
	uint64_t delay_ms; /* answer a held call after this long (0: never) */
	struct net_grpc_call *held;
	uint8_t held_reply[512];
	size_t held_len;
	uv_timer_t delay;
	bool answered_late;
	int cancelled;

	/* Flood */
	struct net_grpc_call *flood;
	size_t flood_sent;
	int flood_eagain;
	bool flood_cancelled;

	/* HTTP/1 hand-off */
	struct net_stream *h1;
	char h1_got[512];
	size_t h1_len;
	bool h1_closed;
};

static struct fx F;

static void fx_log(void *data, enum net_log_level level, const char *msg)
{
	struct fx *f = data;
	(void)level;
	if (f->n_log < MAX_LOG) {
		snprintf(f->log[f->n_log++], LOG_LINE, "%s", msg);
	}
}

static bool fx_logged(const struct fx *f, const char *needle)
{
	for (int i = 0; i < f->n_log; i++) {
		if (strstr(f->log[i], needle) != NULL) {
			return true;
		}
	}
	return false;
}

static size_t range_reply(const uint8_t *req, size_t len, uint8_t *out, size_t cap)
{
	Etcdserverpb__RangeRequest *rq = etcdserverpb__range_request__unpack(NULL, len, req);
	assert_non_null(rq);
	Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
	kv.key = rq->key;
	kv.value.data = (uint8_t *)"v";
	kv.value.len = 1;
	kv.create_revision = 3;
	kv.mod_revision = 3;
	kv.version = 1;
	Mvccpb__KeyValue *kvs[1] = { &kv };
	Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
	h.cluster_id = 1;
	h.member_id = 2;
	h.revision = 3;
	h.raft_term = 4;
	Etcdserverpb__RangeResponse rs = ETCDSERVERPB__RANGE_RESPONSE__INIT;
	rs.header = &h;
	rs.n_kvs = 1;
	rs.kvs = kvs;
	rs.count = 1;
	size_t n = etcdserverpb__range_response__get_packed_size(&rs);
	assert_true(n <= cap);
	assert_int_equal(etcdserverpb__range_response__pack(&rs, out), n);
	etcdserverpb__range_request__free_unpacked(rq, NULL);
	return n;
}

static void range_on_message(struct net_grpc_call *call, const uint8_t *data, size_t len,
			     void *user)
{
	struct fx *f = user;
	if (f->hold) {
		assert_null(f->held);
		f->held = call;
		f->held_len = range_reply(data, len, f->held_reply, sizeof f->held_reply);
		return;
	}
	uint8_t out[512];
	size_t n = range_reply(data, len, out, sizeof out);
	assert_int_equal(net_grpc_call_send(call, out, n), 0);
	assert_int_equal(net_grpc_call_finish(call, NET_GRPC_OK, NULL), 0);
}

static void range_on_cancel(struct net_grpc_call *call, void *user)
{
	struct fx *f = user;
	if (f->held == call) {
		f->held = NULL;
	}
	f->cancelled++;
}

static void range_handler(struct net_grpc_call *call, void *data)
{
	struct fx *f = data;
	f->ranges++;
	static const struct net_grpc_call_callbacks cbs = {
		.on_message = range_on_message,
		.on_cancel = range_on_cancel,
	};
	net_grpc_call_set_callbacks(call, &cbs, f);
}

/* Answers the held call later, from the loop: a deferred reply through the notify hook. */
static void delay_cb(uv_timer_t *t)
{
	struct fx *f = t->data;
	if (f->held == NULL) {
		return;
	}
	struct net_grpc_call *call = f->held;
	f->held = NULL;
	f->answered_late = true;
	assert_int_equal(net_grpc_call_send(call, f->held_reply, f->held_len), 0);
	assert_int_equal(net_grpc_call_finish(call, NET_GRPC_OK, NULL), 0);
}

static void flood_pump(struct net_grpc_call *call, struct fx *f)
{
	static uint8_t chunk[FLOOD_MSG];
	while (f->flood_sent < FLOOD_LIMIT) {
		int rv = net_grpc_call_send(call, chunk, sizeof chunk);
		if (rv == NET_EAGAIN) {
			f->flood_eagain++;
			return;
		}
		assert_int_equal(rv, 0);
		f->flood_sent += sizeof chunk;
	}
	net_grpc_call_finish(call, NET_GRPC_OK, NULL);
	f->flood = NULL;
}

static void flood_on_half_close(struct net_grpc_call *call, void *user)
{
	flood_pump(call, user);
}

static void flood_on_writable(struct net_grpc_call *call, void *user)
{
	flood_pump(call, user);
}

static void flood_on_cancel(struct net_grpc_call *call, void *user)
{
	(void)call;
	struct fx *f = user;
	f->flood = NULL;
	f->flood_cancelled = true;
}

static void flood_handler(struct net_grpc_call *call, void *data)
{
	struct fx *f = data;
	f->flood = call;
	static const struct net_grpc_call_callbacks cbs = {
		.on_half_close = flood_on_half_close,
		.on_writable = flood_on_writable,
		.on_cancel = flood_on_cancel,
	};
	net_grpc_call_set_callbacks(call, &cbs, f);
}

/* The HTTP/1 side as issue 5 will have it: a fixed answer, then a clean close. */
static void h1_on_read(struct net_stream *s, const uint8_t *buf, size_t len)
{
	(void)s;
	(void)buf;
	(void)len;
}

static void h1_on_error(struct net_stream *s, int err)
{
	(void)err;
	net_stream_close(s);
}

static void h1_on_close(struct net_stream *s)
{
	struct fx *f = net_stream_data(s);
	f->h1_closed = true;
	f->h1 = NULL;
}

static void on_http1(void *data, struct net_stream *s, const uint8_t *buf, size_t len)
{
	struct fx *f = data;
	static const struct net_stream_cbs cbs = {
		.on_read = h1_on_read,
		.on_error = h1_on_error,
		.on_close = h1_on_close,
	};
	net_stream_set_cbs(s, &cbs, f);
	f->h1 = s;
	f->h1_len = len < sizeof f->h1_got - 1 ? len : sizeof f->h1_got - 1;
	memcpy(f->h1_got, buf, f->h1_len);
	static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
				     "Connection: close\r\n\r\nok\n";
	assert_int_equal(net_stream_write(s, (const uint8_t *)answer, sizeof answer - 1), 0);
	assert_int_equal(net_stream_shutdown(s), 0);
}

enum fx_tls { FX_PLAIN, FX_TLS, FX_MTLS };

static void fx_open(struct fx *f, enum fx_tls tls, const struct net_grpc_listener_opts *opts_in)
{
	memset(f, 0, sizeof *f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_equal(uv_timer_init(&f->loop, &f->delay), 0);
	f->delay.data = f;
	assert_int_equal(net_grpc_server_new(NULL, &f->srv), 0);
	assert_int_equal(
		net_grpc_server_register(f->srv, "/etcdserverpb.KV/Range", range_handler, f), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/test.Stream/Flood", flood_handler, f),
			 0);
	struct net_grpc_listener_opts opts = { 0 };
	if (opts_in != NULL) {
		opts = *opts_in;
	}
	opts.log = fx_log;
	opts.log_data = f;
	struct net_tls_filter_ctx *tp = NULL;
	if (tls != FX_PLAIN) {
		static const char *const alpn[] = { "h2", "http/1.1" };
		struct net_tls_config cfg = { .role = NET_TLS_SERVER,
					      .cert_file = g.server_cert,
					      .key_file = g.server_key,
					      .trusted_ca_file = g.ca,
					      .client_cert_auth = tls == FX_MTLS,
					      .alpn = alpn,
					      .n_alpn = 2 };
		char msg[NET_TLS_ERRMSG_MAX];
		int rv = net_tls_ctx_new(&cfg, &f->tctx, msg, sizeof msg);
		if (rv != 0) {
			fail_msg("net_tls_ctx_new: %s", msg);
		}
		f->tls.server = f->tctx;
		tp = &f->tls;
	}
	const char *scheme = tls == FX_PLAIN ? "http" : "https";
	char url[64];
	snprintf(url, sizeof url, "%s://127.0.0.1:0", scheme);
	assert_int_equal(net_grpc_listener_open(&f->loop, url, f->srv, tp, &opts, &f->l), 0);
	snprintf(f->url, sizeof f->url, "%s://127.0.0.1:%u", scheme,
		 (unsigned)net_grpc_listener_port(f->l));
}

static void fx_closed(struct net_grpc_listener *l, void *data)
{
	struct fx *f = data;
	net_grpc_listener_stats(l, &f->final);
	f->closed = true;
	f->l = NULL;
}

static void fx_close_listener(struct fx *f, uint64_t drain_ms)
{
	if (f->l != NULL) {
		net_grpc_listener_close(f->l, drain_ms, fx_closed, f);
	}
}

static void timer_closed(uv_handle_t *h)
{
	(void)h;
}

/* Closes whatever is left and checks the loop closes cleanly. */
static void fx_finish(struct fx *f)
{
	fx_close_listener(f, 100);
	assert_true(run_until(&f->loop, flag_set, &f->closed, 5000));
	assert_int_equal(f->final.open, 0);
	if (f->h1 != NULL) {
		net_stream_close(f->h1);
	}
	uv_close((uv_handle_t *)&f->delay, timer_closed);
	uint64_t end = uv_hrtime() + 3000u * 1000000u;
	while (uv_loop_alive(&f->loop) && uv_hrtime() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_int_equal(uv_loop_close(&f->loop), 0);
	net_grpc_server_free(f->srv);
	net_tls_ctx_free(f->tctx);
}

static struct net_grpc_listener_stats fx_stats(const struct fx *f)
{
	struct net_grpc_listener_stats st;
	net_grpc_listener_stats(f->l, &st);
	return st;
}

/* ---- etcdctl as a child process ---- */

#define CHILD_OUT 65536

struct child {
	uv_process_t proc;
	uv_pipe_t pipes[2]; /* stdout, stderr */
	char out[2][CHILD_OUT];
	size_t len[2];
	int open; /* handles not closed yet */
	int eofs;
	bool exited;
	int64_t status;
	int term_signal;
	bool killed;
};

static void child_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct child *c = h->data;
	int i = (uv_pipe_t *)h == &c->pipes[0] ? 0 : 1;
	size_t room = CHILD_OUT - 1 - c->len[i];
	if (room == 0) {
		static char sink[4096]; /* beyond the capture bound: read and drop */
		*buf = uv_buf_init(sink, sizeof sink);
		return;
	}
	*buf = uv_buf_init(c->out[i] + c->len[i], (unsigned)room);
}

static void child_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct child *c = s->data;
	int i = (uv_pipe_t *)s == &c->pipes[0] ? 0 : 1;
	if (n > 0 && buf->base == c->out[i] + c->len[i]) {
		c->len[i] += (size_t)n;
		c->out[i][c->len[i]] = '\0';
	} else if (n < 0) {
		uv_read_stop(s);
		c->eofs++;
	}
}

static void child_exit(uv_process_t *p, int64_t status, int term_signal)
{
	struct child *c = p->data;
	c->exited = true;
	c->status = status;
	c->term_signal = term_signal;
}

static void child_handle_closed(uv_handle_t *h)
{
	struct child *c = h->data;
	c->open--;
}

/* Finds etcdctl on PATH, or fails the test saying how to install it. */
static void etcdctl_path(char *out, size_t cap)
{
	const char *path = getenv("PATH");
	char dirs[4096];
	snprintf(dirs, sizeof dirs, "%s", path != NULL ? path : "/usr/bin:/bin");
	char *save = NULL;
	for (char *d = strtok_r(dirs, ":", &save); d != NULL; d = strtok_r(NULL, ":", &save)) {
		snprintf(out, cap, "%s/etcdctl", d);
		if (access(out, X_OK) == 0) {
			return;
		}
	}
	fail_msg("etcdctl not found on PATH: run scripts/deps.sh (it installs etcd-client)");
}

/* Starts `etcdctl --endpoints=<url> <extra...>` with ETCDCTL_API=3. */
static void child_start(struct fx *f, struct child *c, const char *const *extra)
{
	memset(c, 0, sizeof *c);
	char file[512];
	etcdctl_path(file, sizeof file);
	char endpoints[128];
	snprintf(endpoints, sizeof endpoints, "--endpoints=%s", f->url);
	char *args[24];
	int n = 0;
	args[n++] = file;
	args[n++] = endpoints;
	args[n++] = (char *)"--dial-timeout=3s";
	args[n++] = (char *)"--command-timeout=6s";
	for (int i = 0; extra[i] != NULL; i++) {
		assert_true(n < 23);
		args[n++] = (char *)extra[i];
	}
	args[n] = NULL;
	char *env[] = { (char *)"ETCDCTL_API=3", (char *)"PATH=/usr/bin:/bin", (char *)"HOME=/tmp",
			NULL };
	for (int i = 0; i < 2; i++) {
		assert_int_equal(uv_pipe_init(&f->loop, &c->pipes[i], 0), 0);
		c->pipes[i].data = c;
		c->open++;
	}
	uv_stdio_container_t stdio[3];
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&c->pipes[0];
	stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[2].data.stream = (uv_stream_t *)&c->pipes[1];
	uv_process_options_t po = { 0 };
	po.file = file;
	po.args = args;
	po.env = env;
	po.stdio = stdio;
	po.stdio_count = 3;
	po.exit_cb = child_exit;
	c->proc.data = c;
	int rv = uv_spawn(&f->loop, &c->proc, &po);
	if (rv != 0) {
		for (int i = 0; i < 2; i++) {
			uv_close((uv_handle_t *)&c->pipes[i], child_handle_closed);
		}
		fail_msg("uv_spawn %s: %s", file, uv_strerror(rv));
	}
	c->open++;
	for (int i = 0; i < 2; i++) {
		assert_int_equal(
			uv_read_start((uv_stream_t *)&c->pipes[i], child_alloc, child_read), 0);
	}
}

static bool child_done(void *arg)
{
	struct child *c = arg;
	return c->exited && c->eofs == 2;
}

static bool child_gone(void *arg)
{
	struct child *c = arg;
	return c->open == 0;
}

/* Waits for the child (running the loop meanwhile), killing it by pid at the deadline, then
 * closes its handles. Returns its exit status, or -1 if it had to be killed. */
static int child_wait(struct fx *f, struct child *c, uint64_t timeout_ms)
{
	if (!run_until(&f->loop, child_done, c, timeout_ms)) {
		if (!c->exited) {
			uv_process_kill(&c->proc, SIGKILL);
			c->killed = true;
		}
		run_until(&f->loop, child_done, c, 3000);
	}
	for (int i = 0; i < 2; i++) {
		uv_close((uv_handle_t *)&c->pipes[i], child_handle_closed);
	}
	uv_close((uv_handle_t *)&c->proc, child_handle_closed);
	assert_true(run_until(&f->loop, child_gone, c, 3000));
	return c->killed ? -1 : (int)c->status;
}

static int etcdctl(struct fx *f, struct child *c, const char *const *extra)
{
	child_start(f, c, extra);
	return child_wait(f, c, 20000);
}

static void expect_range_json(const struct child *c, int status)
{
	if (status != 0 || strstr(c->out[0], "\"key\":\"Zm9v\"") == NULL ||
	    strstr(c->out[0], "\"revision\":3") == NULL) {
		fail_msg("etcdctl get: exit %d\nstdout: %s\nstderr: %s", status, c->out[0],
			 c->out[1]);
	}
	assert_non_null(strstr(c->out[0], "\"cluster_id\":1"));
	assert_non_null(strstr(c->out[0], "\"raft_term\":4"));
}

static const char *const get_foo[] = { "get", "foo", "-w", "json", NULL };

/* ---- etcdctl tests ---- */

static void test_etcdctl_plain(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_open(f, FX_PLAIN, NULL);
	static struct child c;
	expect_range_json(&c, etcdctl(f, &c, get_foo));
	assert_int_equal(f->ranges, 1);
	struct net_grpc_listener_stats st = fx_stats(f);
	assert_true(st.accepted >= 1);
	assert_true(st.bytes_in > 24 && st.bytes_out > 0);
	fx_finish(f);
}

static void test_etcdctl_unimplemented(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_open(f, FX_PLAIN, NULL);
	static struct child c;
	static const char *const put[] = { "put", "foo", "bar", NULL };
	int status = etcdctl(f, &c, put);
	if (status == 0 || strstr(c.out[1], "code = Unimplemented") == NULL) {
		fail_msg("etcdctl put: exit %d\nstdout: %s\nstderr: %s", status, c.out[0],
			 c.out[1]);
	}
	/* The server keeps serving. */
	expect_range_json(&c, etcdctl(f, &c, get_foo));
	fx_finish(f);
}

static void test_etcdctl_tls(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_open(f, FX_TLS, NULL);
	static struct child c;
	char cacert[400];
	snprintf(cacert, sizeof cacert, "--cacert=%s", g.ca);
	const char *const args[] = { cacert, "get", "foo", "-w", "json", NULL };
	expect_range_json(&c, etcdctl(f, &c, args));
	fx_finish(f);
}

static void test_etcdctl_mtls(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_open(f, FX_MTLS, NULL);
	static struct child c;
	char cacert[400], cert[400], key[400];
	snprintf(cacert, sizeof cacert, "--cacert=%s", g.ca);
	snprintf(cert, sizeof cert, "--cert=%s", g.client_cert);
	snprintf(key, sizeof key, "--key=%s", g.client_key);
	const char *const with[] = { cacert, cert, key, "get", "foo", "-w", "json", NULL };
	expect_range_json(&c, etcdctl(f, &c, with));
	assert_int_equal(f->ranges, 1);

	/* Without a client certificate: refused in the handshake, never served. */
	const char *const without[] = { cacert, "--dial-timeout=1s", "get", "foo", NULL };
	int status = etcdctl(f, &c, without);
	assert_true(status != 0);
	assert_null(strstr(c.out[0], "foo"));
	assert_int_equal(f->ranges, 1);
	assert_true(fx_logged(f, "TLS handshake failed"));
	fx_finish(f);
}

/* Graceful close: the call in flight is answered after the close began, and etcdctl gets it. */
static void test_close_with_call_in_flight(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_open(f, FX_PLAIN, NULL);
	f->hold = true;
	static struct child c;
	child_start(f, &c, get_foo);
	uint64_t end = uv_hrtime() + 15000u * 1000000u;
	while (f->held == NULL && uv_hrtime() < end && !c.exited) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_non_null(f->held);
	net_grpc_listener_close(f->l, 5000, fx_closed, f);
	uv_timer_start(&f->delay, delay_cb, 300, 0);
	int status = child_wait(f, &c, 15000);
	expect_range_json(&c, status);
	assert_true(f->answered_late);
	assert_true(run_until(&f->loop, flag_set, &f->closed, 5000));
	assert_int_equal(f->cancelled, 0);
	assert_int_equal(f->final.open, 0);
	fx_finish(f);
}

/* Graceful close whose deadline passes: the call is cancelled, the client gets an error. */
static void test_close_deadline_cancels(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_open(f, FX_PLAIN, NULL);
	f->hold = true;
	static struct child c;
	child_start(f, &c, get_foo);
	uint64_t end = uv_hrtime() + 15000u * 1000000u;
	while (f->held == NULL && uv_hrtime() < end && !c.exited) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_non_null(f->held);
	uint64_t t0 = uv_hrtime();
	net_grpc_listener_close(f->l, 200, fx_closed, f);
	assert_true(run_until(&f->loop, flag_set, &f->closed, 5000));
	uint64_t ms = (uv_hrtime() - t0) / 1000000u;
	assert_true(ms >= 150);
	assert_int_equal(f->cancelled, 1);
	assert_null(f->held);
	int status = child_wait(f, &c, 15000);
	assert_true(status != 0);
	assert_null(strstr(c.out[0], "Zm9v"));
	fx_finish(f);
}

/* ---- raw sockets ---- */

static int raw_connect(const struct fx *f, int rcvbuf)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	if (rcvbuf > 0) {
		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
	}
	struct sockaddr_in sa = { 0 };
	sa.sin_family = AF_INET;
	sa.sin_port = htons(net_grpc_listener_port(f->l));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
		assert_true(k > 0);
		b += k;
		n -= (size_t)k;
	}
}

struct raw {
	int fd;
	char buf[8192];
	size_t len;
	bool eof;
};

/* Reads what is there without blocking; true once the server closed the connection. */
static bool raw_eof(void *arg)
{
	struct raw *r = arg;
	for (;;) {
		char tmp[4096];
		ssize_t k = recv(r->fd, tmp, sizeof tmp, MSG_DONTWAIT);
		if (k > 0) {
			size_t room = sizeof r->buf - 1 - r->len;
			size_t m = (size_t)k < room ? (size_t)k : room;
			memcpy(r->buf + r->len, tmp, m);
			r->len += m;
			r->buf[r->len] = '\0';
			continue;
		}
		if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			r->eof = true;
		}
		return r->eof;
	}
}

static void test_garbage(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_open(f, FX_PLAIN, NULL);
	struct raw r = { .fd = raw_connect(f, 0) };
	raw_send(r.fd, "\x16\x03\x01garbage\r\n\r\n", 14);
	assert_true(run_until(&f->loop, raw_eof, &r, 3000));
	assert_int_equal(r.len, 0);
	close(r.fd);
	assert_true(fx_logged(f, "neither an HTTP/2 preface nor an HTTP/1.x request line"));
	assert_int_equal(fx_stats(f).dropped, 1);
	/* A bad frame after a good preface: nghttp2's GOAWAY, then the close. */
	struct raw r2 = { .fd = raw_connect(f, 0) };
	raw_send(r2.fd, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x01\x07\x00\x00\x00\x00\x00\x00",
		 34);
	assert_true(run_until(&f->loop, raw_eof, &r2, 3000));
	close(r2.fd);
	assert_true(fx_logged(f, "HTTP/2 error"));
	fx_finish(f);
}

static const char http1_req[] = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

static void test_http1_without_callback(void **state)
{
	(void)state;
	struct fx *f = &F;
	fx_open(f, FX_PLAIN, NULL);
	struct raw r = { .fd = raw_connect(f, 0) };
	raw_send(r.fd, http1_req, sizeof http1_req - 1);
	assert_true(run_until(&f->loop, raw_eof, &r, 3000));
	close(r.fd);
	assert_true(strncmp(r.buf, "HTTP/1.1 505 ", 13) == 0);
	assert_non_null(strstr(r.buf, "\r\n\r\nthis port serves gRPC over HTTP/2 only\n"));
	assert_int_equal(fx_stats(f).http1, 1);
	fx_finish(f);
}

static void test_http1_hand_off(void **state)
{
	(void)state;
	struct fx *f = &F;
	struct net_grpc_listener_opts o = { .on_http1 = on_http1, .http1_data = f };
	fx_open(f, FX_PLAIN, &o);
	struct raw r = { .fd = raw_connect(f, 0) };
	/* In two pieces: the request line is complete only with the second. */
	raw_send(r.fd, http1_req, 7);
	run_for(&f->loop, 50);
	raw_send(r.fd, http1_req + 7, sizeof http1_req - 8);
	assert_true(run_until(&f->loop, raw_eof, &r, 3000));
	close(r.fd);
	assert_true(strncmp(r.buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
	assert_true(strncmp(f->h1_got, "GET /health HTTP/1.1\r\n", 22) == 0);
	assert_true(run_until(&f->loop, flag_set, &f->h1_closed, 3000));
	struct net_grpc_listener_stats st = fx_stats(f);
	assert_int_equal(st.http1, 1);
	assert_int_equal(st.open, 0); /* the stream is the callback's now */
	fx_finish(f);
}

static void test_slowloris(void **state)
{
	(void)state;
	struct fx *f = &F;
	struct net_grpc_listener_opts o = { .preface_timeout_ms = 200 };
	fx_open(f, FX_PLAIN, &o);
	/* Half a preface, then nothing. */
	struct raw r = { .fd = raw_connect(f, 0) };
	raw_send(r.fd, "PRI * HTTP/2", 12);
	uint64_t t0 = uv_hrtime();
	assert_true(run_until(&f->loop, raw_eof, &r, 3000));
	uint64_t ms = (uv_hrtime() - t0) / 1000000u;
	close(r.fd);
	assert_true(ms >= 150 && ms < 2000);
	/* The whole preface and half a SETTINGS frame: still not enough. */
	struct raw r2 = { .fd = raw_connect(f, 0) };
	raw_send(r2.fd, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00",
		 34);
	assert_true(run_until(&f->loop, raw_eof, &r2, 3000));
	close(r2.fd);
	assert_true(fx_logged(f, "within 200 ms"));
	assert_int_equal(fx_stats(f).dropped, 2);
	/* A complete preface and SETTINGS: the connection stays. */
	struct raw r3 = { .fd = raw_connect(f, 0) };
	raw_send(r3.fd, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", 33);
	run_for(&f->loop, 500);
	assert_false(raw_eof(&r3));
	assert_int_equal(fx_stats(f).open, 1);
	close(r3.fd);
	fx_finish(f);
}

static bool open_is(void *arg)
{
	const size_t *want = arg;
	return fx_stats(&F).open == *want;
}

static void test_too_many_connections(void **state)
{
	(void)state;
	struct fx *f = &F;
	struct net_grpc_listener_opts o = { .max_connections = 2 };
	fx_open(f, FX_PLAIN, &o);
	struct raw a = { .fd = raw_connect(f, 0) };
	struct raw b = { .fd = raw_connect(f, 0) };
	size_t two = 2;
	assert_true(run_until(&f->loop, open_is, &two, 3000));
	struct raw c = { .fd = raw_connect(f, 0) };
	assert_true(run_until(&f->loop, raw_eof, &c, 3000));
	close(c.fd);
	assert_false(raw_eof(&a));
	assert_false(raw_eof(&b));
	struct net_grpc_listener_stats st = fx_stats(f);
	assert_int_equal(st.refused, 1);
	assert_int_equal(st.open, 2);
	close(a.fd);
	size_t one = 1;
	assert_true(run_until(&f->loop, open_is, &one, 3000));
	/* Room again: a new connection is taken. */
	struct raw d = { .fd = raw_connect(f, 0) };
	assert_true(run_until(&f->loop, open_is, &two, 3000));
	assert_int_equal(fx_stats(f).refused, 1);
	close(b.fd);
	close(d.fd);
	fx_finish(f);
}

/* An HTTP/2 client (nghttp2) that opens wide windows, asks /test.Stream/Flood, and never reads:
 * the server's queue stays at its bound, the handler is pushed back, and the close of the
 * client cancels the call. */
static ssize_t empty_msg_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
			      uint32_t *flags, nghttp2_data_source *src, void *user)
{
	(void)s;
	(void)id;
	(void)src;
	(void)user;
	assert_true(len >= 5);
	memset(buf, 0, 5); /* one empty gRPC message */
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	return 5;
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE \
	}

static size_t h2_flood_request(uint8_t *out, size_t cap)
{
	nghttp2_session_callbacks *cbs;
	assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
	nghttp2_session *cli;
	assert_int_equal(nghttp2_session_client_new(&cli, cbs, NULL), 0);
	nghttp2_session_callbacks_del(cbs);
	nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0x7fffffff } };
	assert_int_equal(nghttp2_submit_settings(cli, NGHTTP2_FLAG_NONE, iv, 1), 0);
	assert_int_equal(
		nghttp2_submit_window_update(cli, NGHTTP2_FLAG_NONE, 0, 0x7fffffff - 65535), 0);
	nghttp2_nv nva[] = {
		NV(":method", "POST"),
		NV(":scheme", "http"),
		NV(":path", "/test.Stream/Flood"),
		NV(":authority", "127.0.0.1"),
		NV("content-type", "application/grpc"),
		NV("te", "trailers"),
	};
	nghttp2_data_provider prd = { .read_callback = empty_msg_read };
	assert_true(nghttp2_submit_request(cli, NULL, nva, sizeof nva / sizeof nva[0], &prd, NULL) >
		    0);
	size_t n = 0;
	for (;;) {
		const uint8_t *p;
		ssize_t k = nghttp2_session_mem_send(cli, &p);
		assert_true(k >= 0);
		if (k == 0) {
			break;
		}
		assert_true(n + (size_t)k <= cap);
		memcpy(out + n, p, (size_t)k);
		n += (size_t)k;
	}
	nghttp2_session_del(cli);
	return n;
}

static bool flood_stalled(void *arg)
{
	struct fx *f = arg;
	return f->flood_eagain > 0;
}

static bool flood_over(void *arg)
{
	struct fx *f = arg;
	return f->flood_cancelled && fx_stats(f).open == 0;
}

static void test_reader_stops(void **state)
{
	(void)state;
	struct fx *f = &F;
	const size_t high_water = 256u << 10;
	struct net_grpc_listener_opts o = { .stream = { .high_water = high_water } };
	fx_open(f, FX_PLAIN, &o);
	uint8_t req[1024];
	size_t n = h2_flood_request(req, sizeof req);
	struct raw r = { .fd = raw_connect(f, 4096) };
	raw_send(r.fd, req, n);
	assert_true(run_until(&f->loop, flood_stalled, f, 5000));
	run_for(&f->loop, 500);
	size_t sent = f->flood_sent;
	struct net_grpc_listener_stats st = fx_stats(f);
	run_for(&f->loop, 500);
	/* Stalled: nothing more accepted from the handler, the queue at its bound. */
	assert_int_equal(f->flood_sent, sent);
	assert_true(st.queued <= high_water + (16u << 10));
	assert_true(st.queued >= high_water / 2);
	/* The handler's own queue (max_call_queue, 8 MiB) plus the kernel's buffers. */
	assert_true(sent < (size_t)48 << 20);
	assert_non_null(f->flood);
	close(r.fd);
	assert_true(run_until(&f->loop, flood_over, f, 3000));
	fx_finish(f);
}

/* True once a frame of `type` is among the bytes read (the server's frames, walked by header). */
struct frame_wait {
	struct raw *r;
	uint8_t type;
};

static bool raw_has_frame(void *arg)
{
	struct frame_wait *w = arg;
	raw_eof(w->r);
	const uint8_t *p = (const uint8_t *)w->r->buf;
	size_t off = 0;
	while (off + 9 <= w->r->len) {
		size_t len = (size_t)p[off] << 16 | (size_t)p[off + 1] << 8 | p[off + 2];
		if (p[off + 3] == w->type) {
			return true;
		}
		off += 9 + len;
	}
	return false;
}

/* With idle_timeout_ms, a connection without calls and without bytes is drained: GOAWAY. */
static void test_idle_timeout(void **state)
{
	(void)state;
	struct fx *f = &F;
	struct net_grpc_listener_opts o = { .idle_timeout_ms = 200 };
	fx_open(f, FX_PLAIN, &o);
	struct raw r = { .fd = raw_connect(f, 0) };
	raw_send(r.fd, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", 33);
	uint64_t t0 = uv_hrtime();
	struct frame_wait w = { .r = &r, .type = 0x7 /* GOAWAY */ };
	assert_true(run_until(&f->loop, raw_has_frame, &w, 3000));
	uint64_t ms = (uv_hrtime() - t0) / 1000000u;
	assert_true(ms >= 150 && ms < 2000);
	close(r.fd);
	fx_finish(f);
}

/* ---- a TLS client on a non-blocking socket, driven while the loop runs ---- */

struct tls_cli {
	SSL_CTX *ctx;
	SSL *ssl;
	struct raw r;
	bool done;
	bool failed;
};

static void tls_cli_open(struct tls_cli *t, const struct fx *f, const char *alpn)
{
	memset(t, 0, sizeof *t);
	t->ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(t->ctx);
	assert_int_equal(SSL_CTX_load_verify_locations(t->ctx, g.ca, NULL), 1);
	SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
	if (alpn != NULL) {
		unsigned char wire[32];
		size_t n = strlen(alpn);
		assert_true(n < sizeof wire);
		wire[0] = (unsigned char)n;
		memcpy(wire + 1, alpn, n);
		assert_int_equal(SSL_CTX_set_alpn_protos(t->ctx, wire, (unsigned)(n + 1)), 0);
	}
	t->r.fd = raw_connect(f, 0);
	assert_int_equal(fcntl(t->r.fd, F_SETFL, fcntl(t->r.fd, F_GETFL) | O_NONBLOCK), 0);
	t->ssl = SSL_new(t->ctx);
	assert_non_null(t->ssl);
	assert_int_equal(SSL_set_fd(t->ssl, t->r.fd), 1);
	SSL_set_connect_state(t->ssl);
}

static bool tls_cli_handshake(void *arg)
{
	struct tls_cli *t = arg;
	int rv = SSL_do_handshake(t->ssl);
	if (rv == 1) {
		t->done = true;
	} else {
		int e = SSL_get_error(t->ssl, rv);
		t->failed = e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
	}
	return t->done || t->failed;
}

static bool tls_cli_eof(void *arg)
{
	struct tls_cli *t = arg;
	for (;;) {
		char tmp[4096];
		int k = SSL_read(t->ssl, tmp, sizeof tmp);
		if (k > 0) {
			size_t room = sizeof t->r.buf - 1 - t->r.len;
			size_t m = (size_t)k < room ? (size_t)k : room;
			memcpy(t->r.buf + t->r.len, tmp, m);
			t->r.len += m;
			t->r.buf[t->r.len] = '\0';
			continue;
		}
		int e = SSL_get_error(t->ssl, k);
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
			t->r.eof = true;
		}
		return t->r.eof;
	}
}

static void tls_cli_close(struct tls_cli *t)
{
	SSL_free(t->ssl);
	SSL_CTX_free(t->ctx);
	close(t->r.fd);
}

/* Over TLS, ALPN "http/1.1" goes to on_http1; an HTTP/2 preface without ALPN "h2" is closed. */
static void test_tls_http1(void **state)
{
	(void)state;
	struct fx *f = &F;
	struct net_grpc_listener_opts o = { .on_http1 = on_http1, .http1_data = f };
	fx_open(f, FX_TLS, &o);
	static struct tls_cli t;
	tls_cli_open(&t, f, "http/1.1");
	assert_true(run_until(&f->loop, tls_cli_handshake, &t, 3000));
	assert_true(t.done);
	const unsigned char *sel = NULL;
	unsigned sel_len = 0;
	SSL_get0_alpn_selected(t.ssl, &sel, &sel_len);
	assert_int_equal(sel_len, 8);
	assert_memory_equal(sel, "http/1.1", 8);
	assert_int_equal(SSL_write(t.ssl, http1_req, (int)(sizeof http1_req - 1)),
			 (int)(sizeof http1_req - 1));
	assert_true(run_until(&f->loop, tls_cli_eof, &t, 3000));
	assert_true(strncmp(t.r.buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
	assert_true(strncmp(f->h1_got, "GET /health HTTP/1.1\r\n", 22) == 0);
	tls_cli_close(&t);
	assert_true(run_until(&f->loop, flag_set, &f->h1_closed, 3000));

	tls_cli_open(&t, f, NULL);
	assert_true(run_until(&f->loop, tls_cli_handshake, &t, 3000));
	assert_true(t.done);
	assert_int_equal(SSL_write(t.ssl, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24), 24);
	assert_true(run_until(&f->loop, tls_cli_eof, &t, 3000));
	assert_int_equal(t.r.len, 0);
	tls_cli_close(&t);
	assert_true(fx_logged(f, "HTTP/2 preface over TLS without ALPN"));
	assert_int_equal(fx_stats(f).http1, 1);
	fx_finish(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_etcdctl_plain),
		cmocka_unit_test(test_etcdctl_unimplemented),
		cmocka_unit_test(test_etcdctl_tls),
		cmocka_unit_test(test_etcdctl_mtls),
		cmocka_unit_test(test_close_with_call_in_flight),
		cmocka_unit_test(test_close_deadline_cancels),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_http1_without_callback),
		cmocka_unit_test(test_http1_hand_off),
		cmocka_unit_test(test_slowloris),
		cmocka_unit_test(test_too_many_connections),
		cmocka_unit_test(test_reader_stops),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_tls_http1),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
