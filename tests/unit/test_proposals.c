/* test_proposals.c: raft_propose() on every kind of member and at every
 * bound raft.h names: RAFT_ENOLEADER, forwarding, RAFT_EBUSY over
 * max_uncommitted_bytes, RAFT_ETOOBIG over max_entry_bytes. */
#include "unit.h"

static void test_propose_on_follower_without_leader_fails(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	h_process_ready(h, 2);
	uint64_t idx = 99;
	assert_int_equal(h_propose(h, 2, "x", &idx), RAFT_ENOLEADER);
	assert_int_equal(idx, 0);
	assert_false(raft_has_update(h_raft(h, 2))); /* nothing queued */
	/* A candidate knows no leader either. */
	assert_int_equal(raft_campaign(h_raft(h, 3)), 0);
	assert_int_equal(h_propose(h, 3, "x", NULL), RAFT_ENOLEADER);
}

static void test_propose_on_leader_returns_index(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	uint64_t last = h_last_index(h, 1);
	uint64_t i1, i2;
	assert_int_equal(h_propose(h, 1, "a", &i1), 0);
	assert_int_equal(h_propose(h, 1, "b", &i2), 0);
	assert_int_equal(i1, last + 1);
	assert_int_equal(i2, last + 2);
	assert_int_equal(h_propose(h, 1, "", NULL), 0); /* empty entries are fine */
	h_stabilize(h);
	assert_int_equal(h_commit(h, 2), last + 3);
	assert_string_equal(h_buf_str(&h_node(h, 2)->sm), "a,b,");
	assert_int_equal(h_node(h, 2)->n_applied_normal, 3);
}

/* On a follower with a leader the proposal is forwarded (*index 0) and its
 * fate learnt from the applied log. */
static void test_propose_on_follower_is_forwarded(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	uint64_t idx = 99;
	assert_int_equal(h_propose(h, 2, "fwd", &idx), 0);
	assert_int_equal(idx, 0);
	h_process_ready(h, 2);
	const struct raft_msg *m = h_find(h, 2, 1, RAFT_MSG_PROPOSE, 0);
	assert_non_null(m);
	assert_int_equal(m->n_entries, 1);
	assert_memory_equal(m->entries[0].data, "fwd", 3);
	h_stabilize(h);
	for (uint64_t id = 1; id <= 3; id++)
		assert_string_equal(h_buf_str(&h_node(h, id)->sm), "fwd");
}

/* A follower forwards at most 65,536 proposals (and reads) per update: a
 * caller that stops taking updates gets RAFT_EBUSY, not unbounded memory. */
static void test_forwarding_is_bounded_per_update(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	h_process_ready(h, 2);
	struct raft *f = h_raft(h, 2);
	uint32_t accepted = 0;
	int rv = 0;
	for (uint32_t i = 0; i < 70000; i++) {
		rv = raft_propose(f, "p", 1, NULL);
		if (rv != 0) {
			break;
		}
		accepted++;
	}
	assert_int_equal(rv, RAFT_EBUSY);
	assert_int_equal(accepted, 1u << 16);
	assert_int_equal(raft_read_index(f, 42), RAFT_EBUSY);
	/* taking the update makes room again */
	assert_true(raft_has_update(f));
	struct raft_update u;
	assert_int_equal(raft_ready(f, &u), 0);
	assert_int_equal(u.n_msgs, 1u << 16);
	raft_advance(f);
	assert_int_equal(raft_propose(f, "p", 1, NULL), 0);
}

/* max_uncommitted_bytes bounds the leader's uncommitted log; once entries
 * commit, proposals are accepted again. */
static void test_propose_busy_beyond_max_uncommitted_bytes(void **state)
{
	struct harness *h = *state;
	const struct h_opts o = {.max_uncommitted_bytes = 16};
	h_cluster(h, 3, &o);
	assert_true(h_elect(h, 1));
	h_isolate(h, 1);
	assert_int_equal(h_propose(h, 1, "0123456789", NULL), 0);
	assert_int_equal(h_propose(h, 1, "012345", NULL), 0); /* 16: at the bound */
	assert_int_equal(h_propose(h, 1, "0", NULL), RAFT_EBUSY);
	h_stabilize(h);
	assert_int_equal(h_propose(h, 1, "0", NULL), RAFT_EBUSY);
	/* A forwarded proposal over the bound is dropped and counted. */
	uint64_t dropped = h_stats(h, 1)->proposals_dropped;
	h_recover(h);
	assert_int_equal(h_propose(h, 2, "fwd", NULL), 0);
	h_process_ready(h, 2);
	h_deliver(h, 2, 1, RAFT_MSG_PROPOSE);
	assert_int_equal(h_stats(h, 1)->proposals_dropped, dropped + 1);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_string_equal(h_buf_str(&h_node(h, 1)->sm), "0123456789,012345");
	assert_int_equal(h_propose(h, 1, "0123456789", NULL), 0);
}

/* A single entry larger than the bound is still accepted when nothing is
 * uncommitted: otherwise it could never be proposed at all. */
static void test_propose_large_entry_alone_is_accepted(void **state)
{
	struct harness *h = *state;
	const struct h_opts o = {.max_uncommitted_bytes = 4};
	h_cluster(h, 1, &o);
	assert_true(h_elect(h, 1));
	assert_int_equal(h_propose(h, 1, "0123456789", NULL), 0);
	assert_int_equal(h_propose(h, 1, "x", NULL), RAFT_EBUSY);
	h_stabilize(h);
	assert_int_equal(h_propose(h, 1, "x", NULL), 0);
}

static void test_propose_too_big_beyond_max_entry_bytes(void **state)
{
	struct harness *h = *state;
	const struct h_opts o = {.max_entry_bytes = 64};
	h_cluster(h, 3, &o);
	assert_true(h_elect(h, 1));
	uint8_t buf[65];
	memset(buf, 'a', sizeof buf);
	uint64_t last = h_last_index(h, 1);
	assert_int_equal(raft_propose(h_raft(h, 1), buf, 65, NULL), RAFT_ETOOBIG);
	assert_int_equal(raft_propose(h_raft(h, 2), buf, 65, NULL), RAFT_ETOOBIG);
	assert_int_equal(h_last_index(h, 1), last);
	assert_int_equal(raft_propose(h_raft(h, 1), buf, 64, NULL), 0);
	assert_int_equal(raft_propose(h_raft(h, 1), NULL, 3, NULL), RAFT_EINVAL);
	h_stabilize(h);
	assert_int_equal(h_node(h, 3)->sm.len, 64);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		HTEST(test_propose_on_follower_without_leader_fails),
		HTEST(test_propose_on_leader_returns_index),
		HTEST(test_propose_on_follower_is_forwarded),
		HTEST(test_forwarding_is_bounded_per_update),
		HTEST(test_propose_busy_beyond_max_uncommitted_bytes),
		HTEST(test_propose_large_entry_alone_is_accepted),
		HTEST(test_propose_too_big_beyond_max_entry_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
