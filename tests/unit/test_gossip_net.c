/* test_gossip_net.c: gossip's UDP and TCP transport (net/gossip_net.h) over real sockets on
 * loopback (127.0.0.1, and ::1 when the host has it), ephemeral ports only: datagrams both ways,
 * labels and keys that do not match (dropped and counted), key rotation, push-pull both ways,
 * push-pull to a closed port, to a peer that never answers (deadline), over the stream bound
 * and the frame bound, and a stop that releases everything. Every wait on the loop has a
 * deadline; every test checks that uv_loop_close returns 0 (no handle left open). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "gossip_net.h"

#define WAIT_MS 5000

/* ---- bounded loop driving ---- */

typedef bool (*cond_fn)(void *arg);

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Runs the loop until cond holds or timeout_ms pass; returns whether cond held. Never blocks
 * in the loop (UV_RUN_NOWAIT and 1 ms naps), so a stuck test ends at its deadline. */
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

/* Runs the loop for ms milliseconds whatever happens. */
static void run_for(uv_loop_t *loop, uint64_t ms)
{
	uint64_t end = uv_hrtime() + ms * 1000000u;
	while (uv_hrtime() < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
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

/* ---- a node: one transport and what reached it ---- */

#define MAX_SEEN 64

struct node {
	uv_loop_t *loop;
	struct net_gossip *t;
	int family;
	/* datagrams */
	int packets;
	uint8_t last[2048];
	size_t last_len;
	struct sockaddr_storage last_from;
	/* push-pull */
	int states;
	bool last_join;
	char last_state[256];
	int dones;
	int last_status;
	int statuses[MAX_SEEN];
	const char *state; /* what local_state answers */
	size_t state_len;  /* 0: strlen(state) */
	bool reject;       /* on_state refuses */
	int done_after_stop;
	bool stopping;
	bool stopped;
};

static void on_packet(void *data, const struct sockaddr *from, const uint8_t *payload, size_t len)
{
	struct node *n = data;
	assert_true(len <= sizeof n->last);
	memcpy(n->last, payload, len);
	n->last_len = len;
	memcpy(&n->last_from, from,
	       from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
					     sizeof(struct sockaddr_in));
	n->packets++;
}

static int on_state(void *data, const struct sockaddr *from, const uint8_t *state, size_t len,
		    bool join)
{
	struct node *n = data;
	assert_non_null(from);
	size_t c = len < sizeof n->last_state - 1 ? len : sizeof n->last_state - 1;
	memcpy(n->last_state, state, c);
	n->last_state[c] = '\0';
	n->last_join = join;
	n->states++;
	return n->reject ? -1 : 0;
}

static int local_state(void *data, bool join, uint8_t **buf, size_t *len)
{
	struct node *n = data;
	(void)join;
	size_t l = n->state_len > 0 ? n->state_len : strlen(n->state);
	*buf = malloc(l > 0 ? l : 1);
	assert_non_null(*buf);
	memset(*buf, 'z', l);
	if (n->state_len == 0) {
		memcpy(*buf, n->state, l);
	}
	*len = l;
	return 0;
}

static void on_done(void *data, const struct sockaddr *to, int status)
{
	struct node *n = data;
	assert_non_null(to);
	if (n->stopping) {
		n->done_after_stop++;
	}
	if (n->dones < MAX_SEEN) {
		n->statuses[n->dones] = status;
	}
	n->dones++;
	n->last_status = status;
}

static void on_log(void *data, int level, const char *msg)
{
	(void)data;
	if (getenv("CAIRN_TEST_VERBOSE") != NULL) {
		fprintf(stderr, "  log %d: %s\n", level, msg);
	}
}

static void on_stopped(void *data)
{
	struct node *n = data;
	n->stopped = true;
	n->t = NULL;
}

/* Fills ss with the loopback address of the family and a port. */
static void loopback(int family, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (family == AF_INET6) {
		assert_int_equal(uv_ip6_addr("::1", port, (struct sockaddr_in6 *)ss), 0);
	} else {
		assert_int_equal(uv_ip4_addr("127.0.0.1", port, (struct sockaddr_in *)ss), 0);
	}
}

struct opts {
	const char *label;
	const struct net_keyring *kr;
	uint32_t max_streams;
	uint32_t max_frame;
	uint32_t timeout_ms;
	int family;
};

static int node_try_start(uv_loop_t *loop, struct node *n, const struct opts *o)
{
	memset(n, 0, sizeof *n);
	n->loop = loop;
	n->family = o != NULL && o->family != 0 ? o->family : AF_INET;
	n->state = "state";
	struct net_gossip_config cfg;
	net_gossip_config_init(&cfg);
	cfg.loop = loop;
	loopback(n->family, 0, &cfg.bind);
	if (o != NULL) {
		cfg.label = o->label;
		cfg.keyring = o->kr;
		if (o->max_streams != 0) {
			cfg.max_streams = o->max_streams;
		}
		if (o->max_frame != 0) {
			cfg.max_frame = o->max_frame;
		}
		if (o->timeout_ms != 0) {
			cfg.stream_timeout_ms = o->timeout_ms;
		}
	}
	cfg.data = n;
	cfg.on_packet = on_packet;
	cfg.on_state = on_state;
	cfg.local_state = local_state;
	cfg.on_pushpull_done = on_done;
	cfg.log = on_log;
	return net_gossip_start(&cfg, &n->t);
}

static void node_start(uv_loop_t *loop, struct node *n, const struct opts *o)
{
	assert_int_equal(node_try_start(loop, n, o), 0);
	assert_non_null(n->t);
	assert_int_not_equal(net_gossip_port(n->t), 0);
}

static bool node_stopped(void *arg)
{
	return ((struct node *)arg)->stopped;
}

static void node_stop(struct node *n)
{
	n->stopping = true;
	net_gossip_stop(n->t, on_stopped, n);
	assert_true(run_until(n->loop, node_stopped, n, WAIT_MS));
	assert_int_equal(n->done_after_stop, 0);
}

static void node_addr(const struct node *n, struct sockaddr_storage *ss)
{
	loopback(n->family, net_gossip_port(n->t), ss);
}

static bool got_packet(void *arg)
{
	return ((struct node *)arg)->packets > 0;
}

static bool got_done(void *arg)
{
	return ((struct node *)arg)->dones > 0;
}

static uint64_t packets_in(const struct node *n)
{
	struct net_gossip_stats st;
	net_gossip_stats(n->t, &st);
	return st.packets_in;
}

static bool saw_datagram(void *arg)
{
	return packets_in(arg) > 0;
}

static void send_str(struct node *from, const struct node *to, const char *s)
{
	struct sockaddr_storage ss;
	node_addr(to, &ss);
	assert_int_equal(net_gossip_send(from->t, (const struct sockaddr *)&ss, (const uint8_t *)s,
					 strlen(s)),
			 0);
}

static uint16_t from_port(const struct node *n)
{
	const struct sockaddr *sa = (const struct sockaddr *)&n->last_from;
	if (sa->sa_family == AF_INET6) {
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	}
	return ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

static void one_key(struct net_keyring *kr, uint8_t seed)
{
	memset(kr, 0, sizeof *kr);
	kr->n = 1;
	for (size_t i = 0; i < NET_SEAL_KEY_LEN; i++) {
		kr->keys[0][i] = (uint8_t)(seed * 3u + i);
	}
}

/* ---- datagrams ---- */

static void datagrams_both_ways(int family)
{
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct node a, b;
	struct opts o = { .family = family };
	if (node_try_start(&loop, &a, &o) == UV_EADDRNOTAVAIL) {
		drain_and_close(&loop);
		skip();
	}
	assert_non_null(a.t);
	node_start(&loop, &b, &o);
	send_str(&a, &b, "hello b");
	assert_true(run_until(&loop, got_packet, &b, WAIT_MS));
	assert_int_equal(b.last_len, 7);
	assert_memory_equal(b.last, "hello b", 7);
	assert_int_equal(from_port(&b), net_gossip_port(a.t));
	send_str(&b, &a, "hello a");
	assert_true(run_until(&loop, got_packet, &a, WAIT_MS));
	assert_memory_equal(a.last, "hello a", 7);
	assert_int_equal(from_port(&a), net_gossip_port(b.t));

	struct net_gossip_stats st;
	net_gossip_stats(a.t, &st);
	assert_int_equal(st.packets_out, 1);
	assert_int_equal(st.packets_in, 1);
	assert_int_equal(st.bytes_out, 7 + net_seal_overhead(NULL, NULL));
	assert_int_equal(st.dropped_short + st.dropped_label + st.dropped_crc, 0);

	/* The largest payload fits; one byte more is refused at sending. */
	size_t max = net_gossip_max_payload(a.t);
	assert_int_equal(max, 1400 - net_seal_overhead(NULL, NULL));
	uint8_t *big = calloc(1, max + 1);
	assert_non_null(big);
	struct sockaddr_storage to;
	node_addr(&b, &to);
	b.packets = 0;
	assert_int_equal(net_gossip_send(a.t, (const struct sockaddr *)&to, big, max), 0);
	assert_true(run_until(&loop, got_packet, &b, WAIT_MS));
	assert_int_equal(b.last_len, max);
	assert_int_not_equal(net_gossip_send(a.t, (const struct sockaddr *)&to, big, max + 1), 0);
	free(big);

	node_stop(&a);
	node_stop(&b);
	drain_and_close(&loop);
}

static void test_datagrams_ipv4(void **state)
{
	(void)state;
	datagrams_both_ways(AF_INET);
}

static void test_datagrams_ipv6(void **state)
{
	(void)state;
	datagrams_both_ways(AF_INET6);
}

/* A raw datagram straight to a node: garbage, a bad CRC. */
static void raw_send(const struct node *to, const uint8_t *buf, size_t len)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_storage ss;
	node_addr(to, &ss);
	assert_int_equal(
		sendto(fd, buf, len, 0, (const struct sockaddr *)&ss, sizeof(struct sockaddr_in)),
		(ssize_t)len);
	close(fd);
}

static bool packets_in_at_least(struct node *n, uint64_t want)
{
	struct net_gossip_stats st;
	net_gossip_stats(n->t, &st);
	return st.packets_in >= want;
}

static bool two_in(void *arg)
{
	return packets_in_at_least(arg, 2);
}

static void test_label_mismatch(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct node blue, green, blue2, none;
	node_start(&loop, &blue, &(struct opts){ .label = "blue" });
	node_start(&loop, &green, &(struct opts){ .label = "green" });
	node_start(&loop, &blue2, &(struct opts){ .label = "blue" });
	node_start(&loop, &none, NULL);

	send_str(&blue, &green, "for blue only");
	send_str(&none, &green, "no label");
	assert_true(run_until(&loop, two_in, &green, WAIT_MS));
	send_str(&blue, &none, "labelled");
	assert_true(run_until(&loop, saw_datagram, &none, WAIT_MS));
	send_str(&blue, &blue2, "same pool");
	assert_true(run_until(&loop, got_packet, &blue2, WAIT_MS));
	assert_memory_equal(blue2.last, "same pool", 9);

	struct net_gossip_stats st;
	net_gossip_stats(green.t, &st);
	assert_int_equal(green.packets, 0);
	assert_int_equal(st.dropped_label, 2);
	net_gossip_stats(none.t, &st);
	assert_int_equal(none.packets, 0);
	assert_int_equal(st.dropped_label, 1);
	/* The label costs its length and one byte. */
	assert_int_equal(net_gossip_max_payload(blue.t), net_gossip_max_payload(none.t) - 5);

	/* Raw datagrams: empty, a flipped CRC, unknown flags, larger than max_packet. */
	net_gossip_stats(none.t, &st);
	uint64_t before = st.packets_in;
	uint8_t pkt[64];
	raw_send(&none, pkt, 0);
	uint8_t *huge = calloc(1, 1500);
	assert_non_null(huge);
	raw_send(&none, huge, 1500);
	free(huge);
	long n = net_seal(NULL, NULL, (const uint8_t *)"x", 1, pkt, sizeof pkt);
	assert_true(n > 0);
	pkt[1] ^= 1;
	raw_send(&none, pkt, (size_t)n);
	pkt[0] = 0x80;
	raw_send(&none, pkt, (size_t)n);
	uint64_t end = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
	while (!packets_in_at_least(&none, before + 4) && uv_hrtime() < end) {
		uv_run(&loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	net_gossip_stats(none.t, &st);
	assert_int_equal(st.packets_in, before + 4);
	assert_int_equal(st.dropped_oversize, 1);
	assert_int_equal(st.dropped_short, 1);
	assert_int_equal(st.dropped_crc, 1);
	assert_int_equal(st.dropped_flags, 1);
	assert_int_equal(none.packets, 0);

	node_stop(&blue);
	node_stop(&green);
	node_stop(&blue2);
	node_stop(&none);
	drain_and_close(&loop);
}

static void test_encrypted(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct net_keyring k1, k2, plain = { .n = 0 };
	one_key(&k1, 1);
	one_key(&k2, 2);
	struct node a, b, other, none;
	node_start(&loop, &a, &(struct opts){ .kr = &k1, .label = "l" });
	node_start(&loop, &b, &(struct opts){ .kr = &k1, .label = "l" });
	node_start(&loop, &other, &(struct opts){ .kr = &k2, .label = "l" });
	node_start(&loop, &none, &(struct opts){ .label = "l" });
	assert_int_equal(net_gossip_max_payload(a.t), 1400 - net_seal_overhead(&k1, "l"));

	send_str(&a, &b, "secret");
	assert_true(run_until(&loop, got_packet, &b, WAIT_MS));
	assert_memory_equal(b.last, "secret", 6);
	send_str(&a, &other, "secret");
	send_str(&a, &none, "secret");
	send_str(&none, &b, "plain");
	assert_true(run_until(&loop, saw_datagram, &other, WAIT_MS));
	assert_true(run_until(&loop, saw_datagram, &none, WAIT_MS));
	assert_true(run_until(&loop, two_in, &b, WAIT_MS));
	struct net_gossip_stats st;
	net_gossip_stats(other.t, &st);
	assert_int_equal(other.packets, 0);
	assert_int_equal(st.dropped_decrypt, 1);
	net_gossip_stats(none.t, &st);
	assert_int_equal(none.packets, 0);
	assert_int_equal(st.dropped_plain, 1);
	net_gossip_stats(b.t, &st);
	assert_int_equal(b.packets, 1);
	assert_int_equal(st.dropped_plain, 1);

	/* Rotation: other learns k1 as a second key and opens a's packets; then a makes k2
	 * primary (keeping k1) and b, still on [k1] only, cannot open them, other can. */
	struct net_keyring ring = k2;
	ring.n = 2;
	memcpy(ring.keys[1], k1.keys[0], NET_SEAL_KEY_LEN);
	net_gossip_set_keyring(other.t, &ring);
	send_str(&a, &other, "after rotation");
	assert_true(run_until(&loop, got_packet, &other, WAIT_MS));
	assert_memory_equal(other.last, "after rotation", 14);
	net_gossip_set_keyring(a.t, &ring);
	other.packets = 0;
	send_str(&a, &other, "new primary");
	assert_true(run_until(&loop, got_packet, &other, WAIT_MS));
	assert_memory_equal(other.last, "new primary", 11);
	send_str(&a, &b, "new primary");
	uint64_t end = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
	while (!packets_in_at_least(&b, 3) && uv_hrtime() < end) {
		uv_run(&loop, UV_RUN_NOWAIT);
		sleep_ms(1);
	}
	net_gossip_stats(b.t, &st);
	assert_int_equal(st.dropped_decrypt, 1);
	assert_int_equal(b.packets, 1);
	/* Encryption turned off on a: its datagrams are plain again. */
	net_gossip_set_keyring(a.t, &plain);
	none.packets = 0;
	send_str(&a, &none, "plain again");
	assert_true(run_until(&loop, got_packet, &none, WAIT_MS));

	node_stop(&a);
	node_stop(&b);
	node_stop(&other);
	node_stop(&none);
	drain_and_close(&loop);
}

/* ---- push-pull ---- */

static void pushpull_both_ways(int family, const char *label, const struct net_keyring *kr)
{
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct node a, b;
	struct opts o = { .family = family, .label = label, .kr = kr };
	if (node_try_start(&loop, &a, &o) == UV_EADDRNOTAVAIL) {
		drain_and_close(&loop);
		skip();
	}
	node_start(&loop, &b, &o);
	a.state = "state of a";
	b.state = "state of b";

	struct sockaddr_storage to;
	node_addr(&b, &to);
	assert_int_equal(net_gossip_pushpull(a.t, (const struct sockaddr *)&to, true), 0);
	assert_int_equal(a.dones, 0); /* never inside the call */
	assert_true(run_until(&loop, got_done, &a, WAIT_MS));
	assert_int_equal(a.last_status, 0);
	assert_int_equal(b.states, 1);
	assert_string_equal(b.last_state, "state of a");
	assert_true(b.last_join);
	assert_int_equal(a.states, 1);
	assert_string_equal(a.last_state, "state of b");
	assert_false(a.last_join);
	assert_int_equal(b.dones, 0); /* the acceptor reports nothing */

	node_addr(&a, &to);
	assert_int_equal(net_gossip_pushpull(b.t, (const struct sockaddr *)&to, false), 0);
	assert_true(run_until(&loop, got_done, &b, WAIT_MS));
	assert_int_equal(b.last_status, 0);
	assert_int_equal(a.states, 2);
	assert_string_equal(a.last_state, "state of b");
	assert_false(a.last_join);
	assert_int_equal(b.states, 2);
	assert_string_equal(b.last_state, "state of a");

	/* A state much larger than the read buffer's first size. */
	a.state_len = 300000;
	b.dones = 0;
	assert_int_equal(net_gossip_pushpull(b.t, (const struct sockaddr *)&to, false), 0);
	assert_true(run_until(&loop, got_done, &b, WAIT_MS));
	assert_int_equal(b.last_status, 0);
	assert_int_equal(b.states, 3);
	assert_int_equal(strlen(b.last_state), sizeof b.last_state - 1);

	struct net_gossip_stats st;
	net_gossip_stats(a.t, &st);
	assert_int_equal(st.streams_out, 1);
	assert_int_equal(st.streams_in, 2);
	assert_int_equal(st.streams_failed, 0);
	node_stop(&a);
	node_stop(&b);
	drain_and_close(&loop);
}

static void test_pushpull_plain(void **state)
{
	(void)state;
	pushpull_both_ways(AF_INET, NULL, NULL);
}

static void test_pushpull_encrypted(void **state)
{
	(void)state;
	struct net_keyring kr;
	one_key(&kr, 9);
	pushpull_both_ways(AF_INET, "pool", &kr);
}

static void test_pushpull_ipv6(void **state)
{
	(void)state;
	pushpull_both_ways(AF_INET6, NULL, NULL);
}

/* Push-pulls that fail: another key, the remote refusing the state, too large a frame. */
static void test_pushpull_refused_by_peer(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct net_keyring k1, k2;
	one_key(&k1, 1);
	one_key(&k2, 2);
	struct node a, b, small;
	node_start(&loop, &a, &(struct opts){ .kr = &k1 });
	node_start(&loop, &b, &(struct opts){ .kr = &k2 });
	node_start(&loop, &small, &(struct opts){ .kr = &k1, .max_frame = 64 });
	struct sockaddr_storage to;

	node_addr(&b, &to);
	assert_int_equal(net_gossip_pushpull(a.t, (const struct sockaddr *)&to, false), 0);
	assert_true(run_until(&loop, got_done, &a, WAIT_MS));
	assert_int_not_equal(a.last_status, 0);
	assert_int_equal(b.states, 0);
	struct net_gossip_stats st;
	net_gossip_stats(b.t, &st);
	assert_int_equal(st.dropped_decrypt, 1);

	/* Same key, but the remote's on_state says no: no answer, a failure here. */
	net_gossip_set_keyring(b.t, &k1);
	b.reject = true;
	a.dones = 0;
	assert_int_equal(net_gossip_pushpull(a.t, (const struct sockaddr *)&to, false), 0);
	assert_true(run_until(&loop, got_done, &a, WAIT_MS));
	assert_int_not_equal(a.last_status, 0);
	assert_int_equal(b.states, 1);
	assert_int_equal(a.states, 0);

	/* Same key, another label: the remote drops the frame. */
	struct node other;
	node_start(&loop, &other, &(struct opts){ .kr = &k1, .label = "elsewhere" });
	a.dones = 0;
	node_addr(&other, &to);
	assert_int_equal(net_gossip_pushpull(a.t, (const struct sockaddr *)&to, false), 0);
	assert_true(run_until(&loop, got_done, &a, WAIT_MS));
	assert_int_not_equal(a.last_status, 0);
	assert_int_equal(other.states, 0);
	net_gossip_stats(other.t, &st);
	assert_int_equal(st.dropped_label, 1);
	node_stop(&other);

	/* Our state exceeds the remote's frame bound. */
	a.state_len = 1000;
	a.dones = 0;
	node_addr(&small, &to);
	assert_int_equal(net_gossip_pushpull(a.t, (const struct sockaddr *)&to, false), 0);
	assert_true(run_until(&loop, got_done, &a, WAIT_MS));
	assert_int_not_equal(a.last_status, 0);
	assert_int_equal(small.states, 0);

	/* And on_state refusing the answer on our side fails the push-pull too. */
	b.reject = false;
	a.reject = true;
	a.state_len = 0;
	a.dones = 0;
	node_addr(&b, &to);
	assert_int_equal(net_gossip_pushpull(a.t, (const struct sockaddr *)&to, false), 0);
	assert_true(run_until(&loop, got_done, &a, WAIT_MS));
	assert_int_not_equal(a.last_status, 0);
	assert_int_equal(a.states, 1);

	net_gossip_stats(a.t, &st);
	assert_int_equal(st.streams_failed, 5);
	node_stop(&a);
	node_stop(&b);
	node_stop(&small);
	drain_and_close(&loop);
}

/* A port nothing listens on: bind a TCP socket to get one, then close it. */
static uint16_t closed_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in in;
	memset(&in, 0, sizeof in);
	in.sin_family = AF_INET;
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&in, sizeof in), 0);
	socklen_t len = sizeof in;
	assert_int_equal(getsockname(fd, (struct sockaddr *)&in, &len), 0);
	close(fd);
	return ntohs(in.sin_port);
}

static void test_pushpull_closed_port(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct node a;
	node_start(&loop, &a, NULL);
	struct sockaddr_storage to;
	loopback(AF_INET, closed_port(), &to);
	assert_int_equal(net_gossip_pushpull(a.t, (const struct sockaddr *)&to, true), 0);
	assert_true(run_until(&loop, got_done, &a, WAIT_MS));
	assert_int_equal(a.last_status, UV_ECONNREFUSED);
	assert_int_equal(a.states, 0);
	node_stop(&a);
	drain_and_close(&loop);
}

/* A TCP listener that accepts (the kernel completes the handshake) and never says a word. */
static int silent_listener(uint16_t *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in in;
	memset(&in, 0, sizeof in);
	in.sin_family = AF_INET;
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&in, sizeof in), 0);
	assert_int_equal(listen(fd, 16), 0);
	socklen_t len = sizeof in;
	assert_int_equal(getsockname(fd, (struct sockaddr *)&in, &len), 0);
	*port = ntohs(in.sin_port);
	return fd;
}

