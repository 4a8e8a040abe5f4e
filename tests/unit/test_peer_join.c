/* test_peer_join.c: a new member asking who it is (net/frame.h, "joining"): the join request
 * and answer encodings, their malformed forms refused; over real loopback connections, a
 * transport's callback answering or refusing, a transport without one refusing, a dial to
 * nowhere failing, and the transport still taking ordinary hellos afterwards. Every wait has a
 * deadline and uv_loop_close returns 0 at the end. */
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

#include "peer.h"

#define CLUSTER 0xc1u
#define NEW_ID 0x44u

/* ---- codec ---- */

static void test_join_codec(void **state)
{
	(void)state;
	uint8_t buf[NET_JOIN_MAX_SIZE];
	size_t n = 0;
	char url[NET_JOIN_URL_MAX + 1];
	uint16_t version = 0;
	assert_int_equal(net_join_encode("http://127.0.0.1:2380", buf, sizeof buf, &n), 0);
	assert_int_equal(n, 8 + strlen("http://127.0.0.1:2380"));
	assert_int_equal(net_join_decode(buf, n, &version, url), 0);
	assert_int_equal(version, NET_PROTOCOL_VERSION);
	assert_string_equal(url, "http://127.0.0.1:2380");
	/* cut short, one byte more, a bad magic, a control character */
	assert_int_equal(net_join_decode(buf, n - 1, &version, url), NET_EPROTO);
	assert_int_equal(net_join_decode(buf, n + 1, &version, url), NET_EPROTO);
	buf[0] ^= 1;
	assert_int_equal(net_join_decode(buf, n, &version, url), NET_EPROTO);
	buf[0] ^= 1;
	buf[10] = '\n';
	assert_int_equal(net_join_decode(buf, n, &version, url), NET_EPROTO);
	assert_int_equal(net_join_encode("", buf, sizeof buf, &n), NET_EINVAL);
	assert_int_equal(net_join_encode("a b", buf, sizeof buf, &n), NET_EINVAL);
	assert_int_equal(net_join_encode("http://x", buf, 4, &n), NET_ELIMIT);
	char long_url[NET_JOIN_URL_MAX + 2];
	memset(long_url, 'a', sizeof long_url - 1);
	long_url[sizeof long_url - 1] = '\0';
	assert_int_equal(net_join_encode(long_url, buf, sizeof buf, &n), NET_EINVAL);
}

static void test_answer_codec(void **state)
{
	(void)state;
	static struct net_join_answer a, b;
	static uint8_t buf[NET_JOIN_ANSWER_MAX_SIZE];
	size_t n = 0;
	memset(&a, 0, sizeof a);
	a.cluster_id = CLUSTER;
	a.member_id = NEW_ID;
	a.n = NET_JOIN_MAX_MEMBERS;
	for (uint32_t i = 0; i < a.n; i++) {
		a.members[i].id = 100 + i;
		a.members[i].learner = i == 3;
		memset(a.members[i].url, 'u', NET_JOIN_URL_MAX); /* the longest */
	}
	assert_int_equal(net_join_answer_encode(&a, buf, sizeof buf, &n), 0);
	assert_int_equal(n, NET_JOIN_ANSWER_MAX_SIZE);
	assert_int_equal(net_join_answer_decode(buf, n, &b), 0);
	assert_int_equal(b.cluster_id, CLUSTER);
	assert_int_equal(b.member_id, NEW_ID);
	assert_int_equal(b.n, a.n);
	for (uint32_t i = 0; i < a.n; i++) {
		assert_int_equal(b.members[i].id, a.members[i].id);
		assert_int_equal(b.members[i].learner, a.members[i].learner);
		assert_string_equal(b.members[i].url, a.members[i].url);
	}
	assert_int_equal(net_join_answer_encode(&a, buf, sizeof buf - 1, &n), NET_ELIMIT);
	/* malformed: every cut, a trailing byte, an id 0, a learner byte other than 0/1 */
	a.n = 2;
	snprintf(a.members[0].url, sizeof a.members[0].url, "http://127.0.0.1:1");
	snprintf(a.members[1].url, sizeof a.members[1].url, "http://127.0.0.1:2");
	assert_int_equal(net_join_answer_encode(&a, buf, sizeof buf, &n), 0);
	for (size_t cut = 0; cut < n; cut++)
		assert_int_equal(net_join_answer_decode(buf, cut, &b), NET_EPROTO);
	assert_int_equal(net_join_answer_decode(buf, n + 1, &b), NET_EPROTO);
	buf[22 + 8] = 2;
	assert_int_equal(net_join_answer_decode(buf, n, &b), NET_EPROTO);
	buf[22 + 8] = 0;
	memset(buf + 22, 0, 8);
	assert_int_equal(net_join_answer_decode(buf, n, &b), NET_EPROTO);
	a.members[1].id = 0;
	assert_int_equal(net_join_answer_encode(&a, buf, sizeof buf, &n), NET_EINVAL);
	a.members[1].id = 7;
	a.n = NET_JOIN_MAX_MEMBERS + 1;
	assert_int_equal(net_join_answer_encode(&a, buf, sizeof buf, &n), NET_EINVAL);
	a.n = 1;
	a.member_id = 0;
	assert_int_equal(net_join_answer_encode(&a, buf, sizeof buf, &n), NET_EINVAL);
}

