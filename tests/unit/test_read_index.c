/* test_read_index.c: linearizable reads without log writes (thesis §6.4):
 * the leader records its commit index once it has committed an entry of its
 * term, confirms leadership with one heartbeat round, and the read is served
 * once that index is applied (the harness checks read.index <= applied
 * whenever a read is released). */
#include "unit.h"

/* A single voter is a quorum by itself: no round trip. */
static void test_read_index_single_node_immediate(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 1, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(h_propose(h, 1, "v", NULL), 0);
	h_stabilize(h);
	assert_int_equal(raft_read_index(h_raft(h, 1), 7), 0);
	assert_true(h_ready_begin(h, 1));
	const struct raft_update *u = &h_node(h, 1)->u;
	assert_int_equal(u->n_msgs, 0);
	assert_int_equal(u->n_reads, 1);
	assert_int_equal(u->reads[0].id, 7);
	assert_int_equal(u->reads[0].status, 0);
	assert_int_equal(u->reads[0].index, h_commit(h, 1));
	h_ready_finish(h, 1);
}

/* On a leader of several, a read needs a heartbeat round acknowledged by a
 * majority (one follower plus itself out of three). */
static void test_read_index_leader_needs_heartbeat_round(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(h_propose(h, 1, "v", NULL), 0);
	h_stabilize(h);
	uint64_t commit = h_commit(h, 1);
	assert_int_equal(raft_read_index(h_raft(h, 1), 7), 0);
	h_process_ready(h, 1);
	assert_null(h_find_read(h, 1, 7));
	const struct raft_msg *hb = h_find(h, 1, 2, RAFT_MSG_HEARTBEAT, 0);
	assert_non_null(hb);
	assert_true(hb->context > 0);
	assert_int_equal(h_count(h, 1, 3, RAFT_MSG_HEARTBEAT), 1);

	/* The round is lost: nothing is released. */
	h_drop(h, 0, 0, 0);
	h_process_ready(h, 1);
	assert_null(h_find_read(h, 1, 7));

	/* The next round carries a later sequence, which confirms it too. */
	h_tick_heartbeat(h, 1);
	h_process_ready(h, 1);
	h_drop(h, 1, 3, 0);
	h_deliver(h, 1, 2, RAFT_MSG_HEARTBEAT);
	h_process_ready(h, 2);
	h_deliver(h, 2, 1, RAFT_MSG_HEARTBEAT_RESP);
	h_process_ready(h, 1);
	const struct h_read *rd = h_find_read(h, 1, 7);
	assert_non_null(rd);
	assert_int_equal(rd->status, 0);
	assert_int_equal(rd->index, commit);
}

/* A stale acknowledgement (of a round sent before the read) confirms
 * nothing: leadership must be confirmed after the read arrived. */
static void test_read_index_old_heartbeat_ack_does_not_confirm(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	h_tick_heartbeat(h, 1);
	h_process_ready(h, 1);
	h_deliver(h, 1, 0, RAFT_MSG_HEARTBEAT);
	h_process_ready(h, 2);
	h_process_ready(h, 3);
	/* The acks of that earlier round are still in flight. */
	assert_int_equal(raft_read_index(h_raft(h, 1), 8), 0);
	h_deliver(h, 0, 1, RAFT_MSG_HEARTBEAT_RESP);
	h_process_ready(h, 1);
	assert_null(h_find_read(h, 1, 8));
	h_stabilize(h);
	assert_non_null(h_find_read(h, 1, 8));
	assert_int_equal(h_find_read(h, 1, 8)->status, 0);
}

/* A read on a follower is forwarded to the leader, and the answer served on
 * the follower once it has applied up to the index. */
static void test_read_index_forwarded_from_follower(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(h_propose(h, 1, "v", NULL), 0);
	h_stabilize(h);
	uint64_t commit = h_commit(h, 1);
	assert_int_equal(raft_read_index(h_raft(h, 3), 9), 0);
	h_process_ready(h, 3);
	const struct raft_msg *m = h_find(h, 3, 1, RAFT_MSG_READ_INDEX, 0);
	assert_non_null(m);
	assert_int_equal(m->context, 9);
	h_stabilize(h);
	const struct h_read *rd = h_find_read(h, 3, 9);
	assert_non_null(rd);
	assert_int_equal(rd->status, 0);
	assert_int_equal(rd->index, commit);
	assert_null(h_find_read(h, 1, 9)); /* answered to 3, not served on 1 */
	assert_true(h_node(h, 3)->applied >= commit);
}

/* A leader that loses leadership before the round completes fails its
 * pending reads with RAFT_ELEADERLOST; it never answers them with an index. */
