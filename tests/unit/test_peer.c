/* test_peer.c: the peer transport (net/peer.h) between real endpoints in one loop, on
 * 127.0.0.1 with ephemeral ports: packed Raft messages both ways among three members, a member
 * restarting on the same port, hellos refused (other cluster, unknown member, wrong id),
 * a multi-megabyte snapshot beside a flow of small messages, queue bounds and bounded backoff,
 * strangers (garbage, silence, oversized frames) on the listener. Every wait has a deadline;
 * every transport is closed and uv_loop_close returns 0 at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "peer.h"
#include "raft.pb-c.h"
#include "tls_filter.h"
#include "tmpdir.h"

#define CLUSTER 0xc1u

/* ---- bounded loop driving (as in test_stream.c) ---- */

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

static void drain_and_close(uv_loop_t *loop)
{
	uint64_t end = uv_hrtime() + 3000u * 1000000u;
	while (uv_loop_alive(loop) && uv_hrtime() < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- a member: a transport and what it received ---- */

#define MAX_RX 4096

struct rx {
	uint64_t from;
	enum net_channel channel;
	size_t len;
	uint8_t *bytes;
};

struct member {
	uv_loop_t *loop;
	uint64_t id;
	uint64_t cluster;
	struct net_transport *t;
	bool closed;
	struct rx rx[MAX_RX];
	int n_rx;
	char log[8][NET_REFUSE_MAX + 128]; /* last warnings, for refusal reasons */
	int n_log;
};

static void m_log(void *data, enum net_log_level level, const char *msg)
{
	struct member *m = data;
	if (level < NET_LOG_WARN) {
		return;
	}
	snprintf(m->log[m->n_log % 8], sizeof m->log[0], "%s", msg);
	m->n_log++;
}

static bool m_logged(const struct member *m, const char *needle)
{
	for (int i = 0; i < 8 && i < m->n_log; i++) {
		if (strstr(m->log[i], needle) != NULL) {
			return true;
		}
	}
	return false;
}

static void m_recv(struct net_transport *t, uint64_t from, enum net_channel channel,
		   const uint8_t *buf, size_t len)
{
	struct member *m = net_transport_data(t);
	assert_true(m->n_rx < MAX_RX);
	struct rx *r = &m->rx[m->n_rx++];
	r->from = from;
	r->channel = channel;
	r->len = len;
	r->bytes = malloc(len > 0 ? len : 1);
	assert_non_null(r->bytes);
	if (len > 0) {
		memcpy(r->bytes, buf, len);
	}
}

static void m_on_close(struct net_transport *t)
{
	struct member *m = net_transport_data(t);
	m->closed = true;
}

static bool m_closed(void *arg)
{
	return ((struct member *)arg)->closed;
}

/* Opens member m on 127.0.0.1:port (0: any), with cfg's bounds if given. */
static void m_open(uv_loop_t *loop, struct member *m, uint64_t id, uint16_t port,
		   const struct net_transport_config *base)
{
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)port);
	struct net_transport_config cfg = { 0 };
	if (base != NULL) {
		cfg = *base;
	}
	m->loop = loop;
	m->id = id;
	if (m->cluster == 0) {
		m->cluster = CLUSTER;
	}
	m->closed = false;
	cfg.cluster_id = m->cluster;
	cfg.self_id = id;
	cfg.listen_url = url;
	cfg.on_recv = m_recv;
	cfg.log = m_log;
	cfg.data = m;
	cfg.seed = id * 7919;
	if (cfg.backoff_min_ms == 0) {
		cfg.backoff_min_ms = 20;
	}
	if (cfg.backoff_max_ms == 0) {
		cfg.backoff_max_ms = 200;
	}
	assert_int_equal(net_transport_open(loop, &cfg, &m->t), 0);
	assert_true(net_transport_port(m->t) != 0);
}

static void m_close(struct member *m)
{
	if (m->t == NULL) {
		return;
	}
	net_transport_close(m->t, m_on_close);
	assert_true(run_until(m->loop, m_closed, m, 3000));
	m->t = NULL;
	for (int i = 0; i < m->n_rx; i++) {
		free(m->rx[i].bytes);
	}
	m->n_rx = 0;
}

static void m_forget_rx(struct member *m)
{
	for (int i = 0; i < m->n_rx; i++) {
		free(m->rx[i].bytes);
	}
	m->n_rx = 0;
}

/* Makes a know b (at b's listening port). */
static void m_meet(struct member *a, const struct member *b)
{
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)net_transport_port(b->t));
	assert_int_equal(net_transport_add_peer(a->t, b->id, url), 0);
}

struct rx_count {
	struct member *m;
	int n;
};

static bool rx_at_least(void *arg)
{
	struct rx_count *c = arg;
	return c->m->n_rx >= c->n;
}

/* ---- Raft messages as the server will send them ---- */

static size_t pack_heartbeat(uint8_t *buf, size_t cap, uint64_t from, uint64_t to, uint64_t seq)
{
	Cairn__Raftpb__Message m = CAIRN__RAFTPB__MESSAGE__INIT;
	m.type = CAIRN__RAFTPB__MESSAGE_TYPE__MSG_HEARTBEAT;
	m.from = from;
	m.to = to;
	m.term = 3;
	m.commit = 40;
	m.context = seq;
	size_t n = cairn__raftpb__message__get_packed_size(&m);
	assert_true(n <= cap);
	return cairn__raftpb__message__pack(&m, buf);
}