static void test_pushpull_timeout(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	uint16_t port;
	int lfd = silent_listener(&port);
	struct node a;
	node_start(&loop, &a, &(struct opts){ .timeout_ms = 200 });
	struct sockaddr_storage to;
	loopback(AF_INET, port, &to);
	assert_int_equal(net_gossip_pushpull(a.t, (const struct sockaddr *)&to, false), 0);
	assert_true(run_until(&loop, got_done, &a, WAIT_MS));
	assert_int_equal(a.last_status, UV_ETIMEDOUT);
	struct net_gossip_stats st;
	net_gossip_stats(a.t, &st);
	assert_int_equal(st.streams_failed, 1);
	node_stop(&a);
	close(lfd);
	drain_and_close(&loop);
}

static bool three_done(void *arg)
{
	return ((struct node *)arg)->dones >= 3;
}

static bool one_stream_in(void *arg)
{
	struct net_gossip_stats st;
	net_gossip_stats(((struct node *)arg)->t, &st);
	return st.streams_in >= 1;
}

static void test_max_streams(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	uint16_t port;
	int lfd = silent_listener(&port);

	/* Outbound: two streams hang on the silent listener; the third is not started and
	 * reported failed, from the loop. */
	struct node a;
	node_start(&loop, &a, &(struct opts){ .max_streams = 2, .timeout_ms = 300 });
	struct sockaddr_storage to;
	loopback(AF_INET, port, &to);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(net_gossip_pushpull(a.t, (const struct sockaddr *)&to, false), 0);
	}
	assert_int_equal(a.dones, 0);
	assert_true(run_until(&loop, got_done, &a, WAIT_MS));
	assert_int_equal(a.dones, 1);
	assert_int_equal(a.statuses[0], UV_EBUSY);
	assert_true(run_until(&loop, three_done, &a, WAIT_MS));
	assert_int_equal(a.statuses[1], UV_ETIMEDOUT);
	assert_int_equal(a.statuses[2], UV_ETIMEDOUT);
	struct net_gossip_stats st;
	net_gossip_stats(a.t, &st);
	assert_int_equal(st.streams_refused, 1);
	assert_int_equal(st.streams_out, 2);

	/* Inbound: b takes one stream; a silent client holds it, so a's push-pull is refused
	 * (accepted and closed at once) and fails long before the deadline. */
	struct node b;
	node_start(&loop, &b, &(struct opts){ .max_streams = 1, .timeout_ms = 3000 });
	int cfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(cfd >= 0);
	struct sockaddr_storage bto;
	node_addr(&b, &bto);
	assert_int_equal(connect(cfd, (const struct sockaddr *)&bto, sizeof(struct sockaddr_in)),
			 0);
	assert_true(run_until(&loop, one_stream_in, &b, WAIT_MS));
	a.dones = 0;
	assert_int_equal(net_gossip_pushpull(a.t, (const struct sockaddr *)&bto, false), 0);
	assert_true(run_until(&loop, got_done, &a, WAIT_MS));
	assert_int_not_equal(a.last_status, 0);
	assert_int_not_equal(a.last_status, UV_ETIMEDOUT);
	net_gossip_stats(b.t, &st);
	assert_int_equal(st.streams_refused, 1);
	assert_int_equal(b.states, 0);

	close(cfd);
	node_stop(&a);
	node_stop(&b);
	close(lfd);
	drain_and_close(&loop);
}

