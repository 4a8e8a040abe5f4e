/* test_srv_gossip.c: the server's gossip runtime (server/srv_gossip.h): the tags as metadata,
 * the address conversions, the start-up errors an operator sees (tags too long, a bad key file,
 * a taken port), and two members on a real loop over 127.0.0.1: a join, a leave seen as
 * "left", encryption with a key reloaded in place and a bad reload that keeps the keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "gossip_seal.h"
#include "log.h"
#include "srv_gossip.h"
#include "tmpdir.h"

/* ---- metadata ---- */

static void test_meta_encode(void **state)
{
	(void)state;
	uint8_t buf[GOSSIP_MAX_META];
	char err[256];
	struct srv_tag tags[] = { { "role", "worker" }, { "zone", "eu-1" }, { "empty", "" } };
	long n = srv_gossip_meta_encode(tags, 3, buf, sizeof buf, err, sizeof err);
	const char want[] = "role=worker\nzone=eu-1\nempty=\n";
	assert_int_equal(n, (long)strlen(want));
	assert_memory_equal(buf, want, strlen(want));
	assert_int_equal(srv_gossip_meta_encode(NULL, 0, buf, sizeof buf, err, sizeof err), 0);

	/* What does not fit the core's bound is refused with a message naming the tag. */
	char big[300];
	memset(big, 'v', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	struct srv_tag many[] = { { "a", big }, { "b", big } };
	assert_int_equal(srv_gossip_meta_encode(many, 1, buf, sizeof buf, err, sizeof err), 302);
	assert_int_equal(srv_gossip_meta_encode(many, 2, buf, sizeof buf, err, sizeof err), -1);
	assert_non_null(strstr(err, "more than 512 bytes"));
	assert_non_null(strstr(err, "\"b\""));
	/* Exactly the bound fits: 512 = "k=" + 509 bytes + "\n". */
	char exact[510];
	memset(exact, 'x', 509);
	exact[509] = '\0';
	struct srv_tag one[] = { { "k", exact } };
	assert_int_equal(srv_gossip_meta_encode(one, 1, buf, sizeof buf, err, sizeof err), 512);

	struct srv_tag bad_key[] = { { "a=b", "c" } };
	assert_int_equal(srv_gossip_meta_encode(bad_key, 1, buf, sizeof buf, err, sizeof err), -1);
	struct srv_tag empty_key[] = { { "", "c" } };
	assert_int_equal(srv_gossip_meta_encode(empty_key, 1, buf, sizeof buf, err, sizeof err),
			 -1);
	struct srv_tag nl_value[] = { { "a", "line\nbreak" } };
	assert_int_equal(srv_gossip_meta_encode(nl_value, 1, buf, sizeof buf, err, sizeof err), -1);
	assert_string_equal(err, "the value of gossip tag \"a\" holds a newline");
}

static void test_meta_next(void **state)
{
	(void)state;
	/* Encoded, then walked back: the same tags in the same order. */
	uint8_t buf[GOSSIP_MAX_META];
	struct srv_tag tags[] = { { "role", "worker" }, { "x", "a=b" }, { "e", "" } };
	long n = srv_gossip_meta_encode(tags, 3, buf, sizeof buf, NULL, 0);
	assert_true(n > 0);
	size_t off = 0, kl, vl;
	const char *k, *v;
	for (size_t i = 0; i < 3; i++) {
		assert_true(srv_gossip_meta_next(buf, (size_t)n, &off, &k, &kl, &v, &vl));
		assert_int_equal(kl, strlen(tags[i].key));
		assert_memory_equal(k, tags[i].key, kl);
		assert_int_equal(vl, strlen(tags[i].value));
		assert_memory_equal(v, tags[i].value, vl);
	}
	assert_false(srv_gossip_meta_next(buf, (size_t)n, &off, &k, &kl, &v, &vl));

	/* Metadata from the network: lines without '=' or a key, and an unterminated tail, are
	 * skipped; nothing is read past len. */
	const char raw[] = "junk\n=nokey\nok=1\ntail=unterminated";
	off = 0;
	assert_true(
		srv_gossip_meta_next((const uint8_t *)raw, strlen(raw), &off, &k, &kl, &v, &vl));
	assert_int_equal(kl, 2);
	assert_memory_equal(k, "ok", 2);
	assert_int_equal(vl, 1);
	assert_false(
		srv_gossip_meta_next((const uint8_t *)raw, strlen(raw), &off, &k, &kl, &v, &vl));
	off = 0;
	assert_false(srv_gossip_meta_next(NULL, 0, &off, &k, &kl, &v, &vl));
}

/* ---- addresses ---- */

static void test_addr(void **state)
{
	(void)state;
	struct sockaddr_storage ss;
	struct gossip_addr a, b;
	char s[SRV_GOSSIP_ADDR_STRLEN];

	struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(7946) };
	inet_pton(AF_INET, "10.1.2.3", &in.sin_addr);
	assert_int_equal(srv_gossip_addr_from_sockaddr((struct sockaddr *)&in, &a), 0);
	assert_int_equal(a.family, 4);
	assert_int_equal(a.port, 7946);
	assert_string_equal(srv_gossip_addr_format(&a, s, sizeof s), "10.1.2.3:7946");
	assert_int_equal(srv_gossip_addr_to_sockaddr(&a, &ss), sizeof(struct sockaddr_in));
	assert_memory_equal(&ss, &in, sizeof in);

	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(65535) };
	inet_pton(AF_INET6, "fd00::1:2", &in6.sin6_addr);
	assert_int_equal(srv_gossip_addr_from_sockaddr((struct sockaddr *)&in6, &a), 0);
	assert_int_equal(a.family, 6);
	assert_int_equal(a.port, 65535);
	assert_string_equal(srv_gossip_addr_format(&a, s, sizeof s), "[fd00::1:2]:65535");
	assert_int_equal(srv_gossip_addr_to_sockaddr(&a, &ss), sizeof(struct sockaddr_in6));
	assert_int_equal(srv_gossip_addr_from_sockaddr((struct sockaddr *)&ss, &b), 0);
	assert_true(gossip_addr_equal(&a, &b));

	/* From a dual-stack socket, an IPv4 peer arrives mapped: it is the IPv4 address. */
	inet_pton(AF_INET6, "::ffff:192.168.0.9", &in6.sin6_addr);
	in6.sin6_port = htons(1);
	assert_int_equal(srv_gossip_addr_from_sockaddr((struct sockaddr *)&in6, &a), 0);
	assert_int_equal(a.family, 4);
	assert_string_equal(srv_gossip_addr_format(&a, s, sizeof s), "192.168.0.9:1");

	struct sockaddr un = { .sa_family = AF_UNIX };
	assert_int_equal(srv_gossip_addr_from_sockaddr(&un, &a), -1);
	struct gossip_addr bogus = { .family = 9 };
	assert_string_equal(srv_gossip_addr_format(&bogus, s, sizeof s), "?");
	/* A short buffer is cut, never overrun. */
	char tiny[6];
	struct gossip_addr v4 = { .family = 4, .ip = { 127, 0, 0, 1 }, .port = 7946 };
	assert_string_equal(srv_gossip_addr_format(&v4, tiny, sizeof tiny), "127.0");
}