static uint64_t unpack_seq(const struct rx *r, uint64_t from, uint64_t to)
{
	Cairn__Raftpb__Message *m = cairn__raftpb__message__unpack(NULL, r->len, r->bytes);
	assert_non_null(m);
	assert_int_equal(m->type, CAIRN__RAFTPB__MESSAGE_TYPE__MSG_HEARTBEAT);
	assert_int_equal(m->from, from);
	assert_int_equal(m->to, to);
	uint64_t seq = m->context;
	cairn__raftpb__message__free_unpacked(m, NULL);
	return seq;
}

static void send_hb(struct member *a, uint64_t to, uint64_t seq)
{
	uint8_t buf[128];
	size_t n = pack_heartbeat(buf, sizeof buf, a->id, to, seq);
	assert_int_equal(net_transport_send(a->t, to, buf, n), 0);
}

/* ---- tests ---- */

/* Three members, messages every way, in order per sender; the receiver learns the sender from
 * the hello. */
static void test_three_members(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	static struct member m[3];
	memset(m, 0, sizeof m);
	for (int i = 0; i < 3; i++) {
		m_open(&loop, &m[i], (uint64_t)i + 1, 0, NULL);
	}
	for (int i = 0; i < 3; i++) {
		for (int j = 0; j < 3; j++) {
			if (i != j) {
				m_meet(&m[i], &m[j]);
			}
		}
	}
	const int per = 20;
	for (int s = 0; s < per; s++) {
		for (int i = 0; i < 3; i++) {
			for (int j = 0; j < 3; j++) {
				if (i != j) {
					send_hb(&m[i], m[j].id, (uint64_t)s);
				}
			}
		}
	}
	for (int i = 0; i < 3; i++) {
		struct rx_count c = { &m[i], 2 * per };
		assert_true(run_until(&loop, rx_at_least, &c, 5000));
	}
	for (int i = 0; i < 3; i++) {
		assert_int_equal(m[i].n_rx, 2 * per);
		uint64_t next[4] = { 0 };
		for (int k = 0; k < m[i].n_rx; k++) {
			struct rx *r = &m[i].rx[k];
			assert_int_equal(r->channel, NET_CHANNEL_MSG);
			assert_true(r->from >= 1 && r->from <= 3 && r->from != m[i].id);
			uint64_t seq = unpack_seq(r, r->from, m[i].id);
			assert_int_equal(seq, next[r->from]);
			next[r->from]++;
		}
		struct net_peer_stats st;
		uint64_t other = (uint64_t)((i + 1) % 3) + 1;
		assert_int_equal(net_transport_peer_stats(m[i].t, other, &st), 0);
		assert_int_equal(st.sent[0], per);
		assert_int_equal(st.connects[0], 1);
		assert_true(st.connected[0]);
		assert_false(st.connected[1]); /* no snapshot sent: no snapshot connection */
		assert_int_equal(st.dropped[0], 0);
		struct net_transport_stats ts;
		net_transport_stats(m[i].t, &ts);
		assert_int_equal(ts.accepted, 2);
		assert_int_equal(ts.received[0], 2 * per);
	}
	/* Unknown destination, self, bad URL, oversize. */
	uint8_t b[4] = { 0 };
	assert_int_equal(net_transport_send(m[0].t, 99, b, sizeof b), NET_ENOTFOUND);
	assert_int_equal(net_transport_add_peer(m[0].t, 1, "http://127.0.0.1:1"), NET_EINVAL);
	assert_int_equal(net_transport_add_peer(m[0].t, 0, "http://127.0.0.1:1"), NET_EINVAL);
	assert_int_equal(net_transport_add_peer(m[0].t, 7, "http://x_y:1"), NET_EADDR);
	assert_int_equal(net_transport_remove_peer(m[0].t, 99), NET_ENOTFOUND);
	for (int i = 0; i < 3; i++) {
		m_close(&m[i]);
	}
	drain_and_close(&loop);
}

/* Member 2 goes away (its transport closed, listener included) and comes back on the same
 * port; member 1 reconnects after backoff and its messages flow again. */
static void test_restart_same_port(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	static struct member a, b;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	m_open(&loop, &a, 1, 0, NULL);
	m_open(&loop, &b, 2, 0, NULL);
	m_meet(&a, &b);
	m_meet(&b, &a);
	uint16_t port = net_transport_port(b.t);
	send_hb(&a, 2, 0);
	struct rx_count c = { &b, 1 };
	assert_true(run_until(&loop, rx_at_least, &c, 3000));

	m_close(&b);
	/* While b is down a's sends queue up (bounded); its connection fails and it backs off. */
	for (uint64_t s = 1; s <= 5; s++) {
		send_hb(&a, 2, s);
		run_for(&loop, 30);
	}
	struct net_peer_stats st;
	assert_int_equal(net_transport_peer_stats(a.t, 2, &st), 0);
	assert_true(st.failures[0] >= 1);
	assert_false(st.connected[0]);

	m_open(&loop, &b, 2, port, NULL);
	m_meet(&b, &a);
	send_hb(&a, 2, 6);
	c.n = 1;
	assert_true(run_until(&loop, rx_at_least, &c, 5000));
	/* What was queued while b was down comes first, in order; some may have been lost with the
	 * old connection, never reordered. */
	uint64_t last = 0;
	bool saw6 = false;
	struct rx_count all = { &b, 1 };
	run_until(&loop, rx_at_least, &all, 100);
	for (int k = 0; k < b.n_rx; k++) {
		uint64_t seq = unpack_seq(&b.rx[k], 1, 2);
		assert_true(seq >= last);
		last = seq;
		saw6 = saw6 || seq == 6;
	}
	assert_true(saw6 || b.n_rx >= 1);
	assert_int_equal(net_transport_peer_stats(a.t, 2, &st), 0);
	assert_int_equal(st.connects[0], 2);
	assert_true(st.connected[0]);
	/* And the other way, over b's fresh outbound connection. */
	send_hb(&b, 1, 77);
	struct rx_count ca = { &a, 1 };
	assert_true(run_until(&loop, rx_at_least, &ca, 3000));
	assert_int_equal(unpack_seq(&a.rx[0], 2, 1), 77);
	m_close(&a);
	m_close(&b);
	drain_and_close(&loop);
}

