/* test_lincheck.c: cairn-bench's linearizability checker (bench/lincheck.h).
 * Its teeth first: histories with a stale read, a lost write, a non-atomic
 * transaction, a compare-and-swap that succeeded against another value, two
 * CAS that both won from the same value, and reads that go back in time past
 * writes of unknown outcome are rejected, with a report that names the ops
 * at fault and fewer ops than the input. Then what must pass: concurrent ops
 * in either order, unknown-outcome writes seen or not. Then histories drawn
 * from a simulated linearizable store (must pass) with one read corrupted
 * (must fail), the bounds (time budget, memo bound), and a history the size
 * of a benchmark run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lincheck.h"

#define U LIN_RETURN_UNKNOWN

/* --- Building histories ------------------------------------------------------------------ */

static struct lin_history *new_history(void)
{
	struct lin_history *h = NULL;
	assert_int_equal(lin_history_new(&h), 0);
	assert_non_null(h);
	return h;
}

static void add(struct lin_history *h, uint32_t client, uint64_t call, uint64_t ret,
                const struct lin_cmp *cmps, uint32_t nc, const struct lin_step *then, uint32_t nt,
                const struct lin_step *els, uint32_t ne, bool ok)
{
	struct lin_op op = {
		.client = client,
		.call = call,
		.ret = ret,
		.cmps = cmps,
		.n_cmps = nc,
		.then = then,
		.n_then = nt,
		.els = els,
		.n_els = ne,
		.succeeded = ok,
	};
	assert_int_equal(lin_history_add(h, &op), 0);
}

static void get(struct lin_history *h, uint32_t cl, uint64_t call, uint64_t ret, uint32_t k,
                uint64_t v)
{
	struct lin_step s = {LIN_GET, k, v};
	add(h, cl, call, ret, NULL, 0, &s, 1, NULL, 0, true);
}

static void put(struct lin_history *h, uint32_t cl, uint64_t call, uint64_t ret, uint32_t k,
                uint64_t v)
{
	struct lin_step s = {LIN_PUT, k, v};
	add(h, cl, call, ret, NULL, 0, &s, 1, NULL, 0, true);
}

static void del(struct lin_history *h, uint32_t cl, uint64_t call, uint64_t ret, uint32_t k)
{
	struct lin_step s = {LIN_DELETE, k, 0};
	add(h, cl, call, ret, NULL, 0, &s, 1, NULL, 0, true);
}

/* CAS k: old -> new; on failure the else branch reads k (cur) when with_get. */
static void cas(struct lin_history *h, uint32_t cl, uint64_t call, uint64_t ret, uint32_t k,
                uint64_t old, uint64_t nw, bool ok, bool with_get, uint64_t cur)
{
	struct lin_cmp c = {k, old};
	struct lin_step t = {LIN_PUT, k, nw};
	struct lin_step e = {LIN_GET, k, cur};
	add(h, cl, call, ret, &c, 1, &t, 1, &e, with_get ? 1 : 0, ok);
}

/* A transaction without comparisons: two steps. */
static void txn2(struct lin_history *h, uint32_t cl, uint64_t call, uint64_t ret,
                 struct lin_step a, struct lin_step b)
{
	struct lin_step s[2] = {a, b};
	add(h, cl, call, ret, NULL, 0, s, 2, NULL, 0, true);
}

static struct lin_step G(uint32_t k, uint64_t v)
{
	return (struct lin_step){LIN_GET, k, v};
}

static struct lin_step P(uint32_t k, uint64_t v)
{
	return (struct lin_step){LIN_PUT, k, v};
}

static int check_opts(struct lin_history *h, const struct lin_check_opts *o,
                      struct lin_result *r)
{
	assert_int_equal(lin_check(h, o, r), 0);
	if (r->verdict == LIN_OK)
		assert_null(r->report);
	else
		assert_non_null(r->report);
	return r->verdict;
}

static int check(struct lin_history *h, struct lin_result *r)
{
	return check_opts(h, NULL, r);
}

static void expect(struct lin_history *h, int verdict)
{
	struct lin_result r;
	int v = check(h, &r);
	if (v != verdict)
		fprintf(stderr, "expected %s, got %s\n%s", lin_verdict_name(verdict),
		        lin_verdict_name(v), r.report ? r.report : "");
	assert_int_equal(v, verdict);
	lin_result_free(&r);
	lin_history_free(h);
}