/* ---- stop ---- */

static void test_stop_releases_everything(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	uint16_t port;
	int lfd = silent_listener(&port);
	struct node a, b;
	node_start(&loop, &a, &(struct opts){ .max_streams = 3 });
	node_start(&loop, &b, NULL);
	/* Streams in every state: connecting or waiting on the silent listener, one refused by
	 * the bound (its report pending), and an inbound one on b from a silent client. */
	struct sockaddr_storage to;
	loopback(AF_INET, port, &to);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(net_gossip_pushpull(a.t, (const struct sockaddr *)&to, false), 0);
	}
	int cfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(cfd >= 0);
	struct sockaddr_storage bto;
	node_addr(&b, &bto);
	assert_int_equal(connect(cfd, (const struct sockaddr *)&bto, sizeof(struct sockaddr_in)),
			 0);
	assert_true(run_until(&loop, one_stream_in, &b, WAIT_MS));
	/* Datagrams in flight both ways. */
	for (int i = 0; i < 20; i++) {
		send_str(&a, &b, "bye");
		send_str(&b, &a, "bye");
	}
	int dones_before = a.dones;
	node_stop(&a);
	node_stop(&b);
	/* No report after stop began (node_stop checks), and nothing after it ended. */
	run_for(&loop, 50);
	assert_int_equal(a.dones, dones_before);
	close(cfd);
	close(lfd);
	/* A start on a port in use fails cleanly. */
	struct node c, d;
	node_start(&loop, &c, NULL);
	struct net_gossip_config cfg;
	net_gossip_config_init(&cfg);
	cfg.loop = &loop;
	loopback(AF_INET, net_gossip_port(c.t), &cfg.bind);
	cfg.data = &d;
	struct net_gossip *t = NULL;
	assert_int_equal(net_gossip_start(&cfg, &t), UV_EADDRINUSE);
	assert_null(t);
	node_stop(&c);
	drain_and_close(&loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_datagrams_ipv4),
		cmocka_unit_test(test_datagrams_ipv6),
		cmocka_unit_test(test_label_mismatch),
		cmocka_unit_test(test_encrypted),
		cmocka_unit_test(test_pushpull_plain),
		cmocka_unit_test(test_pushpull_encrypted),
		cmocka_unit_test(test_pushpull_ipv6),
		cmocka_unit_test(test_pushpull_refused_by_peer),
		cmocka_unit_test(test_pushpull_closed_port),
		cmocka_unit_test(test_pushpull_timeout),
		cmocka_unit_test(test_max_streams),
		cmocka_unit_test(test_stop_releases_everything),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
