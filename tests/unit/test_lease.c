/* test_lease.c: the leader's lease table and the forwarding codec (server/lease.h), no I/O: the
 * deadlines a renewal and a promotion give, the order and rate of expiry and its retry, the
 * checkpoint rule (which leases, what remaining TTL, how the error a new leader would make stays
 * within the threshold), the table against a model over many random operations, and the ASK and
 * ANSWER payloads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "lease.h"

#define THETA 1500 /* an election timeout of 1 s, plus half a second */

static void test_renew_and_remaining(void **state)
{
	(void)state;
	struct lease_tab t;
	lease_tab_init(&t, THETA);
	assert_int_equal(lease_tab_add(&t, 7, 10, 0, 1000), 0);
	assert_int_equal(lease_tab_find(&t, 7)->expiry, 11000);
	assert_int_equal(lease_tab_remaining(&t, 7, 1000), 10);
	assert_int_equal(lease_tab_remaining(&t, 7, 1001), 9); /* truncated, as etcd */
	assert_int_equal(lease_tab_renew(&t, 7, 5000), 10);
	assert_int_equal(lease_tab_find(&t, 7)->expiry, 15000);
	assert_int_equal(lease_tab_remaining(&t, 7, 15000), 0);
	assert_int_equal(lease_tab_renew(&t, 7, 15000), 0); /* past its deadline: not renewed */
	assert_int_equal(lease_tab_renew(&t, 8, 0), -1);
	assert_int_equal(lease_tab_remaining(&t, 8, 0), -1);
	lease_tab_free(&t);
}

/* A promotion: deadlines from the checkpoints, or the TTL; the table then follows the store. */
static void test_promotion_and_sync(void **state)
{
	(void)state;
	struct lease_tab t;
	lease_tab_init(&t, THETA);
	struct kv_lease list[] = { { 1, 60, 0 }, { 2, 60, 12 }, { 3, 5, 9 } };
	assert_int_equal(lease_tab_sync(&t, list, 3, 100000), 0);
	assert_int_equal(t.n, 3);
	assert_int_equal(lease_tab_find(&t, 1)->expiry, 160000);
	assert_int_equal(lease_tab_find(&t, 2)->expiry, 112000);
	assert_int_equal(lease_tab_find(&t, 3)->expiry, 105000); /* a checkpoint above TTL: TTL */
	/* later: 1 revoked, 4 granted; 2 keeps its deadline */
	struct kv_lease later[] = { { 2, 60, 12 }, { 3, 5, 9 }, { 4, 30, 0 } };
	assert_int_equal(lease_tab_sync(&t, later, 3, 101000), 0);
	assert_int_equal(t.n, 3);
	assert_null(lease_tab_find(&t, 1));
	assert_int_equal(lease_tab_find(&t, 2)->expiry, 112000);
	assert_int_equal(lease_tab_find(&t, 4)->expiry, 131000);
	lease_tab_clear(&t);
	assert_int_equal(t.n, 0);
	assert_null(lease_tab_find(&t, 2));
	lease_tab_free(&t);
}

static void test_expiry_order_rate_retry(void **state)
{
	(void)state;
	struct lease_tab t;
	lease_tab_init(&t, THETA);
	/* 20 leases, deadlines 1000 + 100 * ((i * 7) % 20): all distinct */
	for (int i = 0; i < 20; i++) {
		assert_int_equal(lease_tab_add(&t, 100 + i, 1, 0, 0), 0);
		lease_tab_find(&t, 100 + i)->expiry = 1000 + 100 * (uint64_t)((i * 7) % 20);
	}
	int64_t out[20];
	assert_int_equal(lease_tab_expired(&t, 999, 3000, 20, out), 0);
	/* at 1850: deadlines 1000..1800 (9 leases), earliest first, at most 4 */
	size_t n = lease_tab_expired(&t, 1850, 3000, 4, out);
	assert_int_equal(n, 4);
	for (size_t k = 0; k < n; k++) {
		struct lease_ent *e = lease_tab_find(&t, out[k]);
		assert_int_equal(e->expiry, 1000 + 100 * k);
		assert_int_equal(e->revoke_at, 1850);
	}
	/* the next call goes on with the rest; the first four wait for their retry */
	n = lease_tab_expired(&t, 1900, 3000, 20, out);
	assert_int_equal(n, 6);
	for (size_t k = 0; k < n; k++)
		assert_int_equal(lease_tab_find(&t, out[k])->expiry, 1400 + 100 * k);
	assert_int_equal(lease_tab_expired(&t, 1900, 3000, 20, out), 0);
	/* not revoked 3 s later: proposed again */
	n = lease_tab_expired(&t, 4850, 3000, 20, out);
	assert_int_equal(n, 20 - 6); /* the first four again, and every later one by now */
	assert_int_equal(lease_tab_find(&t, out[0])->expiry, 1000);
	lease_tab_free(&t);
}