static size_t count_lines(const char *s, const char *prefix)
{
	size_t n = 0;
	for (const char *p = s; p && *p;) {
		if (strncmp(p, prefix, strlen(prefix)) == 0)
			n++;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return n;
}

/* Noise on the key of a violation: ops that do not matter to it, so the
 * report has something to leave out. Values 1000+ are not otherwise used. */
static void noise(struct lin_history *h, uint32_t k, uint64_t from, int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t t = from + (uint64_t)i * 100;
		put(h, 9, t, t + 10, k, 1000 + (uint64_t)i);
		get(h, 8, t + 20, t + 30, k, 1000 + (uint64_t)i);
	}
}

/* --- Rejected ---------------------------------------------------------------------------- */

/* A read that starts after a put returned sees the value before it. */
static void test_stale_read(void **state)
{
	(void)state;
	struct lin_history *h = new_history();
	noise(h, 1, 0, 5);
	put(h, 1, 1000, 1010, 1, 1);
	put(h, 2, 1020, 1030, 1, 2);
	get(h, 3, 1040, 1050, 1, 1); /* stale: 2 was acknowledged before the call */
	get(h, 3, 1060, 1070, 1, 2);
	/* Other keys, fine. */
	put(h, 4, 0, 5000, 2, 7);
	get(h, 5, 6000, 6001, 2, 7);
	struct lin_result r;
	assert_int_equal(check(h, &r), LIN_VIOLATION);
	assert_int_equal(r.n_ops, 16);
	assert_int_equal(r.n_partitions, 2);
	assert_int_equal(r.failing_partition_ops, 14);
	assert_true(r.report_ops < r.failing_partition_ops);
	/* The report: the two writes and the stale read, nothing of the noise. */
	assert_non_null(strstr(r.report, "put k1 = 1\n"));
	assert_non_null(strstr(r.report, "put k1 = 2\n"));
	assert_non_null(strstr(r.report, "client 3    [+0.000040ms, +0.000050ms] get k1 -> 1\n"));
	assert_null(strstr(r.report, "= 100"));
	assert_null(strstr(r.report, "k2"));
	assert_int_equal(count_lines(r.report, "  #"), r.report_ops);
	assert_int_equal(r.report_ops, 3);
	assert_non_null(strstr(r.report, "Longest linearizable prefix: #1..#2"));
	lin_result_free(&r);
	lin_history_free(h);
}

/* An acknowledged put is lost: later reads see the value before it. */
static void test_lost_write(void **state)
{
	(void)state;
	struct lin_history *h = new_history();
	put(h, 1, 0, 10, 5, 1);
	get(h, 2, 5, 15, 5, 1);
	put(h, 3, 20, 30, 5, 2); /* acknowledged, then never seen */
	get(h, 4, 40, 50, 5, 1);
	get(h, 2, 45, 60, 5, 1);
	put(h, 1, 70, 80, 5, 3);
	get(h, 4, 90, 95, 5, 3);
	struct lin_result r;
	assert_int_equal(check(h, &r), LIN_VIOLATION);
	assert_non_null(strstr(r.report, "put k5 = 2\n"));
	assert_non_null(strstr(r.report, "get k5 -> 1\n"));
	assert_null(strstr(r.report, "= 3"));
	assert_true(r.report_ops < 7);
	lin_result_free(&r);
	lin_history_free(h);
}

/* A txn writes x and y together; a concurrent read-txn sees new x, old y. */
static void test_non_atomic_txn(void **state)
{
	(void)state;
	struct lin_history *h = new_history();
	txn2(h, 1, 0, 10, P(1, 1), P(2, 1));
	txn2(h, 1, 20, 40, P(1, 2), P(2, 2));
	txn2(h, 2, 25, 35, G(1, 2), G(2, 1));
	struct lin_result r;
	assert_int_equal(check(h, &r), LIN_VIOLATION);
	assert_int_equal(r.n_partitions, 1);
	assert_non_null(strstr(r.report, "txn [get k1 -> 2, get k2 -> 1]"));
	assert_non_null(strstr(r.report, "txn [put k1 = 2, put k2 = 2]"));
	lin_result_free(&r);
	lin_history_free(h);

	/* Either both new or both old is fine. */
	h = new_history();
	txn2(h, 1, 0, 10, P(1, 1), P(2, 1));
	txn2(h, 1, 20, 40, P(1, 2), P(2, 2));
	txn2(h, 2, 25, 35, G(1, 2), G(2, 2));
	txn2(h, 3, 25, 35, G(1, 1), G(2, 1));
	expect(h, LIN_OK);

	/* Two single-key writes (not a txn) are allowed to be seen half-done. */
	h = new_history();
	put(h, 1, 20, 40, 1, 2);
	put(h, 4, 20, 40, 2, 2);
	txn2(h, 2, 25, 35, G(1, 2), G(2, 0));
	expect(h, LIN_OK);
}