struct refused_wait {
	struct member *m;
	uint64_t peer;
};

static bool peer_refused(void *arg)
{
	struct refused_wait *w = arg;
	struct net_peer_stats st;
	assert_int_equal(net_transport_peer_stats(w->m->t, w->peer, &st), 0);
	return st.refused[0] >= 1;
}

/* Hellos the acceptor must refuse, each with its reason in both logs and nothing delivered:
 * another cluster, a member it does not know, and a dialer that expected another member. */
static void test_refused_hellos(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	static struct member a, other, stranger, confused;
	memset(&a, 0, sizeof a);
	memset(&other, 0, sizeof other);
	memset(&stranger, 0, sizeof stranger);
	memset(&confused, 0, sizeof confused);
	other.cluster = 0xbad;
	m_open(&loop, &a, 1, 0, NULL);
	m_open(&loop, &other, 4, 0, NULL);
	m_open(&loop, &stranger, 5, 0, NULL);
	m_open(&loop, &confused, 6, 0, NULL);
	/* a knows 4 and 6 (so only the cluster id, or the dialed id, is wrong), not 5. */
	m_meet(&a, &other);
	m_meet(&a, &confused);
	m_meet(&other, &a);
	m_meet(&stranger, &a);
	/* confused thinks member 9 listens at a's port. */
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)net_transport_port(a.t));
	assert_int_equal(net_transport_add_peer(confused.t, 9, url), 0);

	send_hb(&other, 1, 1);
	send_hb(&stranger, 1, 1);
	send_hb(&confused, 9, 1);
	struct refused_wait w1 = { &other, 1 }, w2 = { &stranger, 1 }, w3 = { &confused, 9 };
	assert_true(run_until(&loop, peer_refused, &w1, 3000));
	assert_true(run_until(&loop, peer_refused, &w2, 3000));
	assert_true(run_until(&loop, peer_refused, &w3, 3000));
	assert_true(m_logged(&a, "cluster id mismatch"));
	assert_true(m_logged(&other, "cluster id mismatch"));
	assert_true(m_logged(&a, "is not a known peer"));
	assert_true(m_logged(&stranger, "is not a known peer"));
	assert_true(m_logged(&a, "member id mismatch"));
	assert_true(m_logged(&confused, "member id mismatch"));
	struct net_transport_stats ts;
	net_transport_stats(a.t, &ts);
	assert_true(ts.refused >= 3);
	assert_int_equal(ts.accepted, 0);
	assert_int_equal(a.n_rx, 0);
	struct net_peer_stats st;
	assert_int_equal(net_transport_peer_stats(other.t, 1, &st), 0);
	assert_false(st.connected[0]);
	assert_int_equal(st.queued[0], 1); /* kept for a retry: refusals back off like failures */

	m_close(&a);
	m_close(&other);
	m_close(&stranger);
	m_close(&confused);
	drain_and_close(&loop);
}

/* A 16 MiB snapshot in 1 MiB chunks on the snapshot channel while small messages go on the
 * message channel: the small ones all arrive before the snapshot has, which one shared FIFO
 * connection could not do; every snapshot byte arrives intact and in order. */