/* The error a new leader would make for one lease if the leader died at `now`, in ms. */
static int64_t err_at(struct lease_tab *t, int64_t id, uint64_t now)
{
	struct lease_ent *e = lease_tab_find(t, id);
	return (int64_t)now + e->cp * 1000 - (int64_t)e->expiry;
}

/* Runs the leader for `ms` in steps of 100 ms (a heartbeat), proposing (and at once recording)
 * every checkpoint due; renewals of lease 1 every `every` ms (0: none). Returns the checkpoints
 * proposed and checks that the error never passes theta + one heartbeat. */
static size_t run(struct lease_tab *t, uint64_t from, uint64_t ms, uint64_t every)
{
	size_t total = 0;
	struct lease_cp cps[64];
	for (uint64_t now = from; now < from + ms; now += 100) {
		/* between heartbeats: a renewal in this one may take the error anywhere until
		 * the heartbeat's checkpoints (the window docs/operations.md describes) */
		for (size_t k = 0; k < t->n; k++) {
			int64_t e = err_at(t, t->v[k].id, now);
			if (t->v[k].expiry > now)
				assert_true(e <= THETA + 100 && e >= -(THETA + 100));
		}
		if (every != 0 && (now - from) % every == 0)
			assert_true(lease_tab_renew(t, 1, now) > 0);
		size_t n = lease_tab_checkpoints(t, now, 64, cps);
		for (size_t i = 0; i < n; i++) {
			assert_true(cps[i].remaining >= 1);
			assert_true(llabs(err_at(t, cps[i].id, now)) > THETA);
		}
		lease_tab_checkpointed(t, cps, n);
		/* a checkpoint leaves at most half a second (a second for the last second: a
		 * checkpoint is never 0, which means "none") */
		for (size_t i = 0; i < n; i++)
			assert_true(llabs(err_at(t, cps[i].id, now)) <=
				    (cps[i].remaining == 1 ? 1000 : 500));
		total += n;
	}
	return total;
}

static void test_checkpoint_rule(void **state)
{
	(void)state;
	struct lease_tab t;
	lease_tab_init(&t, THETA);
	/* renewed every second (TTL 10): never checkpointed */
	assert_int_equal(lease_tab_add(&t, 1, 10, 0, 0), 0);
	assert_int_equal(run(&t, 0, 60000, 1000), 0);
	lease_tab_free(&t);

	/* renewed every 1.5 s: at most one checkpoint, then none */
	lease_tab_init(&t, THETA);
	assert_int_equal(lease_tab_add(&t, 1, 10, 0, 0), 0);
	assert_true(run(&t, 0, 60000, 1500) <= 1);
	lease_tab_free(&t);

	/* left alone (TTL 60): one checkpoint about every theta while it lives */
	lease_tab_init(&t, THETA);
	assert_int_equal(lease_tab_add(&t, 1, 60, 0, 0), 0);
	size_t n = run(&t, 0, 60000, 0);
	assert_true(n >= 25 && n <= 60);
	lease_tab_free(&t);

	/* renewed every 20 s (a client's TTL/3 for TTL 60): bounded as a lease left alone */
	lease_tab_init(&t, THETA);
	assert_int_equal(lease_tab_add(&t, 1, 60, 0, 0), 0);
	n = run(&t, 0, 60000, 20000);
	assert_true(n <= 60);
	lease_tab_free(&t);

	/* a renewal after a checkpoint: the lower side of the rule */
	lease_tab_init(&t, THETA);
	assert_int_equal(lease_tab_add(&t, 1, 60, 5, 0), 0); /* promoted with 5 s left */
	assert_int_equal(lease_tab_renew(&t, 1, 1000), 60);
	struct lease_cp cp[4];
	assert_int_equal(lease_tab_checkpoints(&t, 1000, 4, cp), 1);
	assert_int_equal(cp[0].id, 1);
	assert_int_equal(cp[0].remaining, 60);
	lease_tab_free(&t);
}