/* ---- over loopback ---- */

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

typedef bool (*cond_fn)(void *arg);

static bool run_until(uv_loop_t *loop, cond_fn cond, void *arg, uint64_t timeout_ms)
{
	uint64_t end = uv_hrtime() + timeout_ms * 1000000u;
	while (!cond(arg)) {
		if (uv_hrtime() > end)
			return false;
		if (uv_run(loop, UV_RUN_NOWAIT) == 0)
			sleep_ms(1);
	}
	return true;
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

struct outcome {
	bool done;
	int status;
	struct net_join_answer a;
	char reason[NET_REFUSE_MAX + 1];
};

static void on_done(void *data, int status, const struct net_join_answer *a, const char *reason)
{
	struct outcome *o = data;
	assert_false(o->done);
	o->done = true;
	o->status = status;
	if (a != NULL)
		o->a = *a;
	snprintf(o->reason, sizeof o->reason, "%s", reason ? reason : "");
}

static bool is_done(void *arg)
{
	return ((struct outcome *)arg)->done;
}

static int joins_seen;

/* Knows one new member, at http://127.0.0.1:9999. */
static int on_join(struct net_transport *t, const char *peer_url, struct net_join_answer *out,
		   char *reason, size_t cap)
{
	(void)t;
	joins_seen++;
	if (strcmp(peer_url, "http://127.0.0.1:9999") != 0) {
		snprintf(reason, cap, "no member with peer URL %s", peer_url);
		return -1;
	}
	out->cluster_id = CLUSTER;
	out->member_id = NEW_ID;
	out->n = 2;
	out->members[0].id = 1;
	snprintf(out->members[0].url, sizeof out->members[0].url, "http://127.0.0.1:1");
	out->members[1].id = NEW_ID;
	out->members[1].learner = true;
	snprintf(out->members[1].url, sizeof out->members[1].url, "%s", peer_url);
	return 0;
}

static void on_recv(struct net_transport *t, uint64_t from, enum net_channel ch, const uint8_t *buf,
		    size_t len)
{
	int *got = net_transport_data(t);
	(void)from;
	(void)ch;
	(void)buf;
	(void)len;
	(*got)++;
}

static void quiet(void *data, enum net_log_level level, const char *msg)
{
	(void)data;
	(void)level;
	(void)msg;
}

static struct net_transport *open_t(uv_loop_t *loop, uint64_t self, net_join_cb join, int *got)
{
	struct net_transport_config c = {
		.cluster_id = CLUSTER,
		.self_id = self,
		.listen_url = "http://127.0.0.1:0",
		.on_recv = on_recv,
		.log = quiet,
		.data = got,
		.on_join = join,
	};
	struct net_transport *t = NULL;
	assert_int_equal(net_transport_open(loop, &c, &t), 0);
	return t;
}

static bool got_one(void *arg)
{
	return *(int *)arg > 0;
}

static void test_join_answered_and_refused(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	int got = 0;
	struct net_transport *t = open_t(&loop, 1, on_join, &got);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)net_transport_port(t));
	joins_seen = 0;

	struct outcome o = { 0 };
	assert_int_equal(net_join_ask(&loop, url, "http://127.0.0.1:9999", NULL, 3000, on_done, &o),
			 0);
	assert_true(run_until(&loop, is_done, &o, 5000));
	assert_int_equal(o.status, 0);
	assert_int_equal(o.a.cluster_id, CLUSTER);
	assert_int_equal(o.a.member_id, NEW_ID);
	assert_int_equal(o.a.n, 2);
	assert_true(o.a.members[1].learner);
	assert_string_equal(o.a.members[0].url, "http://127.0.0.1:1");

	struct outcome r = { 0 };
	assert_int_equal(net_join_ask(&loop, url, "http://127.0.0.1:8888", NULL, 3000, on_done, &r),
			 0);
	assert_true(run_until(&loop, is_done, &r, 5000));
	assert_int_equal(r.status, NET_EREFUSED);
	assert_string_equal(r.reason, "no member with peer URL http://127.0.0.1:8888");
	assert_int_equal(joins_seen, 2);
	struct net_transport_stats st;
	net_transport_stats(t, &st);
	assert_int_equal(st.refused, 1);
	assert_int_equal(st.accepted, 0); /* a join is no hello */

	/* ordinary hellos still work and still are checked: member 2 is known, sends */
	int got2 = 0;
	struct net_transport *t2 = open_t(&loop, 2, NULL, &got2);
	assert_int_equal(net_transport_add_peer(t, 2, "http://127.0.0.1:1"), 0);
	assert_int_equal(net_transport_add_peer(t2, 1, url), 0);
	assert_int_equal(net_transport_send(t2, 1, (const uint8_t *)"x", 1), 0);
	assert_true(run_until(&loop, got_one, &got, 5000));

	net_transport_close(t, NULL);
	net_transport_close(t2, NULL);
	drain_and_close(&loop);
}