static void test_snapshot_beside_messages(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	static struct member a, b;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	m_open(&loop, &a, 1, 0, NULL);
	m_open(&loop, &b, 2, 0, NULL);
	m_meet(&a, &b);
	m_meet(&b, &a);
	const size_t chunk = 1 << 20;
	const int chunks = 16;
	uint8_t *data = malloc(chunk);
	assert_non_null(data);
	for (int k = 0; k < chunks; k++) {
		for (size_t i = 0; i < chunk; i++) {
			data[i] = (uint8_t)(i * 131 + (size_t)k);
		}
		assert_int_equal(net_transport_send_snapshot(a.t, 2, data, chunk), 0);
	}
	const int small = 50;
	for (int s = 0; s < small; s++) {
		send_hb(&a, 2, (uint64_t)s);
	}
	struct rx_count c = { &b, chunks + small };
	if (!run_until(&loop, rx_at_least, &c, 20000)) {
		struct net_peer_stats dst;
		net_transport_peer_stats(a.t, 2, &dst);
		fprintf(stderr,
			"not all arrived: received %d, sent %lu/%lu, queued %zu/%zu, failures %lu/%lu, connected %d/%d, %d warnings, last: %s | %s\n",
			b.n_rx, (unsigned long)dst.sent[0], (unsigned long)dst.sent[1],
			dst.queued[0], dst.queued[1], (unsigned long)dst.failures[0],
			(unsigned long)dst.failures[1], dst.connected[0], dst.connected[1],
			a.n_log + b.n_log, a.log[0], b.log[0]);
		fail();
	}
	assert_int_equal(b.n_rx, chunks + small);
	int last_small = -1, last_snap = -1, snaps = 0;
	uint64_t next_seq = 0;
	for (int k = 0; k < b.n_rx; k++) {
		struct rx *r = &b.rx[k];
		if (r->channel == NET_CHANNEL_MSG) {
			assert_int_equal(unpack_seq(r, 1, 2), next_seq);
			next_seq++;
			last_small = k;
			continue;
		}
		assert_int_equal(r->channel, NET_CHANNEL_SNAP);
		assert_int_equal(r->len, chunk);
		for (size_t i = 0; i < chunk; i += 4093) {
			assert_int_equal(r->bytes[i], (uint8_t)(i * 131 + (size_t)snaps));
		}
		snaps++;
		last_snap = k;
	}
	assert_int_equal(snaps, chunks);
	assert_true(last_small < last_snap);
	struct net_peer_stats st;
	assert_int_equal(net_transport_peer_stats(a.t, 2, &st), 0);
	assert_int_equal(st.sent[1], chunks);
	assert_int_equal(st.sent[0], small);
	assert_int_equal(st.queued_bytes[1], 0);
	free(data);
	m_close(&a);
	m_close(&b);
	drain_and_close(&loop);
}

/* A peer that cannot be reached: the queue holds at most its bound, the rest is dropped and
 * counted; retries keep coming at the capped backoff (not slower), and a removed peer's queue
 * is freed. */
static void test_queue_bound_and_backoff(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	static struct member a, gone;
	memset(&a, 0, sizeof a);
	memset(&gone, 0, sizeof gone);
	struct net_transport_config cfg = {
		.msg_queue_max = 8,
		.snap_queue_max_bytes = 3000,
		.max_frame = 2048,
		.backoff_min_ms = 5,
		.backoff_max_ms = 40,
	};
	m_open(&loop, &a, 1, 0, &cfg);
	/* A port nothing listens on: open a member there, note the port, close it. */
	m_open(&loop, &gone, 2, 0, NULL);
	uint16_t port = net_transport_port(gone.t);
	m_close(&gone);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)port);
	assert_int_equal(net_transport_add_peer(a.t, 2, url), 0);

	uint8_t msg[100] = { 0 };
	int ok = 0, again = 0;
	for (int i = 0; i < 20; i++) {
		int rv = net_transport_send(a.t, 2, msg, sizeof msg);
		if (rv == 0) {
			ok++;
		} else {
			assert_int_equal(rv, NET_EAGAIN);
			again++;
		}
	}
	assert_int_equal(ok, 8);
	assert_int_equal(again, 12);
	uint8_t big[2049] = { 0 };
	assert_int_equal(net_transport_send(a.t, 2, big, sizeof big), NET_ETOOBIG);
	/* Snapshot queue bound in bytes: two 1000-byte chunks fit in 3000 bytes, a third not. */
	assert_int_equal(net_transport_send_snapshot(a.t, 2, big, 1000), 0);
	assert_int_equal(net_transport_send_snapshot(a.t, 2, big, 1000), 0);
	assert_int_equal(net_transport_send_snapshot(a.t, 2, big, 1000), NET_EAGAIN);

	run_for(&loop, 1000);
	struct net_peer_stats st;
	assert_int_equal(net_transport_peer_stats(a.t, 2, &st), 0);
	assert_int_equal(st.queued[0], 8);
	assert_int_equal(st.queued_bytes[0], 8 * (NET_FRAME_HEADER + sizeof msg));
	assert_int_equal(st.dropped[0], 12);
	assert_int_equal(st.dropped[1], 1);
	assert_int_equal(st.connects[0], 0);
	/* Capped at 40 ms (mean delay >= 30 ms with jitter): about 25-35 attempts in a second;
	 * uncapped doubling from 5 ms would have made 7. Loose bounds for slow machines. */
	assert_true(st.failures[0] >= 12);
	assert_true(st.failures[0] <= 60);

	assert_int_equal(net_transport_remove_peer(a.t, 2), 0);
	assert_int_equal(net_transport_peer_stats(a.t, 2, &st), NET_ENOTFOUND);
	m_close(&a);
	drain_and_close(&loop);
}

/* ---- strangers on the listener ---- */

struct raw {
	struct net_stream *s;
	bool connected, ended, closed;
	int err;
	size_t rx;
};

static void raw_on_connect(struct net_stream *s, int status)
{
	struct raw *r = net_stream_data(s);
	assert_int_equal(status, 0);
	r->connected = true;
}

static void raw_on_read(struct net_stream *s, const uint8_t *buf, size_t len)
{
	(void)buf;
	struct raw *r = net_stream_data(s);
	r->rx += len;
}

static void raw_on_error(struct net_stream *s, int err)
{
	struct raw *r = net_stream_data(s);
	r->ended = true;
	r->err = err;
}

static void raw_on_close(struct net_stream *s)
{
	struct raw *r = net_stream_data(s);
	r->closed = true;
}

static const struct net_stream_cbs raw_cbs = {
	.on_connect = raw_on_connect,
	.on_read = raw_on_read,
	.on_error = raw_on_error,
	.on_close = raw_on_close,
};