/* The rate bound: with more due than max, each call takes max and the scan goes round. */
static void test_checkpoint_fairness(void **state)
{
	(void)state;
	struct lease_tab t;
	lease_tab_init(&t, THETA);
	for (int64_t id = 1; id <= 10; id++)
		assert_int_equal(lease_tab_add(&t, id, 60, 0, 0), 0);
	struct lease_cp cps[4];
	int hits[11] = { 0 };
	for (int round = 0; round < 3; round++) {
		size_t n = lease_tab_checkpoints(&t, 2000, 4, cps);
		assert_true(n <= 4);
		for (size_t i = 0; i < n; i++) {
			assert_int_equal(cps[i].remaining, 58);
			hits[cps[i].id]++;
		}
		lease_tab_checkpointed(&t, cps, n);
	}
	for (int id = 1; id <= 10; id++)
		assert_int_equal(hits[id], 1);
	lease_tab_free(&t);
}

/* Random adds, removes and syncs against a plain array. */
static void test_against_model(void **state)
{
	(void)state;
	struct lease_tab t;
	lease_tab_init(&t, THETA);
	enum { IDS = 3000 };
	static bool in[IDS];
	memset(in, 0, sizeof in);
	uint64_t r = 12345;
	for (int step = 0; step < 200000; step++) {
		r = r * 6364136223846793005ull + 1442695040888963407ull;
		int64_t id = (int64_t)((r >> 33) % IDS) + 1;
		if ((r >> 20) % 3 != 0) {
			if (!in[id - 1])
				assert_int_equal(lease_tab_add(&t, id, 10, 0, 0), 0);
			in[id - 1] = true;
		} else {
			lease_tab_remove(&t, id);
			in[id - 1] = false;
		}
		if (step % 20000 == 0) {
			size_t n = 0;
			for (int k = 0; k < IDS; k++) {
				assert_int_equal(lease_tab_find(&t, k + 1) != NULL, in[k]);
				n += in[k];
			}
			assert_int_equal(t.n, n);
		}
	}
	/* a sync to every third id */
	struct kv_lease *list = calloc(IDS, sizeof *list);
	size_t n = 0;
	for (int k = 0; k < IDS; k += 3)
		list[n++] = (struct kv_lease){ k + 1, 10, 0 };
	assert_int_equal(lease_tab_sync(&t, list, n, 0), 0);
	assert_int_equal(t.n, n);
	for (int k = 0; k < IDS; k++)
		assert_int_equal(lease_tab_find(&t, k + 1) != NULL, k % 3 == 0);
	free(list);
	lease_tab_free(&t);
}

static void test_wire(void **state)
{
	(void)state;
	uint8_t b[LEASE_ANSWER_SIZE + 1];
	struct lease_ask_msg q = { LEASE_ASK_RENEW, 0x0102030405060708ull, -5 }, q2;
	lease_ask_encode(&q, b);
	assert_int_equal(lease_ask_decode(b, LEASE_ASK_SIZE, &q2), 0);
	assert_int_equal(q2.kind, q.kind);
	assert_int_equal(q2.seq, q.seq);
	assert_int_equal(q2.id, -5);
	assert_int_equal(lease_ask_decode(b, LEASE_ASK_SIZE - 1, &q2), -1);
	b[0] = 9;
	assert_int_equal(lease_ask_decode(b, LEASE_ASK_SIZE, &q2), -1);

	struct lease_answer_msg a = { LEASE_ASK_TTL, 77, LEASE_ANS_NOT_FOUND, -1, 9000000000LL },
				a2;
	lease_answer_encode(&a, b);
	assert_int_equal(lease_answer_decode(b, LEASE_ANSWER_SIZE, &a2), 0);
	assert_int_equal(a2.kind, LEASE_ASK_TTL);
	assert_int_equal(a2.seq, 77);
	assert_int_equal(a2.status, LEASE_ANS_NOT_FOUND);
	assert_int_equal(a2.ttl, -1);
	assert_int_equal(a2.granted, 9000000000LL);
	assert_int_equal(lease_answer_decode(b, LEASE_ANSWER_SIZE + 1, &a2), -1);
	b[9] = 3;
	assert_int_equal(lease_answer_decode(b, LEASE_ANSWER_SIZE, &a2), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_renew_and_remaining),
		cmocka_unit_test(test_promotion_and_sync),
		cmocka_unit_test(test_expiry_order_rate_retry),
		cmocka_unit_test(test_checkpoint_rule),
		cmocka_unit_test(test_checkpoint_fairness),
		cmocka_unit_test(test_against_model),
		cmocka_unit_test(test_wire),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