/* A CAS reported success though the value it compared to was not there. */
static void test_cas_wrong_value(void **state)
{
	(void)state;
	struct lin_history *h = new_history();
	put(h, 1, 0, 10, 1, 1);
	cas(h, 2, 20, 30, 1, 5, 6, true, false, 0);
	expect(h, LIN_VIOLATION);

	/* And a failed CAS whose value did match (no concurrent write) is wrong too. */
	h = new_history();
	put(h, 1, 0, 10, 1, 1);
	cas(h, 2, 20, 30, 1, 1, 6, false, true, 1);
	expect(h, LIN_VIOLATION);

	/* A failed CAS reporting the current value is fine. */
	h = new_history();
	put(h, 1, 0, 10, 1, 1);
	cas(h, 2, 20, 30, 1, 5, 6, false, true, 1);
	get(h, 2, 40, 50, 1, 1);
	expect(h, LIN_OK);
}

/* Two CAS from the same old value both succeed. */
static void test_double_cas(void **state)
{
	(void)state;
	struct lin_history *h = new_history();
	put(h, 1, 0, 10, 1, 1);
	cas(h, 2, 20, 30, 1, 1, 2, true, false, 0);
	cas(h, 3, 20, 30, 1, 1, 3, true, false, 0);
	struct lin_result r;
	assert_int_equal(check(h, &r), LIN_VIOLATION);
	assert_non_null(strstr(r.report, "txn if (k1 == 1) then [put k1 = 2]"));
	assert_non_null(strstr(r.report, "txn if (k1 == 1) then [put k1 = 3]"));
	lin_result_free(&r);
	lin_history_free(h);

	/* One wins, the other sees the winner's value: fine, in either order. */
	for (int winner = 2; winner <= 3; winner++) {
		h = new_history();
		put(h, 1, 0, 10, 1, 1);
		cas(h, 2, 20, 30, 1, 1, 2, winner == 2, true, winner == 2 ? 0 : 3);
		cas(h, 3, 20, 30, 1, 1, 3, winner == 3, true, winner == 3 ? 0 : 2);
		expect(h, LIN_OK);
	}
}

/* Reads cannot go back in time, and cannot see the future. */
static void test_unknown_rejected(void **state)
{
	(void)state;
	/* An unknown write is seen, then a later read sees the value before it. */
	struct lin_history *h = new_history();
	put(h, 1, 0, 10, 1, 1);
	put(h, 2, 20, U, 1, 2);
	get(h, 3, 30, 40, 1, 2);
	get(h, 3, 50, 60, 1, 1);
	expect(h, LIN_VIOLATION);

	/* A read sees the value of an unknown write called after the read returned. */
	h = new_history();
	put(h, 1, 0, 10, 1, 1);
	get(h, 3, 20, 30, 1, 2);
	put(h, 2, 40, U, 1, 2);
	get(h, 3, 50, 60, 1, 1);
	expect(h, LIN_VIOLATION);

	/* A value nobody wrote. */
	h = new_history();
	put(h, 1, 0, 10, 1, 1);
	get(h, 3, 20, 30, 1, 42);
	expect(h, LIN_VIOLATION);

	/* A deleted key read back after the delete was acknowledged. */
	h = new_history();
	put(h, 1, 0, 10, 1, 1);
	del(h, 1, 20, 30, 1);
	get(h, 2, 40, 50, 1, 1);
	expect(h, LIN_VIOLATION);
}

/* --- Accepted ---------------------------------------------------------------------------- */