static bool raw_flag(void *arg)
{
	return *(bool *)arg;
}

static void raw_dial(uv_loop_t *loop, struct member *m, struct raw *r)
{
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)net_transport_port(m->t));
	memset(r, 0, sizeof *r);
	assert_int_equal(net_stream_connect(loop, url, NULL, &raw_cbs, r, &r->s), 0);
	assert_true(run_until(loop, raw_flag, &r->connected, 2000));
}

static void raw_close(uv_loop_t *loop, struct raw *r)
{
	net_stream_close(r->s);
	assert_true(run_until(loop, raw_flag, &r->closed, 2000));
}

/* Garbage, silence past the hello deadline, and an oversized frame after a valid hello: each
 * connection is dropped by the transport (the stranger sees the end), nothing is delivered. */
static void test_strangers(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	static struct member a;
	memset(&a, 0, sizeof a);
	struct net_transport_config cfg = { .hello_timeout_ms = 150, .max_frame = 4096 };
	m_open(&loop, &a, 1, 0, &cfg);
	assert_int_equal(net_transport_add_peer(a.t, 2, "http://127.0.0.1:9"), 0);

	struct raw g;
	raw_dial(&loop, &a, &g);
	const char *junk = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	assert_int_equal(net_stream_write(g.s, (const uint8_t *)junk, strlen(junk)), 0);
	assert_true(run_until(&loop, raw_flag, &g.ended, 2000));
	raw_close(&loop, &g);

	struct raw quiet;
	raw_dial(&loop, &a, &quiet);
	uint64_t t0 = uv_hrtime();
	assert_true(run_until(&loop, raw_flag, &quiet.ended, 2000));
	assert_true((uv_hrtime() - t0) / 1000000u >= 100);
	raw_close(&loop, &quiet);

	struct raw big;
	raw_dial(&loop, &a, &big);
	struct net_hello h = { .version = NET_PROTOCOL_VERSION,
			       .channel = NET_CHANNEL_MSG,
			       .cluster_id = CLUSTER,
			       .from = 2,
			       .to = 1 };
	uint8_t frame[NET_FRAME_HEADER + NET_HELLO_SIZE];
	net_hello_encode(&h, frame + NET_FRAME_HEADER);
	net_frame_header(frame, NET_FRAME_HELLO, frame + NET_FRAME_HEADER, NET_HELLO_SIZE);
	assert_int_equal(net_stream_write(big.s, frame, sizeof frame), 0);
	/* One good message, then a header announcing 4097 bytes. */
	uint8_t good[NET_FRAME_HEADER + 3];
	size_t n;
	assert_int_equal(
		net_frame_encode(NET_FRAME_MSG, (const uint8_t *)"abc", 3, good, sizeof good, &n),
		0);
	assert_int_equal(net_stream_write(big.s, good, n), 0);
	uint8_t *huge = calloc(1, 4097);
	assert_non_null(huge);
	uint8_t hdr[NET_FRAME_HEADER];
	net_frame_header(hdr, NET_FRAME_MSG, huge, 4097);
	assert_int_equal(net_stream_write(big.s, hdr, sizeof hdr), 0);
	free(huge);
	assert_true(run_until(&loop, raw_flag, &big.ended, 2000));
	assert_int_equal(big.rx, NET_FRAME_HEADER + NET_HELLO_SIZE); /* the hello answer */
	raw_close(&loop, &big);

	assert_int_equal(a.n_rx, 1);
	assert_int_equal(a.rx[0].len, 3);
	struct net_transport_stats ts;
	net_transport_stats(a.t, &ts);
	assert_int_equal(ts.accepted, 1);
	assert_true(ts.dropped >= 3);
	m_forget_rx(&a);
	m_close(&a);
	drain_and_close(&loop);
}

/* on_recv may answer, and may close the whole transport. */
static struct member *echo_peer;
static void echo_recv(struct net_transport *t, uint64_t from, enum net_channel channel,
		      const uint8_t *buf, size_t len)
{
	m_recv(t, from, channel, buf, len);
	struct member *m = net_transport_data(t);
	if (m == echo_peer && m->n_rx == 1) {
		assert_int_equal(net_transport_send(t, from, buf, len), 0);
	}
	if (m == echo_peer && m->n_rx == 2) {
		net_transport_close(t, m_on_close);
	}
}

static void test_recv_reentry(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	static struct member a, b;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	m_open(&loop, &a, 1, 0, NULL);
	m_open(&loop, &b, 2, 0, NULL);
	m_meet(&a, &b);
	m_meet(&b, &a);
	/* Swap b's callback through a fresh transport with echo_recv. */
	uint16_t port = net_transport_port(b.t);
	m_close(&b);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)port);
	struct net_transport_config cfg = { .cluster_id = CLUSTER,
					    .self_id = 2,
					    .listen_url = url,
					    .on_recv = echo_recv,
					    .log = m_log,
					    .data = &b };
	b.closed = false;
	echo_peer = &b;
	assert_int_equal(net_transport_open(&loop, &cfg, &b.t), 0);
	m_meet(&b, &a);
	send_hb(&a, 2, 1);
	struct rx_count c = { &a, 1 };
	assert_true(run_until(&loop, rx_at_least, &c, 5000));
	assert_int_equal(unpack_seq(&a.rx[0], 1, 2), 1);
	assert_int_equal(a.rx[0].from, 2);
	/* The second message makes b close itself from inside on_recv; the third, sent right
	 * behind it, is not delivered after that. */
	send_hb(&a, 2, 2);
	send_hb(&a, 2, 3);
	assert_true(run_until(&loop, m_closed, &b, 3000));
	assert_int_equal(b.n_rx, 2);
	b.t = NULL;
	m_forget_rx(&b);
	m_close(&a);
	drain_and_close(&loop);
}

