/* test_transfer.c: leadership transfer (thesis §3.10): the leader brings
 * the target up to date, sends TimeoutNow, the target campaigns at once
 * (past pre-vote and the lease) and wins; proposals wait meanwhile, and a
 * transfer that does not finish within an election timeout is abandoned. */
#include "unit.h"

static const struct h_opts pv_cq = {.pre_vote = true, .check_quorum = true};

/* The target is up to date: TimeoutNow at once, and it wins the next term,
 * even with pre-vote and check-quorum on (its VOTE is marked as a
 * transfer, so the lease does not stop it). */
static void test_transfer_to_up_to_date_follower(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &pv_cq);
	assert_true(h_elect(h, 1));
	uint64_t t = h_term(h, 1);
	assert_int_equal(raft_transfer_leadership(h_raft(h, 1), 3), 0);
	struct raft_status st;
	h_status(h, 1, &st);
	assert_int_equal(st.transferee, 3);
	h_process_ready(h, 1);
	assert_int_equal(h_count(h, 1, 3, RAFT_MSG_TIMEOUT_NOW), 1);
	h_deliver(h, 1, 3, RAFT_MSG_TIMEOUT_NOW);
	assert_int_equal(h_state(h, 3), RAFT_CANDIDATE); /* no pre-vote round */
	h_process_ready(h, 3);
	const struct raft_msg *v = h_find(h, 3, 2, RAFT_MSG_VOTE, 0);
	assert_non_null(v);
	assert_int_equal(v->context, 1);
	assert_int_equal(v->term, t + 1);
	h_stabilize(h);
	assert_int_equal(h_state(h, 3), RAFT_LEADER);
	assert_int_equal(h_term(h, 3), t + 1);
	assert_int_equal(h_state(h, 1), RAFT_FOLLOWER);
	assert_int_equal(h_leader(h, 1), 3);
	h_status(h, 1, &st);
	assert_int_equal(st.transferee, 0);
}

/* While a transfer is in progress the leader refuses proposals and
 * membership changes (they could be lost with the old leader's term). */
static void test_transfer_refuses_proposals_while_in_progress(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	h_isolate(h, 3);
	assert_int_equal(h_propose(h, 1, "x", NULL), 0);
	h_stabilize(h);
	assert_int_equal(raft_transfer_leadership(h_raft(h, 1), 3), 0);
	assert_int_equal(h_propose(h, 1, "y", NULL), RAFT_ETRANSFERRING);
	struct raft_conf_change cc = {.type = RAFT_CC_ADD_LEARNER, .id = 4};
	assert_int_equal(raft_propose_conf_change(h_raft(h, 1), &cc, NULL), RAFT_ETRANSFERRING);
	/* A proposal forwarded by a follower is dropped, and counted. */
	uint64_t dropped = h_stats(h, 1)->proposals_dropped;
	assert_int_equal(h_propose(h, 2, "z", NULL), 0);
	h_stabilize(h);
	assert_int_equal(h_stats(h, 1)->proposals_dropped, dropped + 1);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	assert_null(strstr(h_buf_str(&h_node(h, 1)->sm), "z"));
}

/* A lagging target is first caught up, then sent TimeoutNow; it wins with
 * the complete log. */
static void test_transfer_to_lagging_follower_catches_up_first(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	h_isolate(h, 3);
	assert_int_equal(h_propose(h, 1, "x", NULL), 0);
	assert_int_equal(h_propose(h, 1, "y", NULL), 0);
	h_stabilize(h);
	h_recover(h);
	assert_int_equal(raft_transfer_leadership(h_raft(h, 1), 3), 0);
	h_process_ready(h, 1);
	assert_int_equal(h_count(h, 1, 3, RAFT_MSG_TIMEOUT_NOW), 0);
	h_stabilize(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_int_equal(h_state(h, 3), RAFT_LEADER);
	assert_true(h->sent[1][RAFT_MSG_TIMEOUT_NOW] == 1);
	assert_string_equal(h_buf_str(&h_node(h, 3)->sm), "x,y");
	assert_int_equal(h_propose(h, 3, "z", NULL), 0);
	h_stabilize(h);
	assert_string_equal(h_buf_str(&h_node(h, 1)->sm), "x,y,z");
}

/* §3.10: "If the transfer does not complete after about one election
 * timeout, the leader aborts the transfer and resumes accepting requests". */
static void test_transfer_abandoned_after_election_timeout(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	h_isolate(h, 3);
	assert_int_equal(h_propose(h, 1, "x", NULL), 0);
	h_stabilize(h);
	assert_int_equal(raft_transfer_leadership(h_raft(h, 1), 3), 0);
	assert_int_equal(h_propose(h, 1, "y", NULL), RAFT_ETRANSFERRING);
	uint32_t e = h_election_ticks(h, 1);
	for (uint32_t i = 0; i < e; i++) {
		h_tick(h, 1, 1);
		h_stabilize(h);
	}
	struct raft_status st;
	h_status(h, 1, &st);
	assert_int_equal(st.transferee, 0);
	assert_int_equal(st.state, RAFT_LEADER);
	assert_int_equal(h_propose(h, 1, "y", NULL), 0);
	h_stabilize(h);
	assert_string_equal(h_buf_str(&h_node(h, 1)->sm), "x,y");
}

/* On a follower the request is forwarded to the leader. */
static void test_transfer_requested_on_follower_is_forwarded(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(raft_transfer_leadership(h_raft(h, 2), 3), 0);
	h_process_ready(h, 2);
	assert_int_equal(h_count(h, 2, 1, RAFT_MSG_TRANSFER), 1);
	h_stabilize(h);
	assert_int_equal(h_state(h, 3), RAFT_LEADER);
	for (uint64_t id = 1; id <= 3; id++)
		assert_int_equal(h_leader(h, id), 3);
}

/* Bad targets are refused and change nothing. */
static void test_transfer_bad_targets(void **state)
{
	struct harness *h = *state;
	h_cluster_learners(h, 3, 1, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(raft_transfer_leadership(h_raft(h, 1), 9), RAFT_EUNKNOWNMEMBER);
	assert_int_equal(raft_transfer_leadership(h_raft(h, 1), 4), RAFT_ENOTVOTER);
	assert_int_equal(raft_transfer_leadership(h_raft(h, 1), 0), RAFT_EINVAL);
	assert_int_equal(raft_transfer_leadership(h_raft(h, 1), 1), 0); /* already */
	struct raft_status st;
	h_status(h, 1, &st);
	assert_int_equal(st.transferee, 0);
	assert_int_equal(h_propose(h, 1, "ok", NULL), 0);
	h_stabilize(h);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		HTEST(test_transfer_to_up_to_date_follower),
		HTEST(test_transfer_refuses_proposals_while_in_progress),
		HTEST(test_transfer_to_lagging_follower_catches_up_first),
		HTEST(test_transfer_abandoned_after_election_timeout),
		HTEST(test_transfer_requested_on_follower_is_forwarded),
		HTEST(test_transfer_bad_targets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