static void test_sequential_and_concurrent(void **state)
{
	(void)state;
	expect(new_history(), LIN_OK); /* empty */

	struct lin_history *h = new_history();
	get(h, 1, 0, 1, 1, 0);
	put(h, 1, 2, 3, 1, 1);
	get(h, 1, 4, 5, 1, 1);
	del(h, 1, 6, 7, 1);
	get(h, 1, 8, 9, 1, 0);
	cas(h, 1, 10, 11, 1, 0, 5, true, false, 0); /* create if absent */
	get(h, 1, 12, 13, 1, 5);
	expect(h, LIN_OK);

	/* A read concurrent with a put may see either value. */
	for (uint64_t seen = 0; seen <= 1; seen++) {
		h = new_history();
		put(h, 1, 0, 10, 1, 1);
		get(h, 2, 1, 5, 1, seen);
		expect(h, LIN_OK);
	}
	/* Two concurrent puts: a later read may see either, but then sticks. */
	for (uint64_t last = 1; last <= 2; last++) {
		h = new_history();
		put(h, 1, 0, 10, 1, 1);
		put(h, 2, 0, 10, 1, 2);
		get(h, 3, 20, 30, 1, last);
		get(h, 4, 40, 50, 1, last);
		expect(h, LIN_OK);
	}
	h = new_history();
	put(h, 1, 0, 10, 1, 1);
	put(h, 2, 0, 10, 1, 2);
	get(h, 3, 20, 30, 1, 1);
	get(h, 4, 40, 50, 1, 2);
	expect(h, LIN_VIOLATION);

	/* Concurrent reads see the write in an order consistent with one point. */
	h = new_history();
	put(h, 1, 0, 100, 1, 1);
	get(h, 2, 10, 20, 1, 1);
	get(h, 3, 30, 40, 1, 0); /* after a read that saw 1: impossible */
	expect(h, LIN_VIOLATION);
	h = new_history();
	put(h, 1, 0, 100, 1, 1);
	get(h, 2, 10, 20, 1, 0);
	get(h, 3, 30, 40, 1, 1);
	expect(h, LIN_OK);

	/* A key-less op is trivially fine; touching equal times is concurrent. */
	h = new_history();
	add(h, 1, 0, 1, NULL, 0, NULL, 0, NULL, 0, true);
	put(h, 1, 10, 20, 1, 1);
	get(h, 2, 0, 10, 1, 1);
	expect(h, LIN_OK);
}

static void test_unknown_accepted(void **state)
{
	(void)state;
	/* An unknown write seen, or never seen, or seen late. */
	for (int variant = 0; variant < 3; variant++) {
		struct lin_history *h = new_history();
		put(h, 1, 0, 10, 1, 1);
		put(h, 2, 20, U, 1, 2);
		get(h, 3, 30, 40, 1, variant == 0 ? 2 : 1);
		get(h, 3, 1000, 1010, 1, variant == 2 ? 2 : variant == 0 ? 2 : 1);
		expect(h, LIN_OK);
	}
	/* Unknown ops' outputs are not checked, and they may be left out. */
	struct lin_history *h = new_history();
	put(h, 1, 0, 10, 1, 1);
	get(h, 2, 5, U, 1, 77);
	cas(h, 3, 20, U, 1, 9, 3, true, false, 0);
	cas(h, 4, 20, U, 1, 1, 4, false, false, 0);
	get(h, 5, 100, 110, 1, 4); /* the second CAS took effect, with its real branch */
	expect(h, LIN_OK);
	/* Every write of a txn explains the reads of it. */
	h = new_history();
	txn2(h, 1, 0, 10, P(1, 1), P(2, 2));
	txn2(h, 2, 20, 30, P(1, 3), P(3, 4));
	txn2(h, 3, 25, 35, P(3, 5), P(2, 6));
	get(h, 4, 40, 50, 2, 6);
	get(h, 5, 40, 50, 3, 4);
	get(h, 6, 60, 70, 1, 3);
	txn2(h, 7, 80, 90, G(2, 6), G(3, 4));
	expect(h, LIN_OK);
	/* An unknown txn is all or nothing. */
	h = new_history();
	txn2(h, 1, 0, U, P(1, 1), P(2, 1));
	txn2(h, 2, 100, 110, G(1, 1), G(2, 0));
	expect(h, LIN_VIOLATION);
}