/* ---- a filter under the transport (where TLS goes): a one-byte handshake, then XOR ---- */

struct xf {
	bool server, open;
	uint8_t in[1 << 16], out[1 << 16];
	size_t in_len, out_len;
};

static int xf_created, xf_destroyed;

static int xf_feed(void *impl, const uint8_t *buf, size_t len, size_t *used)
{
	struct xf *x = impl;
	size_t off = 0;
	if (!x->open && len > 0) {
		if (buf[0] != (x->server ? 'C' : 'S')) {
			return NET_ETLS;
		}
		x->open = true;
		if (x->server) {
			x->out[x->out_len++] = 'S';
		}
		off = 1;
	}
	size_t take = len - off;
	if (take > sizeof x->in - x->in_len) {
		take = sizeof x->in - x->in_len;
	}
	for (size_t i = 0; i < take; i++) {
		x->in[x->in_len + i] = buf[off + i] ^ 0xa5;
	}
	x->in_len += take;
	*used = off + take;
	return 0;
}

static void xf_move(uint8_t *src, size_t *src_len, uint8_t *dst, size_t cap, size_t *n)
{
	*n = *src_len < cap ? *src_len : cap;
	if (*n == 0) {
		return;
	}
	memcpy(dst, src, *n);
	memmove(src, src + *n, *src_len - *n);
	*src_len -= *n;
}

static int xf_read(void *impl, uint8_t *buf, size_t cap, size_t *n)
{
	struct xf *x = impl;
	xf_move(x->in, &x->in_len, buf, cap, n);
	return 0;
}

static int xf_write(void *impl, const uint8_t *buf, size_t len)
{
	struct xf *x = impl;
	if (len > sizeof x->out - x->out_len) {
		return NET_EAGAIN;
	}
	for (size_t i = 0; i < len; i++) {
		x->out[x->out_len + i] = buf[i] ^ 0xa5;
	}
	x->out_len += len;
	return 0;
}

static int xf_take(void *impl, uint8_t *buf, size_t cap, size_t *n)
{
	struct xf *x = impl;
	xf_move(x->out, &x->out_len, buf, cap, n);
	return 0;
}

static int xf_done(void *impl)
{
	return ((struct xf *)impl)->open ? 1 : 0;
}

static void xf_destroy(void *impl)
{
	xf_destroyed++;
	free(impl);
}

static const struct net_filter_ops xf_ops = {
	.feed = xf_feed,
	.read = xf_read,
	.write = xf_write,
	.take = xf_take,
	.handshake_done = xf_done,
	.destroy = xf_destroy,
};

static int xf_factory(void *ctx, bool server, const char *host, struct net_filter *out)
{
	(void)ctx;
	(void)host;
	struct xf *x = calloc(1, sizeof *x);
	assert_non_null(x);
	x->server = server;
	if (!server) {
		x->out[x->out_len++] = 'C';
	}
	xf_created++;
	out->ops = &xf_ops;
	out->impl = x;
	return 0;
}

/* The transport over a filter on every connection, as it will run over TLS: messages and a
 * snapshot both ways; a member without the filter cannot talk to one with it. */
static void test_over_filter(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	static struct member a, b, plain;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	memset(&plain, 0, sizeof plain);
	xf_created = xf_destroyed = 0;
	struct net_transport_config cfg = { .stream = { .filter = xf_factory } };
	m_open(&loop, &a, 1, 0, &cfg);
	m_open(&loop, &b, 2, 0, &cfg);
	m_open(&loop, &plain, 3, 0, NULL);
	m_meet(&a, &b);
	m_meet(&b, &a);
	m_meet(&plain, &a);
	m_meet(&a, &plain);
	for (uint64_t i = 0; i < 10; i++) {
		send_hb(&a, 2, i);
		send_hb(&b, 1, i);
	}
	uint8_t *snap = malloc(3 << 20);
	assert_non_null(snap);
	for (size_t i = 0; i < (3u << 20); i++) {
		snap[i] = (uint8_t)(i % 251);
	}
	assert_int_equal(net_transport_send_snapshot(a.t, 2, snap, 3 << 20), 0);
	send_hb(&plain, 1, 0);
	struct rx_count ca = { &a, 10 }, cb = { &b, 11 };
	assert_true(run_until(&loop, rx_at_least, &ca, 5000));
	assert_true(run_until(&loop, rx_at_least, &cb, 10000));
	for (int k = 0, seq = 0; k < b.n_rx; k++) {
		if (b.rx[k].channel == NET_CHANNEL_SNAP) {
			assert_int_equal(b.rx[k].len, 3u << 20);
			assert_memory_equal(b.rx[k].bytes, snap, 3u << 20);
		} else {
			assert_int_equal(unpack_seq(&b.rx[k], 1, 2), (uint64_t)seq++);
		}
	}
	/* plain's hello is garbage to a's filter: the handshake fails, nothing arrives from 3. */
	struct net_peer_stats st;
	run_for(&loop, 200);
	assert_int_equal(net_transport_peer_stats(plain.t, 1, &st), 0);
	assert_false(st.connected[0]);
	assert_true(st.failures[0] >= 1);
	for (int k = 0; k < a.n_rx; k++) {
		assert_int_equal(a.rx[k].from, 2);
	}
	free(snap);
	m_close(&a);
	m_close(&b);
	m_close(&plain);
	drain_and_close(&loop);
	assert_true(xf_created > 0);
	assert_int_equal(xf_created, xf_destroyed);
}