static void test_read_index_fails_when_leadership_lost(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(raft_read_index(h_raft(h, 1), 5), 0);
	assert_int_equal(raft_read_index(h_raft(h, 2), 6), 0); /* forwarded */
	h_process_ready(h, 2);
	h_deliver(h, 2, 1, RAFT_MSG_READ_INDEX);
	h_process_ready(h, 1);
	h_drop(h, 0, 0, 0);
	struct raft_msg m = h_mk(RAFT_MSG_APPEND_RESP, 3, 1, h_term(h, 1) + 1);
	m.reject = true;
	assert_int_equal(h_step(h, &m), 0);
	assert_int_equal(h_state(h, 1), RAFT_FOLLOWER);
	h_process_ready(h, 1);
	const struct h_read *rd = h_find_read(h, 1, 5);
	assert_non_null(rd);
	assert_int_equal(rd->status, RAFT_ELEADERLOST);
	/* The forwarded one is answered to its follower as failed. */
	const struct raft_msg *resp = h_find(h, 1, 2, RAFT_MSG_READ_INDEX_RESP, 0);
	assert_non_null(resp);
	assert_true(resp->reject);
	assert_int_equal(resp->context, 6);
	h_deliver_all(h);
	h_process_ready(h, 2);
	rd = h_find_read(h, 2, 6);
	assert_non_null(rd);
	assert_int_not_equal(rd->status, 0);
}

/* §6.4: a new leader does not know the commit index until an entry of its
 * term is committed; reads wait for that. */
static void test_read_index_new_leader_waits_for_commit_in_its_term(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(h_propose(h, 1, "v", NULL), 0);
	h_stabilize(h);
	/* Node 2 becomes leader; its read comes before its no-op commits. */
	assert_int_equal(raft_campaign(h_raft(h, 2)), 0);
	h_process_ready(h, 2);
	h_deliver(h, 2, 0, RAFT_MSG_VOTE);
	h_process_ready(h, 1);
	h_process_ready(h, 3);
	h_deliver(h, 0, 2, RAFT_MSG_VOTE_RESP);
	assert_int_equal(h_state(h, 2), RAFT_LEADER);
	uint64_t noop = h_last_index(h, 2);
	assert_int_equal(raft_read_index(h_raft(h, 2), 11), 0);
	h_process_ready(h, 2);
	assert_null(h_find_read(h, 2, 11));
	h_stabilize(h);
	h_tick_heartbeat(h, 2);
	h_stabilize(h);
	const struct h_read *rd = h_find_read(h, 2, 11);
	assert_non_null(rd);
	assert_int_equal(rd->status, 0);
	assert_true(rd->index >= noop);
}

/* No leader known: the read fails at once with RAFT_ENOLEADER. */
static void test_read_index_without_leader(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	int rc = raft_read_index(h_raft(h, 2), 4);
	if (rc == 0) {
		h_process_ready(h, 2);
		const struct h_read *rd = h_find_read(h, 2, 4);
		assert_non_null(rd);
		assert_int_equal(rd->status, RAFT_ENOLEADER);
	} else {
		assert_int_equal(rc, RAFT_ENOLEADER);
	}
	assert_int_equal(h_count(h, 2, 0, RAFT_MSG_READ_INDEX), 0);
}

/* Pending reads are bounded by max_pending_reads. */
static void test_read_index_bounded(void **state)
{
	struct harness *h = *state;
	const struct h_opts o = {.max_pending_reads = 2};
	h_cluster(h, 3, &o);
	assert_true(h_elect(h, 1));
	h_isolate(h, 1); /* no confirmation can come back */
	assert_int_equal(raft_read_index(h_raft(h, 1), 1), 0);
	assert_int_equal(raft_read_index(h_raft(h, 1), 2), 0);
	int rc = raft_read_index(h_raft(h, 1), 3);
	h_process_ready(h, 1);
	const struct h_read *rd = h_find_read(h, 1, 3);
	assert_true(rc == RAFT_EBUSY || (rc == 0 && rd != NULL && rd->status == RAFT_EBUSY));
	assert_null(h_find_read(h, 1, 1));
	h_recover(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_non_null(h_find_read(h, 1, 1));
	assert_non_null(h_find_read(h, 1, 2));
	assert_int_equal(h_find_read(h, 1, 2)->status, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		HTEST(test_read_index_single_node_immediate),
		HTEST(test_read_index_leader_needs_heartbeat_round),
		HTEST(test_read_index_old_heartbeat_ack_does_not_confirm),
		HTEST(test_read_index_forwarded_from_follower),
		HTEST(test_read_index_fails_when_leadership_lost),
		HTEST(test_read_index_new_leader_waits_for_commit_in_its_term),
		HTEST(test_read_index_without_leader),
		HTEST(test_read_index_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