static void test_invalid_input(void **state)
{
	(void)state;
	struct lin_history *h = new_history();
	struct lin_step s = {LIN_PUT, 1, 0};
	struct lin_op op = {.call = 10, .ret = 20, .then = &s, .n_then = 1, .succeeded = true};
	assert_int_equal(lin_history_add(h, &op), -EINVAL); /* PUT of 0 */
	s.value = 1;
	op.ret = 5;
	assert_int_equal(lin_history_add(h, &op), -EINVAL); /* ret < call */
	op.ret = 20;
	s.kind = 7;
	assert_int_equal(lin_history_add(h, &op), -EINVAL);
	s.kind = LIN_PUT;
	assert_int_equal(lin_history_add(h, &op), 0);
	/* The history holds a copy: changing the caller's arrays does nothing. */
	s.value = 99;
	assert_int_equal(lin_history_len(h), 1);
	get(h, 2, 30, 40, 1, 1);
	expect(h, LIN_OK);
	lin_history_free(NULL);
	struct lin_result r;
	memset(&r, 0, sizeof(r));
	lin_result_free(&r);
}

/* Key names from the caller. */
static const char *name_key(uint32_t key, void *data)
{
	static char buf[32];
	snprintf(buf, sizeof(buf), "%s/%u", (const char *)data, key);
	return buf;
}

static void test_key_names(void **state)
{
	(void)state;
	struct lin_history *h = new_history();
	put(h, 1, 0, 10, 3, 1);
	get(h, 2, 20, 30, 3, 0);
	struct lin_check_opts o = {.key_name = name_key, .data = (void *)"/bench"};
	struct lin_result r;
	assert_int_equal(check_opts(h, &o, &r), LIN_VIOLATION);
	assert_non_null(strstr(r.report, "get /bench/3 -> absent"));
	lin_result_free(&r);
	lin_history_free(h);
}

/* --- Generated histories ------------------------------------------------------------------ */

static uint64_t rng_s;

static uint64_t rnd(void)
{
	uint64_t x = (rng_s += 0x9e3779b97f4a7c15u);
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
	return x ^ (x >> 31);
}

static uint64_t below(uint64_t n)
{
	return rnd() % n;
}

struct gop {
	uint32_t client;
	uint64_t call, lp, ret; /* lp: the instant it takes effect; U: never */
	struct lin_cmp cmps[2];
	struct lin_step then[2], els[2];
	uint32_t nc, nt, ne;
	bool ok;
};

static int gop_by_lp(const void *a, const void *b)
{
	const struct gop *x = *(const struct gop *const *)a, *y = *(const struct gop *const *)b;
	if (x->lp != y->lp)
		return x->lp < y->lp ? -1 : 1;
	return x < y ? -1 : x > y;
}

/* A store that is linearizable by construction: each op takes effect at an
 * instant between its call and its return; outputs are computed by applying
 * the ops in the order of those instants. Unknown ops take effect or not. */