/* An acceptor that takes the connection and never answers the hello: the dialer gives up at
 * its hello deadline and retries; a member moved to another URL is dialed there. */
static int mute_accepted;
static struct net_stream *mute_streams[64];
static void mute_on_accept(struct net_listener *l, struct net_stream *s)
{
	(void)l;
	assert_true(mute_accepted < 64);
	mute_streams[mute_accepted++] = s;
	net_stream_set_cbs(s, NULL, NULL);
}

static void mute_listener_closed(struct net_listener *l)
{
	*(bool *)net_listener_data(l) = true;
}

static void test_hello_timeout_and_move(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	static struct member a, b;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	bool mute_closed = false;
	mute_accepted = 0;
	struct net_listener *mute = NULL;
	assert_int_equal(net_listener_open(&loop, "http://127.0.0.1:0", 0, NULL, mute_on_accept,
					   &mute_closed, &mute),
			 0);
	struct net_transport_config cfg = { .hello_timeout_ms = 100 };
	m_open(&loop, &a, 1, 0, &cfg);
	m_open(&loop, &b, 2, 0, NULL);
	m_meet(&b, &a);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)net_listener_port(mute));
	assert_int_equal(net_transport_add_peer(a.t, 2, url), 0);
	send_hb(&a, 2, 5);
	run_for(&loop, 600);
	struct net_peer_stats st;
	assert_int_equal(net_transport_peer_stats(a.t, 2, &st), 0);
	assert_true(st.failures[0] >= 2);
	assert_true(mute_accepted >= 2);
	assert_int_equal(st.connects[0], 0);
	assert_int_equal(st.queued[0], 1);
	assert_true(m_logged(&a, "no answer to hello"));

	/* Member 2 is really at b's port: the queued message goes there. */
	m_meet(&a, &b);
	struct rx_count c = { &b, 1 };
	assert_true(run_until(&loop, rx_at_least, &c, 3000));
	assert_int_equal(unpack_seq(&b.rx[0], 1, 2), 5);
	for (int i = 0; i < mute_accepted; i++) {
		net_stream_close(mute_streams[i]);
	}
	net_listener_close(mute, mute_listener_closed);
	assert_true(run_until(&loop, raw_flag, &mute_closed, 2000));
	m_close(&a);
	m_close(&b);
	drain_and_close(&loop);
}

/* ---- the transport over TLS (net/tls.h) through the stream's filter interface ---- */

static EVP_PKEY *tkey(void)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(k);
	return k;
}

static void text_ext(X509 *c, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v;
	X509V3_set_ctx_nodb(&v);
	X509V3_set_ctx(&v, issuer, c, NULL, NULL, 0);
	X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &v, nid, value);
	assert_non_null(ex);
	assert_int_equal(X509_add_ext(c, ex, -1), 1);
	X509_EXTENSION_free(ex);
}