/* ---- on a loop ---- */

static char g_dir[256];
static int g_log_fd = -1;

static int group_setup(void **state)
{
	(void)state;
	h_tmpdir_make(g_dir, sizeof g_dir, "cairn-srv-gossip");
	/* Log lines go to a file: the test reads them and the run stays quiet. */
	char path[400];
	snprintf(path, sizeof path, "%s/log", g_dir);
	g_log_fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND | O_CLOEXEC, 0600);
	assert_true(g_log_fd >= 0);
	srv_log_set_fd(g_log_fd);
	srv_log_set_level(SRV_LOG_DEBUG);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	srv_log_set_fd(2);
	srv_log_set_level(SRV_LOG_INFO);
	close(g_log_fd);
	h_tmpdir_remove(g_dir);
	return 0;
}

/* Whether the log so far holds text. */
static bool log_has(const char *text)
{
	char path[400];
	snprintf(path, sizeof path, "%s/log", g_dir);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, text) != NULL;
}

static const char *key_file(const char *name, const char *text)
{
	static char path[400];
	snprintf(path, sizeof path, "%s/%s", g_dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	return path;
}

/* What a member saw, from its events. */
struct seen {
	char name[GOSSIP_MAX_NAME + 1];
	uint32_t state;
	char meta[GOSSIP_MAX_META + 1];
	int events;
};

static void on_event(void *data, const struct gossip_event *ev)
{
	struct seen *s = data;
	if (ev->member.self) {
		return;
	}
	s->events++;
	snprintf(s->name, sizeof s->name, "%s", ev->member.name);
	s->state = ev->type == GOSSIP_EV_REMOVE ? 0 : ev->member.state;
	size_t n = ev->member.meta_len < GOSSIP_MAX_META ? ev->member.meta_len : GOSSIP_MAX_META;
	if (n > 0) {
		memcpy(s->meta, ev->member.meta, n);
	}
	s->meta[n] = '\0';
}

struct waitfor {
	bool fired;
};

static void on_deadline(uv_timer_t *t)
{
	struct waitfor *w = t->data;
	w->fired = true;
}

/* Runs the loop until cond(arg) or ms pass; returns cond's last value. */
static bool run_until(uv_loop_t *loop, bool (*cond)(void *), void *arg, uint64_t ms)
{
	uv_timer_t t;
	struct waitfor w = { false };
	uv_timer_init(loop, &t);
	t.data = &w;
	uv_timer_start(&t, on_deadline, ms, 0);
	while (!cond(arg) && !w.fired) {
		uv_run(loop, UV_RUN_ONCE);
	}
	bool ok = cond(arg);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return ok;
}

static bool seen_alive(void *arg)
{
	return ((struct seen *)arg)->state == GOSSIP_ALIVE;
}

static bool seen_left(void *arg)
{
	return ((struct seen *)arg)->state == GOSSIP_LEFT;
}

static bool flag_set(void *arg)
{
	return *(bool *)arg;
}

static void set_flag(void *data)
{
	*(bool *)data = true;
}

static void opts_init(struct srv_gossip_options *o, const char *name, struct srv_hostport *listen,
		      struct seen *seen)
{
	memset(o, 0, sizeof *o);
	o->name = name;
	o->listen = listen;
	o->timing = (struct srv_gossip_timing){
		.probe_interval_ms = 200,
		.probe_timeout_ms = 100,
		.gossip_interval_ms = 50,
		.suspicion_mult = 4,
		.pushpull_interval_ms = 5000,
		.reap_dead_ms = 60000,
		.reap_left_ms = 60000,
	};
	o->on_event = on_event;
	o->data = seen;
}

static void stop_and_drain(uv_loop_t *loop, struct srv_gossip *sg)
{
	bool done = false;
	srv_gossip_stop(sg, set_flag, &done);
	assert_true(run_until(loop, flag_set, &done, 5000));
}

static void test_errors_at_start(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct srv_hostport listen = { "127.0.0.1:0", "127.0.0.1", 0 };
	struct seen seen = { 0 };
	struct srv_gossip_options o;
	struct srv_gossip *sg;
	char err[512];

	opts_init(&o, "a", &listen, &seen);
	char big[300];
	memset(big, 'v', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	struct srv_tag tags[] = { { "a", big }, { "b", big } };
	o.tags = tags;
	o.tags_n = 2;
	assert_int_equal(srv_gossip_start(&loop, &o, &sg, err, sizeof err), -1);
	assert_null(sg);
	assert_non_null(strstr(err, "gossip tags take more than 512 bytes"));

	opts_init(&o, "a", &listen, &seen);
	o.key_file = key_file("bad.key", "# not a key\nnot-base64!\n");
	assert_int_equal(srv_gossip_start(&loop, &o, &sg, err, sizeof err), -1);
	assert_non_null(strstr(err, "gossip key file "));
	assert_non_null(strstr(err, "bad.key:2: not valid base64"));
	o.key_file = key_file("empty.key", "# nothing yet\n\n");
	assert_int_equal(srv_gossip_start(&loop, &o, &sg, err, sizeof err), -1);
	assert_non_null(strstr(err, "no key in the file"));
	char missing[400];
	snprintf(missing, sizeof missing, "%s/missing.key", g_dir);
	o.key_file = missing;
	assert_int_equal(srv_gossip_start(&loop, &o, &sg, err, sizeof err), -1);
	assert_non_null(strstr(err, "No such file or directory"));

	/* A taken port: a clear message naming the address. */
	opts_init(&o, "a", &listen, &seen);
	struct srv_gossip *first;
	assert_int_equal(srv_gossip_start(&loop, &o, &first, err, sizeof err), 0);
	char text[64];
	uint16_t port = srv_gossip_self_addr(first)->port;
	snprintf(text, sizeof text, "127.0.0.1:%u", (unsigned)port);
	struct srv_hostport taken = { text, "127.0.0.1", port };
	opts_init(&o, "b", &taken, &seen);
	assert_int_equal(srv_gossip_start(&loop, &o, &sg, err, sizeof err), -1);
	char want[256];
	snprintf(want, sizeof want,
		 "cannot listen for gossip on %s (udp and tcp): address already in use", text);
	assert_string_equal(err, want);

	/* Not a numeric address to bind. */
	struct srv_hostport name = { "example.com:1", "example.com", 1 };
	opts_init(&o, "c", &name, &seen);
	assert_int_equal(srv_gossip_start(&loop, &o, &sg, err, sizeof err), -1);
	assert_string_equal(err,
			    "--gossip-listen example.com:1: expected a numeric IP or localhost");

	stop_and_drain(&loop, first);
	uv_run(&loop, UV_RUN_NOWAIT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* Two members: b joins through a (named "localhost", resolved), sees a's tags, leaves; a sees
 * it left. Encrypted when keys is given. */
static void pair(const char *keys)
{
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	char err[512] = "";
	struct srv_hostport listen = { "127.0.0.1:0", "127.0.0.1", 0 };
	struct seen sa = { 0 }, sb = { 0 };
	struct srv_gossip_options oa, ob;
	struct srv_gossip *a, *b;
	struct srv_tag tags[] = { { "role", "db" }, { "rack", "r1" } };
	const char *kf = keys != NULL ? key_file("pair.key", keys) : NULL;

	opts_init(&oa, "node-a", &listen, &sa);
	oa.tags = tags;
	oa.tags_n = 2;
	oa.key_file = kf;
	oa.label = "blue";
	assert_int_equal(srv_gossip_start(&loop, &oa, &a, err, sizeof err), 0);
	assert_true(srv_gossip_settled(a)); /* nobody to join: its view is whole */

	char join_text[64];
	uint16_t port = srv_gossip_self_addr(a)->port;
	snprintf(join_text, sizeof join_text, "localhost:%u", (unsigned)port);
	struct srv_hostport join[] = { { join_text, (char *)"localhost", port } };
	opts_init(&ob, "node-b", &listen, &sb);
	ob.join = join;
	ob.join_n = 1;
	ob.key_file = kf;
	ob.label = "blue";
	assert_int_equal(srv_gossip_start(&loop, &ob, &b, err, sizeof err), 0);
	assert_false(srv_gossip_settled(b));

	assert_true(run_until(&loop, seen_alive, &sb, 5000));
	assert_true(run_until(&loop, seen_alive, &sa, 5000));
	assert_true(srv_gossip_settled(b));
	assert_string_equal(sb.name, "node-a");
	assert_string_equal(sb.meta, "role=db\nrack=r1\n");
	assert_string_equal(sa.name, "node-b");
	assert_int_equal(gossip_live_count(srv_gossip_core(a)), 2);
	assert_true(log_has("event=gossip-joined"));

	if (keys != NULL) {
		/* A bad file at reload: logged, the keys in use kept, gossip goes on. */
		key_file("pair.key", "garbage\n");
		assert_int_equal(srv_gossip_reload_keys(a), -1);
		assert_true(log_has("event=gossip-keys-reload-failed"));
		key_file("pair.key", keys);
		assert_int_equal(srv_gossip_reload_keys(a), 0);
		assert_true(log_has("event=gossip-keys-reloaded"));
	} else {
		assert_int_equal(srv_gossip_reload_keys(a), -1); /* no key file */
	}

	bool left = false;
	srv_gossip_leave(b, set_flag, &left);
	assert_false(left); /* never inside the call */
	assert_true(run_until(&loop, flag_set, &left, 5000));
	assert_true(run_until(&loop, seen_left, &sa, 5000));
	assert_string_equal(sa.name, "node-b");
	stop_and_drain(&loop, b);
	stop_and_drain(&loop, a);
	uv_run(&loop, UV_RUN_NOWAIT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_pair_plain(void **state)
{
	(void)state;
	pair(NULL);
}

static void test_pair_encrypted(void **state)
{
	(void)state;
	char k1[45], k2[45], text[200];
	assert_int_equal(net_key_generate(k1), 0);
	assert_int_equal(net_key_generate(k2), 0);
	snprintf(text, sizeof text, "# primary first\n%s\n%s\n", k1, k2);
	pair(text);
}

/* A join that reaches nobody is retried, and stopping with a join pending frees everything. */
static void test_join_retry_then_stop(void **state)
{
	(void)state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	char err[512] = "";
	struct srv_hostport listen = { "127.0.0.1:0", "127.0.0.1", 0 };
	/* Ports 1 and 2 on loopback, the second by name (resolved from /etc/hosts, no DNS): the
	 * push-pulls are refused at once. */
	struct srv_hostport join[] = { { "127.0.0.1:1", "127.0.0.1", 1 },
				       { "localhost:2", "localhost", 2 } };
	struct seen s = { 0 };
	struct srv_gossip_options o;
	struct srv_gossip *sg;
	opts_init(&o, "lonely", &listen, &s);
	o.join = join;
	o.join_n = 2;
	assert_int_equal(srv_gossip_start(&loop, &o, &sg, err, sizeof err), 0);
	bool never = false;
	assert_false(run_until(&loop, flag_set, &never, 2500));
	assert_false(srv_gossip_settled(sg));
	assert_true(log_has("event=gossip-join-failed addr=127.0.0.1:1"));
	assert_true(log_has("event=gossip-join-failed addr=127.0.0.1:2")); /* looked up */
	assert_true(log_has("event=gossip-join-retry attempt=2"));
	stop_and_drain(&loop, sg);
	uv_run(&loop, UV_RUN_NOWAIT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_meta_encode),
		cmocka_unit_test(test_meta_next),
		cmocka_unit_test(test_addr),
		cmocka_unit_test(test_errors_at_start),
		cmocka_unit_test(test_pair_plain),
		cmocka_unit_test(test_pair_encrypted),
		cmocka_unit_test(test_join_retry_then_stop),
	};
	return cmocka_run_group_tests_name("srv_gossip", tests, group_setup, group_teardown);
}