static struct gop *generate(uint64_t seed, uint32_t n_ops, uint32_t clients, uint32_t keys,
                            uint32_t unknown_per_mille, bool txns)
{
	rng_s = seed;
	struct gop *g = calloc(n_ops, sizeof(*g));
	uint64_t *clock = calloc(clients, sizeof(*clock));
	uint64_t *model = calloc(keys, sizeof(*model));
	struct gop **order = calloc(n_ops, sizeof(*order));
	assert_non_null(g);
	assert_non_null(clock);
	assert_non_null(model);
	assert_non_null(order);
	uint64_t next_value = 1;
	uint32_t n_eff = 0;
	for (uint32_t i = 0; i < n_ops; i++) {
		struct gop *o = &g[i];
		uint32_t cl = (uint32_t)below(clients);
		o->client = cl;
		o->call = clock[cl] + below(20);
		o->lp = o->call + below(60);
		o->ret = o->lp + below(60);
		clock[cl] = o->ret + 1;
		uint32_t k = (uint32_t)below(keys), k2 = (uint32_t)below(keys);
		unsigned kind = (unsigned)below(txns ? 10 : 8);
		if (kind < 3) {
			o->then[o->nt++] = (struct lin_step){LIN_GET, k, 0};
		} else if (kind < 6) {
			o->then[o->nt++] = (struct lin_step){LIN_PUT, k, next_value++};
		} else if (kind == 6) {
			o->then[o->nt++] = (struct lin_step){LIN_DELETE, k, 0};
		} else if (kind == 7) {
			/* CAS from what the key held a moment ago (wins often, not always). */
			o->cmps[o->nc++] = (struct lin_cmp){k, model[k]};
			o->then[o->nt++] = (struct lin_step){LIN_PUT, k, next_value++};
			o->els[o->ne++] = (struct lin_step){LIN_GET, k, 0};
		} else if (kind == 8) {
			o->then[o->nt++] = (struct lin_step){LIN_GET, k, 0};
			o->then[o->nt++] = (struct lin_step){LIN_GET, k2, 0};
		} else {
			o->cmps[o->nc++] = (struct lin_cmp){k, model[k]};
			o->then[o->nt++] = (struct lin_step){LIN_PUT, k, next_value++};
			o->then[o->nt++] = (struct lin_step){LIN_PUT, k2, next_value++};
			o->els[o->ne++] = (struct lin_step){LIN_GET, k, 0};
			o->els[o->ne++] = (struct lin_step){LIN_GET, k2, 0};
		}
		if (below(1000) < unknown_per_mille) {
			o->ret = U;
			if (below(2))
				o->lp = U; /* never happened */
			clock[cl] = o->call + 200; /* the client gave up and moved on */
		}
		if (o->lp != U)
			order[n_eff++] = o;
	}
	/* The generator's model[] above is a guess for CAS values; now the truth. */
	memset(model, 0, keys * sizeof(*model));
	qsort(order, n_eff, sizeof(*order), gop_by_lp);
	for (uint32_t i = 0; i < n_eff; i++) {
		struct gop *o = order[i];
		o->ok = true;
		for (uint32_t j = 0; j < o->nc; j++)
			if (model[o->cmps[j].key] != o->cmps[j].value)
				o->ok = false;
		struct lin_step *s = o->ok ? o->then : o->els;
		uint32_t n = o->ok ? o->nt : o->ne;
		for (uint32_t j = 0; j < n; j++) {
			if (s[j].kind == LIN_GET)
				s[j].value = model[s[j].key];
			else if (s[j].kind == LIN_PUT)
				model[s[j].key] = s[j].value;
			else
				model[s[j].key] = 0;
		}
	}
	free(clock);
	free(model);
	free(order);
	return g;
}

static struct lin_history *to_history(const struct gop *g, uint32_t n)
{
	struct lin_history *h = new_history();
	for (uint32_t i = 0; i < n; i++) {
		const struct gop *o = &g[i];
		add(h, o->client, o->call, o->ret, o->cmps, o->nc, o->then, o->nt, o->els, o->ne,
		    o->ok);
	}
	return h;
}

/* Corrupt one read: make it return a value written by an op called after the
 * read returned (values are unique, so this can never be linearized). */
static bool corrupt(struct gop *g, uint32_t n, uint32_t *victim)
{
	for (uint32_t tries = 0; tries < 10 * n; tries++) {
		uint32_t i = (uint32_t)below(n);
		struct gop *r = &g[i];
		if (r->ret == U || !r->ok || r->nt == 0 || r->then[0].kind != LIN_GET)
			continue;
		for (uint32_t j = 0; j < n; j++) {
			const struct gop *w = &g[j];
			if (w->call > r->ret && w->nt && w->then[0].kind == LIN_PUT &&
			    w->then[0].key == r->then[0].key && w->then[0].value != r->then[0].value) {
				r->then[0].value = w->then[0].value;
				*victim = i;
				return true;
			}
		}
	}
	return false;
}

