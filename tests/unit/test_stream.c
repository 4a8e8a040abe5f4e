/* test_stream.c: TCP streams (net/stream.h) over real sockets on loopback only (127.0.0.1 and
 * ::1, ephemeral ports): echo, backpressure with a paused reader, connect refused and timed out,
 * IPv6, a filter with a handshake between socket and user, URL parsing. Every wait on the loop
 * has a deadline; every test closes what it opened and checks that uv_loop_close returns 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "stream.h"

/* ---- bounded loop driving ---- */

typedef bool (*cond_fn)(void *arg);

static bool flag_set(void *arg)
{
	return *(bool *)arg;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Runs the loop until cond holds or timeout_ms pass; returns whether cond held. Polls without
 * blocking (UV_RUN_NOWAIT, 1 ms naps) so a stuck test ends at its deadline, never hangs. */
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

/* Lets every close complete, then closes the loop: 0 means nothing was left open. */
static void drain_and_close(uv_loop_t *loop)
{
	uint64_t end = uv_hrtime() + 3000u * 1000000u;
	while (uv_loop_alive(loop) && uv_hrtime() < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- a connection end that records what happens to it ---- */

struct end {
	struct net_stream *s;
	bool connected, failed, ended, drained, closed;
	int status, err;
	uint8_t *rx;
	size_t rx_len, rx_cap;
	bool echo;       /* write back what is read */
	size_t pause_at; /* once this many bytes arrived, pause reading (once) */
	bool paused;
};

static void end_on_connect(struct net_stream *s, int status)
{
	struct end *e = net_stream_data(s);
	e->status = status;
	if (status == 0) {
		e->connected = true;
	} else {
		e->failed = true;
	}
}

static void end_on_read(struct net_stream *s, const uint8_t *buf, size_t len)
{
	struct end *e = net_stream_data(s);
	if (e->rx_len + len > e->rx_cap) {
		size_t cap = e->rx_cap ? e->rx_cap * 2 : 4096;
		while (cap < e->rx_len + len) {
			cap *= 2;
		}
		e->rx = realloc(e->rx, cap);
		assert_non_null(e->rx);
		e->rx_cap = cap;
	}
	memcpy(e->rx + e->rx_len, buf, len);
	e->rx_len += len;
	if (e->echo) {
		assert_int_equal(net_stream_write(s, buf, len), 0);
	}
	if (e->pause_at != 0 && !e->paused && e->rx_len >= e->pause_at) {
		e->paused = true;
		assert_int_equal(net_stream_read_stop(s), 0);
	}
}

static void end_on_error(struct net_stream *s, int err)
{
	struct end *e = net_stream_data(s);
	e->ended = true;
	e->err = err;
}

static void end_on_drained(struct net_stream *s)
{
	struct end *e = net_stream_data(s);
	e->drained = true;
}

static void end_on_close(struct net_stream *s)
{
	struct end *e = net_stream_data(s);
	e->closed = true;
	e->s = NULL;
}

static const struct net_stream_cbs end_cbs = {
	.on_connect = end_on_connect,
	.on_read = end_on_read,
	.on_error = end_on_error,
	.on_drained = end_on_drained,
	.on_close = end_on_close,
};

static void end_close(uv_loop_t *loop, struct end *e)
{
	if (e->s != NULL) {
		net_stream_close(e->s);
		assert_true(run_until(loop, flag_set, &e->closed, 2000));
	}
	free(e->rx);
	e->rx = NULL;
}

/* The server side: the first accepted connection goes to `server`. */
struct srv {
	struct end server;
	int accepted;
	bool pause_reads; /* stop reading right at accept */
	bool listener_closed;
};

static void srv_on_accept(struct net_listener *l, struct net_stream *s)
{
	struct srv *v = net_listener_data(l);
	v->accepted++;
	if (v->accepted > 1) {
		net_stream_close(s);
		return;
	}
	v->server.s = s;
	net_stream_set_cbs(s, &end_cbs, &v->server);
	if (v->pause_reads) {
		assert_int_equal(net_stream_read_stop(s), 0);
	}
}

static void srv_on_listener_close(struct net_listener *l)
{
	struct srv *v = net_listener_data(l);
	v->listener_closed = true;
}

static void listener_close(uv_loop_t *loop, struct net_listener *l, struct srv *v)
{
	net_listener_close(l, srv_on_listener_close);
	assert_true(run_until(loop, flag_set, &v->listener_closed, 2000));
}

static bool server_accepted(void *arg)
{
	return ((struct srv *)arg)->accepted > 0;
}

struct rx_want {
	struct end *e;
	size_t n;
};

static bool rx_reached(void *arg)
{
	struct rx_want *w = arg;
	return w->e->rx_len >= w->n;
}

static char *url_of(char *buf, size_t cap, const char *host, uint16_t port)
{
	snprintf(buf, cap, "http://%s:%u", host, (unsigned)port);
	return buf;
}

/* ---- tests ---- */

static void test_url_parse(void **state)
{
	(void)state;
	struct net_url u;
	assert_int_equal(net_url_parse("http://127.0.0.1:2380", &u), 0);
	assert_false(u.tls);
	assert_false(u.ipv6);
	assert_int_equal(u.port, 2380);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(net_url_parse("https://[::1]:2379/", &u), 0);
	assert_true(u.tls);
	assert_true(u.ipv6);
	assert_string_equal(u.host, "::1");
	assert_int_equal(net_url_parse("http://0.0.0.0:0", &u), 0);
	assert_int_equal(u.port, 0);

	static const char *const bad[] = {
		"",
		"127.0.0.1:2380",
		"ftp://127.0.0.1:1",
		"http://127.0.0.1",
		"http://127.0.0.1:",
		"http://127.0.0.1:65536",
		"http://127.0.0.1:123456",
		"http://127.0.0.1:80x",
		"http://127.0.0.1:80/path",
		"http://bad_name:2380",
		"http://-lead.example:2380",
		"http://a b:2380",
		"http://[::1:2380",
		"http://[::1]2380",
		"http://::1:2380",
		"http://:2380",
		"http://999.1.1.1:1",
		"http://[0123456789012345678901234567890123456789012345678901234567890123456789]:1",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(net_url_parse(bad[i], &u), NET_EADDR);
	}
	assert_int_equal(net_url_parse(NULL, &u), NET_EINVAL);
	/* A host name is kept as it is, to be resolved when it is dialed. */
	assert_int_equal(net_url_parse("https://node-1.example:2380/", &u), 0);
	assert_true(u.name);
	assert_true(u.tls);
	assert_string_equal(u.host, "node-1.example");
	assert_int_equal(u.port, 2380);
	assert_int_equal(net_url_parse("http://127.0.0.1:1", &u), 0);
	assert_false(u.name);
}

/* Bytes written by a client come back from an echoing server, in order, in pieces. */
static void echo_on(const char *host)
{
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct srv v = { 0 };
	v.server.echo = true;
	char url[80];
	struct net_listener *l = NULL;
	int rv = net_listener_open(&loop, url_of(url, sizeof url, host, 0), 0, NULL, srv_on_accept,
				   &v, &l);
	assert_int_equal(rv, 0);
	uint16_t port = net_listener_port(l);
	assert_true(port != 0);

	struct end c = { 0 };
	assert_int_equal(net_stream_connect(&loop, url_of(url, sizeof url, host, port), NULL,
					    &end_cbs, &c, &c.s),
			 0);
	assert_int_equal(net_stream_write(c.s, (const uint8_t *)"x", 1), NET_ECLOSED);
	assert_true(run_until(&loop, flag_set, &c.connected, 2000));
	assert_true(run_until(&loop, server_accepted, &v, 2000));

	uint8_t msg[1000];
	for (size_t i = 0; i < sizeof msg; i++) {
		msg[i] = (uint8_t)(i * 13);
	}
	size_t total = 0;
	for (int i = 0; i < 50; i++) {
		assert_int_equal(net_stream_write(c.s, msg, sizeof msg), 0);
		total += sizeof msg;
	}
	assert_int_equal(net_stream_write(c.s, msg, 0), 0);
	struct rx_want w = { &c, total };
	assert_true(run_until(&loop, rx_reached, &w, 3000));
	assert_int_equal(c.rx_len, total);
	for (size_t i = 0; i < total; i++) {
		assert_int_equal(c.rx[i], msg[i % sizeof msg]);
	}

	/* The server closes: the client sees the end, then closes too. */
	end_close(&loop, &v.server);
	assert_true(run_until(&loop, flag_set, &c.ended, 2000));
	assert_int_equal(c.err, NET_ECLOSED);
	assert_int_equal(net_stream_write(c.s, msg, 1), NET_ECLOSED);
	end_close(&loop, &c);
	listener_close(&loop, l, &v);
	drain_and_close(&loop);
}

static void test_echo(void **state)
{
	(void)state;
	echo_on("127.0.0.1");
}

static void test_ipv6(void **state)
{
	(void)state;
	/* Probe ::1 with a plain socket first, so a machine without IPv6 skips, not fails. */
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	bool have = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
	if (fd >= 0) {
		close(fd);
	}
	if (!have) {
		fprintf(stderr, "test_ipv6: skipped: this machine has no ::1\n");
		skip();
	}
	echo_on("[::1]");
}

/* A reader that stops reading makes the writer's queue fill: writes get NET_EAGAIN, and once
 * the reader resumes the writer hears on_drained and every byte arrives in order. */
static void test_backpressure(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct srv v = { .pause_reads = true };
	struct net_listener *l = NULL;
	assert_int_equal(
		net_listener_open(&loop, "http://127.0.0.1:0", 0, NULL, srv_on_accept, &v, &l), 0);
	char url[80];
	struct net_stream_opts o = { .high_water = 256 << 10, .low_water = 64 << 10 };
	struct end c = { 0 };
	assert_int_equal(net_stream_connect(
				 &loop, url_of(url, sizeof url, "127.0.0.1", net_listener_port(l)),
				 &o, &end_cbs, &c, &c.s),
			 0);
	assert_true(run_until(&loop, flag_set, &c.connected, 2000));
	assert_true(run_until(&loop, server_accepted, &v, 2000));

	/* One write above the high-water mark can never fit. */
	static uint8_t chunk[64 << 10];
	uint8_t *huge = calloc(1, (256 << 10) + 1);
	assert_non_null(huge);
	assert_int_equal(net_stream_write(c.s, huge, (256 << 10) + 1), NET_ETOOBIG);
	free(huge);

	/* Fill the kernel's buffers (a few MB on loopback) and then our queue. Bounded: 512 MiB
	 * of writes without NET_EAGAIN fails the test. */
	size_t written = 0;
	bool again = false;
	for (int i = 0; i < 8192 && !again; i++) {
		for (size_t k = 0; k < sizeof chunk; k++) {
			chunk[k] = (uint8_t)((written + k) * 7);
		}
		int rv = net_stream_write(c.s, chunk, sizeof chunk);
		if (rv == NET_EAGAIN) {
			again = true;
			break;
		}
		assert_int_equal(rv, 0);
		written += sizeof chunk;
		assert_true(net_stream_queued(c.s) <= o.high_water);
		/* Let libuv move queued bytes to the kernel between writes. */
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	assert_true(again);
	assert_true(net_stream_queued(c.s) > 0);
	assert_false(c.drained);
	/* Nothing drains while the reader is paused. */
	bool never = false;
	assert_false(run_until(&loop, flag_set, &never, 100));
	assert_false(c.drained);

	assert_int_equal(net_stream_read_start(v.server.s), 0);
	assert_true(run_until(&loop, flag_set, &c.drained, 5000));
	assert_true(net_stream_queued(c.s) <= o.low_water);
	struct rx_want w = { &v.server, written };
	assert_true(run_until(&loop, rx_reached, &w, 10000));
	assert_int_equal(v.server.rx_len, written);
	for (size_t i = 0; i < written; i++) {
		if (v.server.rx[i] != (uint8_t)(i * 7)) {
			fail_msg("byte %zu: got %u", i, v.server.rx[i]);
		}
	}
	end_close(&loop, &c);
	end_close(&loop, &v.server);
	listener_close(&loop, l, &v);
	drain_and_close(&loop);
}

/* A port where nothing listens refuses the connection. */
static void test_connect_refused(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	/* Take an ephemeral port from a listener, then close it: nothing listens there now. */
	struct srv v = { 0 };
	struct net_listener *l = NULL;
	assert_int_equal(
		net_listener_open(&loop, "http://127.0.0.1:0", 0, NULL, srv_on_accept, &v, &l), 0);
	uint16_t port = net_listener_port(l);
	listener_close(&loop, l, &v);

	char url[80];
	struct end c = { 0 };
	assert_int_equal(net_stream_connect(&loop, url_of(url, sizeof url, "127.0.0.1", port), NULL,
					    &end_cbs, &c, &c.s),
			 0);
	assert_true(run_until(&loop, flag_set, &c.failed, 2000));
	assert_int_equal(c.status, NET_EREFUSED);
	end_close(&loop, &c);

	/* The same through a host name, resolved without blocking the loop. */
	struct end byname = { 0 };
	assert_int_equal(net_stream_connect(&loop, url_of(url, sizeof url, "localhost", port), NULL,
					    &end_cbs, &byname, &byname.s),
			 0);
	assert_true(run_until(&loop, flag_set, &byname.failed, 4000));
	assert_int_equal(byname.status, NET_EREFUSED);
	end_close(&loop, &byname);

	/* A name that does not resolve fails the connect (or its deadline), after the call. */
	struct end noname = { 0 };
	assert_int_equal(net_stream_connect(&loop, "http://nowhere.invalid:1", NULL, &end_cbs,
					    &noname, &noname.s),
			 0);
	assert_true(run_until(&loop, flag_set, &noname.failed, 10000));
	assert_true(noname.status == NET_EADDR || noname.status == NET_ETIMEOUT);
	end_close(&loop, &noname);

	/* Closed while the name is being resolved: freed once the resolution returns. */
	struct end early = { 0 };
	assert_int_equal(net_stream_connect(&loop, url_of(url, sizeof url, "localhost", port), NULL,
					    &end_cbs, &early, &early.s),
			 0);
	end_close(&loop, &early);

	/* Errors found before any I/O come back at once, with nothing to close. */
	struct net_stream *s = NULL;
	assert_int_equal(net_stream_connect(&loop, "http://127.0.0.1:0", NULL, &end_cbs, &c, &s),
			 NET_EADDR);
	assert_int_equal(net_stream_connect(&loop, "http://no_where:1", NULL, &end_cbs, &c, &s),
			 NET_EADDR);
	struct net_stream_opts bad = { .high_water = 100, .low_water = 100 };
	assert_int_equal(net_stream_connect(&loop, "http://127.0.0.1:1", &bad, &end_cbs, &c, &s),
			 NET_EINVAL);
	/* The same port twice: the second listener fails. */
	struct srv v1 = { 0 }, v2 = { 0 };
	struct net_listener *l1 = NULL, *l2 = NULL;
	assert_int_equal(
		net_listener_open(&loop, "http://127.0.0.1:0", 0, NULL, srv_on_accept, &v1, &l1),
		0);
	assert_int_equal(net_listener_open(
				 &loop, url_of(url, sizeof url, "127.0.0.1", net_listener_port(l1)),
				 0, NULL, srv_on_accept, &v2, &l2),
			 NET_EADDRINUSE);
	assert_string_equal(net_strerror(NET_EADDRINUSE), "address already in use");
	listener_close(&loop, l1, &v1);
	drain_and_close(&loop);
}

/* A listener whose accept queue is full drops new SYNs (Linux: tcp_conn_request drops when
 * sk_acceptq_is_full), so the dialer waits until its own deadline: the timeout case, without
 * any traffic leaving loopback. The listening socket is a raw one that never accepts. */
static void test_connect_timeout(void **state)
{
	(void)state;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(lfd >= 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t alen = sizeof a;
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	assert_int_equal(listen(lfd, 0), 0);
	/* Fill the accept queue (backlog 0 holds one; a few more for good measure). */
	int fill[4];
	for (int i = 0; i < 4; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(fill[i] >= 0);
		assert_int_equal(fcntl(fill[i], F_SETFL, O_NONBLOCK), 0);
		int rv = connect(fill[i], (struct sockaddr *)&a, sizeof a);
		assert_true(rv == 0 || errno == EINPROGRESS);
	}
	sleep_ms(50);

	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	char url[80];
	struct net_stream_opts o = { .connect_timeout_ms = 300 };
	struct end c = { 0 };
	uint64_t t0 = uv_hrtime();
	assert_int_equal(net_stream_connect(&loop,
					    url_of(url, sizeof url, "127.0.0.1", ntohs(a.sin_port)),
					    &o, &end_cbs, &c, &c.s),
			 0);
	bool done = run_until(&loop, flag_set, &c.failed, 3000);
	if (!done && c.connected) {
		fail_msg("connected to a full accept queue: this kernel does not drop SYNs there");
	}
	assert_true(done);
	assert_int_equal(c.status, NET_ETIMEOUT);
	uint64_t ms = (uv_hrtime() - t0) / 1000000u;
	assert_true(ms >= 290 && ms < 2000);
	end_close(&loop, &c);
	drain_and_close(&loop);
	for (int i = 0; i < 4; i++) {
		close(fill[i]);
	}
	close(lfd);
}

/* ---- a test filter: a one-byte handshake each way, then XOR 0x5a on every byte ---- */

#define XOR_KEY 0x5a
#define XOR_HELLO_CLIENT 'C'
#define XOR_HELLO_SERVER 'S'

struct xbuf {
	uint8_t *p;
	size_t len, cap;
};

static void xbuf_put(struct xbuf *b, const uint8_t *src, size_t len, bool xor)
{
	if (b->len + len > b->cap) {
		b->cap = (b->len + len) * 2;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	for (size_t i = 0; i < len; i++) {
		b->p[b->len + i] = xor? (uint8_t)(src[i] ^ XOR_KEY) : src[i];
	}
	b->len += len;
}

static void xbuf_get(struct xbuf *b, uint8_t *dst, size_t cap, size_t *n)
{
	*n = b->len < cap ? b->len : cap;
	if (*n == 0) {
		return; /* b->p may still be NULL: no memcpy from it, even of 0 bytes */
	}
	memcpy(dst, b->p, *n);
	memmove(b->p, b->p + *n, b->len - *n);
	b->len -= *n;
}

struct xor_filter {
	bool server;
	bool got_hello; /* the other side's handshake byte arrived */
	bool stall;     /* never complete the handshake (timeout test) */
	bool eof;
	size_t in_limit; /* decoded bytes held at most (0: no limit), like a TLS input ring */
	struct xbuf in, out;
	struct xor_ctx *ctx;
};

struct xor_ctx {
	int created, destroyed, shutdowns;
	bool stall;
	size_t in_limit;
	size_t partial_feeds; /* feeds that took less than offered */
};

static int xor_feed(void *impl, const uint8_t *buf, size_t len, size_t *used)
{
	struct xor_filter *x = impl;
	*used = 0;
	if (!x->got_hello && len > 0) {
		uint8_t want = x->server ? XOR_HELLO_CLIENT : XOR_HELLO_SERVER;
		if (buf[0] != want) {
			return NET_ETLS;
		}
		x->got_hello = true;
		if (x->server) {
			uint8_t b = XOR_HELLO_SERVER;
			xbuf_put(&x->out, &b, 1, false);
		}
		buf++;
		len--;
		*used = 1;
	}
	size_t take = len;
	if (x->in_limit != 0) {
		size_t room = x->in.len < x->in_limit ? x->in_limit - x->in.len : 0;
		if (take > room) {
			take = room;
			x->ctx->partial_feeds++;
		}
	}
	xbuf_put(&x->in, buf, take, true);
	*used += take;
	return 0;
}

static int xor_feed_eof(void *impl)
{
	struct xor_filter *x = impl;
	x->eof = true;
	return 0;
}

static int xor_read(void *impl, uint8_t *buf, size_t cap, size_t *n)
{
	struct xor_filter *x = impl;
	xbuf_get(&x->in, buf, cap, n);
	return *n == 0 && x->eof ? NET_ECLOSED : 0;
}

static int xor_write(void *impl, const uint8_t *buf, size_t len)
{
	struct xor_filter *x = impl;
	assert_true(x->got_hello); /* the stream writes only after the handshake */
	xbuf_put(&x->out, buf, len, true);
	return 0;
}

static int xor_take(void *impl, uint8_t *buf, size_t cap, size_t *n)
{
	struct xor_filter *x = impl;
	xbuf_get(&x->out, buf, cap, n);
	return 0;
}

static int xor_handshake_done(void *impl)
{
	struct xor_filter *x = impl;
	return x->got_hello && !x->stall ? 1 : 0;
}

static int xor_shutdown(void *impl)
{
	struct xor_filter *x = impl;
	x->ctx->shutdowns++;
	return 0;
}

static void xor_destroy(void *impl)
{
	struct xor_filter *x = impl;
	x->ctx->destroyed++;
	free(x->in.p);
	free(x->out.p);
	free(x);
}

static const struct net_filter_ops xor_ops = {
	.feed = xor_feed,
	.feed_eof = xor_feed_eof,
	.read = xor_read,
	.write = xor_write,
	.take = xor_take,
	.handshake_done = xor_handshake_done,
	.shutdown = xor_shutdown,
	.destroy = xor_destroy,
};

static int xor_factory(void *ctx, bool server, const char *host, struct net_filter *out)
{
	struct xor_ctx *c = ctx;
	assert_true(server ? host == NULL : host != NULL);
	struct xor_filter *x = calloc(1, sizeof *x);
	assert_non_null(x);
	x->server = server;
	x->stall = c->stall;
	x->in_limit = c->in_limit;
	x->ctx = c;
	if (!server) {
		uint8_t b = XOR_HELLO_CLIENT;
		xbuf_put(&x->out, &b, 1, false);
	}
	c->created++;
	out->ops = &xor_ops;
	out->impl = x;
	return 0;
}

/* Filtered echo: the user sees plain bytes on both ends; a tap on the server shows the wire
 * carried the transformed ones. */
static void test_filter_echo(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct xor_ctx fx = { 0 };
	struct net_stream_opts o = { .filter = xor_factory, .filter_ctx = &fx };
	struct srv v = { 0 };
	v.server.echo = true;
	struct net_listener *l = NULL;
	assert_int_equal(
		net_listener_open(&loop, "http://127.0.0.1:0", 0, &o, srv_on_accept, &v, &l), 0);
	char url[80];
	struct end c = { 0 };
	assert_int_equal(net_stream_connect(
				 &loop, url_of(url, sizeof url, "127.0.0.1", net_listener_port(l)),
				 &o, &end_cbs, &c, &c.s),
			 0);
	assert_true(run_until(&loop, flag_set, &c.connected, 2000));
	assert_true(run_until(&loop, server_accepted, &v, 2000));
	const char *text = "through the filter and back";
	for (int i = 0; i < 100; i++) {
		assert_int_equal(net_stream_write(c.s, (const uint8_t *)text, strlen(text)), 0);
	}
	struct rx_want w = { &c, 100 * strlen(text) };
	assert_true(run_until(&loop, rx_reached, &w, 3000));
	for (int i = 0; i < 100; i++) {
		assert_memory_equal(c.rx + (size_t)i * strlen(text), text, strlen(text));
	}
	assert_int_equal(v.server.rx_len, 100 * strlen(text));
	end_close(&loop, &c);
	end_close(&loop, &v.server);
	listener_close(&loop, l, &v);
	drain_and_close(&loop);
	assert_int_equal(fx.created, 2);
	assert_int_equal(fx.destroyed, 2);

	/* The wire: a filtered client against a plain server that plays the handshake by hand. */
	assert_int_equal(uv_loop_init(&loop), 0);
	struct xor_ctx fc = { 0 };
	struct net_stream_opts oc = { .filter = xor_factory, .filter_ctx = &fc };
	struct srv raw = { 0 };
	assert_int_equal(
		net_listener_open(&loop, "http://127.0.0.1:0", 0, NULL, srv_on_accept, &raw, &l),
		0);
	struct end c2 = { 0 };
	assert_int_equal(net_stream_connect(
				 &loop, url_of(url, sizeof url, "127.0.0.1", net_listener_port(l)),
				 &oc, &end_cbs, &c2, &c2.s),
			 0);
	struct rx_want hello = { &raw.server, 1 };
	assert_true(run_until(&loop, server_accepted, &raw, 2000));
	assert_true(run_until(&loop, rx_reached, &hello, 2000));
	assert_int_equal(raw.server.rx[0], XOR_HELLO_CLIENT);
	assert_false(c2.connected); /* not before the handshake completes */
	uint8_t sh = XOR_HELLO_SERVER;
	assert_int_equal(net_stream_write(raw.server.s, &sh, 1), 0);
	assert_true(run_until(&loop, flag_set, &c2.connected, 2000));
	assert_int_equal(net_stream_write(c2.s, (const uint8_t *)"AB", 2), 0);
	struct rx_want two = { &raw.server, 3 };
	assert_true(run_until(&loop, rx_reached, &two, 2000));
	assert_int_equal(raw.server.rx[1], 'A' ^ XOR_KEY);
	assert_int_equal(raw.server.rx[2], 'B' ^ XOR_KEY);
	end_close(&loop, &c2);
	end_close(&loop, &raw.server);
	listener_close(&loop, l, &raw);
	drain_and_close(&loop);
	assert_int_equal(fc.destroyed, 1);
}

/* A filter with a small input buffer (it takes part of each socket read, as a TLS input ring
 * does), a reader that pauses in the middle of a read and resumes, then a clean shutdown from
 * the writer: every byte arrives once and in order, then the end (NET_ECLOSED) on both sides. */
static void test_filter_pause_and_shutdown(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct xor_ctx fx = { .in_limit = 3000 };
	struct net_stream_opts o = { .filter = xor_factory, .filter_ctx = &fx };
	struct srv v = { 0 };
	v.server.pause_at = 100000;
	struct net_listener *l = NULL;
	assert_int_equal(
		net_listener_open(&loop, "http://127.0.0.1:0", 0, &o, srv_on_accept, &v, &l), 0);
	char url[80];
	struct end c = { 0 };
	assert_int_equal(net_stream_connect(
				 &loop, url_of(url, sizeof url, "127.0.0.1", net_listener_port(l)),
				 &o, &end_cbs, &c, &c.s),
			 0);
	assert_true(run_until(&loop, flag_set, &c.connected, 2000));
	assert_true(run_until(&loop, server_accepted, &v, 2000));
	static uint8_t chunk[50000];
	const size_t total = 40 * sizeof chunk;
	size_t sent = 0;
	while (sent < total) {
		for (size_t k = 0; k < sizeof chunk; k++) {
			chunk[k] = (uint8_t)((sent + k) * 11);
		}
		int rv = net_stream_write(c.s, chunk, sizeof chunk);
		if (rv == NET_EAGAIN) {
			c.drained = false;
			assert_true(run_until(&loop, flag_set, &c.drained, 5000));
			continue;
		}
		assert_int_equal(rv, 0);
		sent += sizeof chunk;
	}
	assert_true(run_until(&loop, flag_set, &v.server.paused, 5000));
	size_t at_pause = v.server.rx_len;
	bool never = false;
	run_until(&loop, flag_set, &never, 100);
	assert_int_equal(v.server.rx_len, at_pause);
	assert_true(at_pause < total);
	assert_int_equal(net_stream_read_start(v.server.s), 0);
	assert_int_equal(net_stream_shutdown(c.s), 0);
	assert_int_equal(net_stream_shutdown(c.s), 0);
	assert_int_equal(net_stream_write(c.s, chunk, 1), NET_ECLOSED);
	assert_true(run_until(&loop, flag_set, &v.server.ended, 10000));
	assert_int_equal(v.server.err, NET_ECLOSED);
	assert_int_equal(v.server.rx_len, total);
	for (size_t i = 0; i < total; i++) {
		if (v.server.rx[i] != (uint8_t)(i * 11)) {
			fail_msg("byte %zu: got %u", i, v.server.rx[i]);
		}
	}
	assert_true(fx.partial_feeds > 0);
	assert_int_equal(fx.shutdowns, 1);
	/* The server closes; the client, whose reading side was still open, hears the end. */
	end_close(&loop, &v.server);
	assert_true(run_until(&loop, flag_set, &c.ended, 2000));
	assert_int_equal(c.err, NET_ECLOSED);
	end_close(&loop, &c);
	listener_close(&loop, l, &v);
	drain_and_close(&loop);
	assert_int_equal(fx.created, fx.destroyed);
}

/* A handshake that never completes: the dialer times out; the accepting side drops the
 * connection on its own deadline without the accept callback ever seeing it; closing the
 * listener with handshakes pending frees them. */
static void test_filter_handshake_timeout(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct xor_ctx fx = { .stall = true };
	struct net_stream_opts o = { .filter = xor_factory,
				     .filter_ctx = &fx,
				     .connect_timeout_ms = 200 };
	struct srv v = { 0 };
	struct net_listener *l = NULL;
	assert_int_equal(
		net_listener_open(&loop, "http://127.0.0.1:0", 0, &o, srv_on_accept, &v, &l), 0);
	char url[80];
	struct end c = { 0 };
	assert_int_equal(net_stream_connect(
				 &loop, url_of(url, sizeof url, "127.0.0.1", net_listener_port(l)),
				 &o, &end_cbs, &c, &c.s),
			 0);
	assert_true(run_until(&loop, flag_set, &c.failed, 3000));
	assert_int_equal(c.status, NET_ETIMEOUT);
	end_close(&loop, &c);
	assert_int_equal(v.accepted, 0);

	/* Another one left pending when the listener closes. */
	struct end c2 = { 0 };
	struct net_stream_opts o2 = o;
	o2.connect_timeout_ms = 5000;
	assert_int_equal(net_stream_connect(&loop, url, &o2, &end_cbs, &c2, &c2.s), 0);
	bool never = false;
	run_until(&loop, flag_set, &never, 100);
	listener_close(&loop, l, &v);
	/* The server side went away: the client hears it while still in its handshake. */
	assert_true(run_until(&loop, flag_set, &c2.failed, 3000));
	end_close(&loop, &c2);
	drain_and_close(&loop);
	assert_int_equal(v.accepted, 0);
	assert_int_equal(fx.created, fx.destroyed);
	assert_int_equal(fx.created, 4);
}

/* Closing a dialer before it connected gives on_close only; closing twice is harmless. */
static void test_close_while_connecting(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct srv v = { 0 };
	struct net_listener *l = NULL;
	assert_int_equal(
		net_listener_open(&loop, "http://127.0.0.1:0", 0, NULL, srv_on_accept, &v, &l), 0);
	char url[80];
	struct end c = { 0 };
	assert_int_equal(net_stream_connect(
				 &loop, url_of(url, sizeof url, "127.0.0.1", net_listener_port(l)),
				 NULL, &end_cbs, &c, &c.s),
			 0);
	net_stream_close(c.s);
	net_stream_close(c.s);
	assert_true(run_until(&loop, flag_set, &c.closed, 2000));
	assert_false(c.connected);
	assert_false(c.failed);
	bool never = false;
	run_until(&loop, flag_set, &never, 50);
	if (v.server.s != NULL) {
		end_close(&loop, &v.server);
	}
	listener_close(&loop, l, &v);
	drain_and_close(&loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_parse),
		cmocka_unit_test(test_echo),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_backpressure),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_connect_timeout),
		cmocka_unit_test(test_filter_echo),
		cmocka_unit_test(test_filter_pause_and_shutdown),
		cmocka_unit_test(test_filter_handshake_timeout),
		cmocka_unit_test(test_close_while_connecting),
	};
	return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