static void test_join_without_callback_and_to_nowhere(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	int got = 0;
	struct net_transport *t = open_t(&loop, 1, NULL, &got);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)net_transport_port(t));
	struct outcome o = { 0 };
	assert_int_equal(net_join_ask(&loop, url, "http://127.0.0.1:9999", NULL, 3000, on_done, &o),
			 0);
	assert_true(run_until(&loop, is_done, &o, 5000));
	assert_int_equal(o.status, NET_EREFUSED);
	assert_string_equal(o.reason, "this member takes no join requests");
	net_transport_close(t, NULL);
	drain_and_close(&loop);

	/* nobody listens there any more */
	assert_int_equal(uv_loop_init(&loop), 0);
	struct outcome n = { 0 };
	assert_int_equal(net_join_ask(&loop, url, "http://127.0.0.1:9999", NULL, 3000, on_done, &n),
			 0);
	assert_true(run_until(&loop, is_done, &n, 5000));
	assert_true(n.status < 0);
	assert_string_equal(n.reason, ""); /* a refused connection, not a refused join */
	drain_and_close(&loop);
	assert_int_equal(net_join_ask(&loop, "nonsense", "http://x:1", NULL, 0, on_done, &n),
			 NET_EADDR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_join_codec),
		cmocka_unit_test(test_answer_codec),
		cmocka_unit_test(test_join_answered_and_refused),
		cmocka_unit_test(test_join_without_callback_and_to_nowhere),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