static void test_random(void **state)
{
	(void)state;
	uint32_t corrupted = 0;
	for (uint64_t seed = 1; seed <= 60; seed++) {
		uint32_t n = 50 + (uint32_t)(seed * 7 % 300);
		uint32_t clients = 2 + (uint32_t)(seed % 8);
		uint32_t keys = 1 + (uint32_t)(seed % 4);
		uint32_t unknown = seed % 3 == 0 ? 50 : 0;
		struct gop *g = generate(seed, n, clients, keys, unknown, seed % 2 == 0);
		struct lin_history *h = to_history(g, n);
		struct lin_result r;
		int v = check(h, &r);
		if (v != LIN_OK)
			fprintf(stderr, "seed %" PRIu64 ": %s\n", seed, r.report);
		assert_int_equal(v, LIN_OK);
		lin_result_free(&r);
		lin_history_free(h);

		uint32_t victim = 0;
		if (!corrupt(g, n, &victim)) {
			free(g);
			continue;
		}
		corrupted++;
		h = to_history(g, n);
		v = check(h, &r);
		if (v != LIN_VIOLATION)
			fprintf(stderr, "seed %" PRIu64 ": corrupted op %u accepted\n", seed, victim);
		assert_int_equal(v, LIN_VIOLATION);
		assert_true(r.report_ops <= r.failing_partition_ops);
		/* The corrupted read is in the report. */
		char line[64];
		snprintf(line, sizeof(line), "get k%u -> %" PRIu64, g[victim].then[0].key,
		         g[victim].then[0].value);
		if (!strstr(r.report, line))
			fprintf(stderr, "seed %" PRIu64 ": %s not in\n%s", seed, line, r.report);
		assert_non_null(strstr(r.report, line));
		lin_result_free(&r);
		lin_history_free(h);
		free(g);
	}
	assert_true(corrupted >= 40);
}

/* The memo bound: with room for a handful of states the answers are the same. */
static void test_memo_bound(void **state)
{
	(void)state;
	struct lin_check_opts o = {.max_states = 16};
	for (uint64_t seed = 100; seed < 110; seed++) {
		struct gop *g = generate(seed, 40, 4, 2, 30, true);
		struct lin_history *h = to_history(g, 40);
		struct lin_result r;
		assert_int_equal(check_opts(h, &o, &r), LIN_OK);
		lin_result_free(&r);
		lin_history_free(h);
		uint32_t victim;
		if (corrupt(g, 40, &victim)) {
			h = to_history(g, 40);
			assert_int_equal(check_opts(h, &o, &r), LIN_VIOLATION);
			lin_result_free(&r);
			lin_history_free(h);
		}
		free(g);
	}
}

/* The time budget: a check that cannot finish in 1 ms says so, promptly. */
static void test_time_budget(void **state)
{
	(void)state;
	uint32_t n = 60000;
	struct gop *g = generate(7, n, 16, 1000, 0, false);
	struct lin_history *h = to_history(g, n);
	struct lin_check_opts o = {.max_ms = 1};
	struct lin_result r;
	assert_int_equal(check_opts(h, &o, &r), LIN_UNKNOWN);
	assert_true(r.n_checked_partitions < r.n_partitions);
	assert_non_null(strstr(r.report, "time budget"));
	lin_result_free(&r);
	lin_history_free(h);
	free(g);
}

/* The shape of a benchmark run: 100k ops over 1,000 keys by 16 clients with
 * some timeouts, then one hot key with 20k ops. Must finish (the budget is
 * the default); no timing assertion, but the verdicts are checked. */
static void test_benchmark_sized(void **state)
{
	(void)state;
	uint32_t n = 100000;
	struct gop *g = generate(42, n, 16, 1000, 5, true);
	struct lin_history *h = to_history(g, n);
	struct lin_result r;
	assert_int_equal(check(h, &r), LIN_OK);
	assert_int_equal(r.n_ops, n);
	assert_true(r.n_partitions >= 1);
	lin_result_free(&r);
	lin_history_free(h);
	free(g);

	n = 20000;
	g = generate(43, n, 16, 1, 2, false);
	h = to_history(g, n);
	assert_int_equal(check(h, &r), LIN_OK);
	assert_int_equal(r.n_partitions, 1);
	lin_result_free(&r);
	lin_history_free(h);
	uint32_t victim;
	assert_true(corrupt(g, n, &victim));
	h = to_history(g, n);
	assert_int_equal(check(h, &r), LIN_VIOLATION);
	assert_true(r.report_ops < 20);
	lin_result_free(&r);
	lin_history_free(h);
	free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stale_read),
		cmocka_unit_test(test_lost_write),
		cmocka_unit_test(test_non_atomic_txn),
		cmocka_unit_test(test_cas_wrong_value),
		cmocka_unit_test(test_double_cas),
		cmocka_unit_test(test_unknown_rejected),
		cmocka_unit_test(test_sequential_and_concurrent),
		cmocka_unit_test(test_unknown_accepted),
		cmocka_unit_test(test_invalid_input),
		cmocka_unit_test(test_key_names),
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_memo_bound),
		cmocka_unit_test(test_time_budget),
		cmocka_unit_test(test_benchmark_sized),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
