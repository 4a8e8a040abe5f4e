/* test_peer_ask.c: ASK and ANSWER frames (net/frame.h, "asking a member") over loopback: an ASK
 * reaches the member asked through on_ask, its ANSWER comes back through on_answer, in order with
 * the MSG frames around them, which still reach on_recv; a transport without the callbacks drops
 * the frames and keeps the connection; the frame codec takes the new types. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "frame.h"
#include "peer.h"

#define CLUSTER 0x5eedu

struct side {
	int recv, asks, answers;
	char last[32]; /* "<kind>:<payload>" of the last frame seen */
	char order[256];
};

static void note(struct side *s, char kind, const uint8_t *buf, size_t len)
{
	snprintf(s->last, sizeof s->last, "%c:%.*s", kind, (int)len, (const char *)buf);
	size_t n = strlen(s->order);
	if (n + 2 < sizeof s->order) {
		s->order[n] = kind;
		s->order[n + 1] = '\0';
	}
}

static void on_recv(struct net_transport *t, uint64_t from, enum net_channel ch, const uint8_t *buf,
		    size_t len)
{
	struct side *s = net_transport_data(t);
	(void)from;
	assert_int_equal(ch, NET_CHANNEL_MSG);
	s->recv++;
	note(s, 'M', buf, len);
}

/* The member asked answers "re:<question>" to whoever asked. */
static void on_ask(struct net_transport *t, uint64_t from, enum net_channel ch, const uint8_t *buf,
		   size_t len)
{
	struct side *s = net_transport_data(t);
	char out[64];
	(void)ch;
	s->asks++;
	note(s, 'Q', buf, len);
	int n = snprintf(out, sizeof out, "re:%.*s", (int)len, (const char *)buf);
	assert_int_equal(net_transport_answer(t, from, (const uint8_t *)out, (size_t)n), 0);
}

static void on_answer(struct net_transport *t, uint64_t from, enum net_channel ch,
		      const uint8_t *buf, size_t len)
{
	struct side *s = net_transport_data(t);
	(void)from;
	(void)ch;
	s->answers++;
	note(s, 'A', buf, len);
}

static void quiet(void *data, enum net_log_level level, const char *msg)
{
	(void)data;
	(void)level;
	(void)msg;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static bool run_until(uv_loop_t *loop, const int *counter, int want, uint64_t timeout_ms)
{
	uint64_t end = uv_hrtime() + timeout_ms * 1000000u;
	while (*counter < want) {
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

static struct net_transport *open_t(uv_loop_t *loop, uint64_t self, struct side *s, bool asking)
{
	struct net_transport_config c = {
		.cluster_id = CLUSTER,
		.self_id = self,
		.listen_url = "http://127.0.0.1:0",
		.on_recv = on_recv,
		.log = quiet,
		.data = s,
		.on_ask = asking ? on_ask : NULL,
		.on_answer = asking ? on_answer : NULL,
	};
	struct net_transport *t = NULL;
	assert_int_equal(net_transport_open(loop, &c, &t), 0);
	return t;
}

static void pair(struct net_transport *a, struct net_transport *b)
{
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)net_transport_port(b));
	assert_int_equal(net_transport_add_peer(a, 2, url), 0);
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)net_transport_port(a));
	assert_int_equal(net_transport_add_peer(b, 1, url), 0);
}

static void test_ask_and_answer(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct side s1 = { 0 }, s2 = { 0 };
	struct net_transport *t1 = open_t(&loop, 1, &s1, true);
	struct net_transport *t2 = open_t(&loop, 2, &s2, true);
	pair(t1, t2);

	/* member 1 sends a message, asks, sends again: member 2 sees them in that order */
	assert_int_equal(net_transport_send(t1, 2, (const uint8_t *)"m1", 2), 0);
	assert_int_equal(net_transport_ask(t1, 2, (const uint8_t *)"q1", 2), 0);
	assert_int_equal(net_transport_send(t1, 2, (const uint8_t *)"m2", 2), 0);
	assert_true(run_until(&loop, &s1.answers, 1, 5000));
	assert_true(run_until(&loop, &s2.recv, 2, 5000));
	assert_string_equal(s2.order, "MQM");
	assert_int_equal(s2.asks, 1);
	assert_string_equal(s1.last, "A:re:q1");
	assert_int_equal(s1.recv, 0);

	/* unknown member, oversized */
	assert_int_equal(net_transport_ask(t1, 9, (const uint8_t *)"q", 1), NET_ENOTFOUND);
	assert_int_equal(net_transport_answer(t1, 9, (const uint8_t *)"a", 1), NET_ENOTFOUND);

	net_transport_close(t1, NULL);
	net_transport_close(t2, NULL);
	drain_and_close(&loop);
}

static void test_without_callbacks(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct side s1 = { 0 }, s2 = { 0 };
	struct net_transport *t1 = open_t(&loop, 1, &s1, true);
	struct net_transport *t2 = open_t(&loop, 2, &s2, false);
	pair(t1, t2);
	/* member 2 takes no questions: the ASK is dropped, the connection stays */
	assert_int_equal(net_transport_ask(t1, 2, (const uint8_t *)"q1", 2), 0);
	assert_int_equal(net_transport_send(t1, 2, (const uint8_t *)"m1", 2), 0);
	assert_true(run_until(&loop, &s2.recv, 1, 5000));
	assert_string_equal(s2.order, "M");
	struct net_peer_stats ps;
	assert_int_equal(net_transport_peer_stats(t1, 2, &ps), 0);
	assert_int_equal(ps.connects[0], 1);
	assert_int_equal(ps.failures[0], 0);
	assert_int_equal(s1.answers, 0);
	net_transport_close(t1, NULL);
	net_transport_close(t2, NULL);
	drain_and_close(&loop);
}

static void test_codec_types(void **state)
{
	(void)state;
	uint8_t buf[64];
	size_t n = 0, used = 0;
	struct net_frame f;
	struct net_frame_decoder d;
	for (uint8_t type = NET_FRAME_ASK; type <= NET_FRAME_ANSWER; type++) {
		assert_int_equal(
			net_frame_encode(type, (const uint8_t *)"abc", 3, buf, sizeof buf, &n), 0);
		net_frame_decoder_init(&d, 0);
		assert_int_equal(net_frame_decode(&d, buf, n, &used, &f), 1);
		assert_int_equal(f.type, type);
		assert_int_equal(f.len, 3);
		assert_memory_equal(f.payload, "abc", 3);
		net_frame_decoder_free(&d);
	}
	assert_int_equal(net_frame_encode(NET_FRAME_TYPE_MAX + 1, NULL, 0, buf, sizeof buf, &n),
			 NET_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ask_and_answer),
		cmocka_unit_test(test_without_callbacks),
		cmocka_unit_test(test_codec_types),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