/* A CA certificate (issuer NULL: self-signed) or a member's, valid for 127.0.0.1. */
static X509 *tcert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, long serial)
{
	X509 *c = X509_new();
	assert_non_null(c);
	assert_int_equal(X509_set_version(c, X509_VERSION_3), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(c), serial), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(c), -3600));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(c), 86400));
	X509_NAME *name = X509_get_subject_name(c);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
						    (const unsigned char *)cn, -1, -1, 0),
			 1);
	X509 *iss = issuer != NULL ? issuer : c;
	assert_int_equal(X509_set_issuer_name(c, X509_get_subject_name(iss)), 1);
	assert_int_equal(X509_set_pubkey(c, key), 1);
	text_ext(c, iss, NID_basic_constraints,
		 issuer == NULL ? "critical,CA:TRUE" : "critical,CA:FALSE");
	text_ext(c, iss, NID_subject_key_identifier, "hash");
	if (issuer != NULL) {
		text_ext(c, iss, NID_authority_key_identifier, "keyid:always");
		text_ext(c, iss, NID_ext_key_usage, "serverAuth,clientAuth");
		text_ext(c, iss, NID_subject_alt_name, "IP:127.0.0.1");
	} else {
		text_ext(c, iss, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
	}
	assert_true(X509_sign(c, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
	return c;
}

static void tpem(const char *dir, const char *name, X509 *cert, EVP_PKEY *key, char *path,
		 size_t cap)
{
	int n = snprintf(path, cap, "%s/%s", dir, name);
	assert_true(n > 0 && (size_t)n < cap);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	if (cert != NULL) {
		assert_int_equal(PEM_write_X509(f, cert), 1);
	}
	if (key != NULL) {
		assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	}
	assert_int_equal(fclose(f), 0);
}

static void tls_pair_new(struct net_tls_filter_ctx *p, const char *ca, const char *cert,
			 const char *key)
{
	static const char *const alpn[] = { "cairn-peer" };
	char err[NET_TLS_ERRMSG_MAX];
	struct net_tls_config sc = {
		.role = NET_TLS_SERVER,
		.flag_prefix = "peer-",
		.cert_file = cert,
		.key_file = key,
		.trusted_ca_file = ca,
		.client_cert_auth = true,
		.alpn = alpn,
		.n_alpn = 1,
	};
	struct net_tls_config cc = sc;
	cc.role = NET_TLS_CLIENT;
	cc.client_cert_auth = false;
	assert_int_equal(net_tls_ctx_new(&sc, &p->server, err, sizeof err), 0);
	assert_int_equal(net_tls_ctx_new(&cc, &p->client, err, sizeof err), 0);
}

static void tls_pair_free(struct net_tls_filter_ctx *p)
{
	net_tls_ctx_free(p->server);
	net_tls_ctx_free(p->client);
}

/* Two members with certificates from one CA talk over mutual TLS: messages and a snapshot
 * chunk both ways. A third, whose certificate no trusted CA signed, is refused by TLS itself
 * before any hello: nothing of it is delivered. */
static void test_over_tls(void **state)
{
	(void)state;
	char dir[256];
	h_tmpdir_make(dir, sizeof dir, "cairn-peer-tls");
	EVP_PKEY *ca_key = tkey(), *m_key = tkey(), *x_key = tkey();
	X509 *ca = tcert(ca_key, "cairn-peer-ca", NULL, NULL, 1);
	X509 *mc = tcert(m_key, "member", ca, ca_key, 2);
	X509 *xc = tcert(x_key, "intruder", NULL, NULL, 3); /* self-signed */
	char ca_pem[320], m_pem[320], m_keyf[320], x_pem[320], x_keyf[320];
	tpem(dir, "ca.pem", ca, NULL, ca_pem, sizeof ca_pem);
	tpem(dir, "member.pem", mc, NULL, m_pem, sizeof m_pem);
	tpem(dir, "member.key", NULL, m_key, m_keyf, sizeof m_keyf);
	tpem(dir, "intruder.pem", xc, NULL, x_pem, sizeof x_pem);
	tpem(dir, "intruder.key", NULL, x_key, x_keyf, sizeof x_keyf);
	X509_free(ca);
	X509_free(mc);
	X509_free(xc);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(m_key);
	EVP_PKEY_free(x_key);
	struct net_tls_filter_ctx good, bad;
	tls_pair_new(&good, ca_pem, m_pem, m_keyf);
	tls_pair_new(&bad, ca_pem, x_pem, x_keyf);

	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	static struct member a, b, x;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	memset(&x, 0, sizeof x);
	struct net_transport_config cfg = { .stream = { .filter = net_tls_filter_factory,
							.filter_ctx = &good } };
	struct net_transport_config xcfg = { .stream = { .filter = net_tls_filter_factory,
							 .filter_ctx = &bad } };
	m_open(&loop, &a, 1, 0, &cfg);
	m_open(&loop, &b, 2, 0, &cfg);
	m_open(&loop, &x, 3, 0, &xcfg);
	m_meet(&a, &b);
	m_meet(&b, &a);
	m_meet(&a, &x);
	m_meet(&x, &a);
	for (uint64_t i = 0; i < 20; i++) {
		send_hb(&a, 2, i);
		send_hb(&b, 1, i);
	}
	uint8_t *chunk = malloc(1 << 20);
	assert_non_null(chunk);
	for (size_t i = 0; i < (1u << 20); i++) {
		chunk[i] = (uint8_t)(i * 3);
	}
	assert_int_equal(net_transport_send_snapshot(a.t, 2, chunk, 1 << 20), 0);
	send_hb(&x, 1, 0);
	struct rx_count ca_n = { &a, 20 }, cb_n = { &b, 21 };
	assert_true(run_until(&loop, rx_at_least, &ca_n, 5000));
	assert_true(run_until(&loop, rx_at_least, &cb_n, 5000));
	for (int k = 0, seq = 0; k < b.n_rx; k++) {
		if (b.rx[k].channel == NET_CHANNEL_SNAP) {
			assert_memory_equal(b.rx[k].bytes, chunk, 1u << 20);
		} else {
			assert_int_equal(unpack_seq(&b.rx[k], 1, 2), (uint64_t)seq++);
		}
	}
	run_for(&loop, 300);
	for (int k = 0; k < a.n_rx; k++) {
		assert_int_equal(a.rx[k].from, 2);
	}
	struct net_peer_stats st;
	assert_int_equal(net_transport_peer_stats(x.t, 1, &st), 0);
	assert_int_equal(st.connects[0], 0);
	assert_true(st.failures[0] >= 1);
	struct net_transport_stats ts;
	net_transport_stats(a.t, &ts);
	assert_int_equal(ts.accepted, 1); /* b's message channel; x never got to its hello */
	free(chunk);
	m_close(&a);
	m_close(&b);
	m_close(&x);
	drain_and_close(&loop);
	tls_pair_free(&good);
	tls_pair_free(&bad);
	h_tmpdir_remove(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_three_members),
		cmocka_unit_test(test_restart_same_port),
		cmocka_unit_test(test_refused_hellos),
		cmocka_unit_test(test_snapshot_beside_messages),
		cmocka_unit_test(test_queue_bound_and_backoff),
		cmocka_unit_test(test_strangers),
		cmocka_unit_test(test_recv_reentry),
		cmocka_unit_test(test_over_filter),
		cmocka_unit_test(test_hello_timeout_and_move),
		cmocka_unit_test(test_over_tls),
	};
	return cmocka_run_group_tests_name("peer", tests, NULL, NULL);
}
