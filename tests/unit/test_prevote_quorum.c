/* test_prevote_quorum.c: pre-vote (thesis §9.6) and check-quorum with the
 * leader lease it implies (§6.2, §4.2.3): a partitioned member does not
 * inflate its term nor disturb a healthy leader when it comes back, and a
 * leader cut from its majority steps down by itself; a leader reported
 * down ends the lease at once (raft_report_leader_down). */
#include "unit.h"

static const struct h_opts prevote = { .pre_vote = true };
static const struct h_opts prevote_cq = { .pre_vote = true, .check_quorum = true };
static const struct h_opts cq = { .check_quorum = true };

/* A member cut off keeps pre-campaigning, but its term never grows: a
 * pre-vote is not a vote and changes no persistent state. */
static void test_prevote_partitioned_node_term_does_not_grow(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &prevote);
	assert_true(h_elect(h, 1));
	uint64_t t = h_term(h, 3);
	h_isolate(h, 3);
	for (int round = 0; round < 5; round++) {
		h_tick_election(h, 3);
		h_stabilize(h);
	}
	assert_int_equal(h_term(h, 3), t);
	assert_int_equal(h_state(h, 3), RAFT_PRE_CANDIDATE);
	assert_true(h->sent[3][RAFT_MSG_PREVOTE] >= 2 * 5);
	assert_int_equal(h->sent[3][RAFT_MSG_VOTE], 0);
	struct raft_hard_state hs;
	raft_memstore_hard_state(h_node(h, 3)->ms, &hs);
	assert_int_equal(hs.term, t);
}

/* The partitioned member, behind in the log, comes back: its pre-votes are
 * refused, the leader keeps its term and leadership, the member rejoins as
 * a follower and catches up. */
static void test_prevote_rejoining_node_does_not_disturb_leader(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &prevote);
	assert_true(h_elect(h, 1));
	uint64_t t = h_term(h, 1);
	h_isolate(h, 3);
	assert_int_equal(h_propose(h, 1, "while-away", NULL), 0);
	h_stabilize(h);
	h_tick_election(h, 3);
	h_stabilize(h);
	assert_int_equal(h_state(h, 3), RAFT_PRE_CANDIDATE);

	h_recover(h);
	h_tick_election(h, 3); /* pre-campaigns again, now reachable */
	h_process_ready(h, 3);
	assert_true(h_count(h, 3, 1, RAFT_MSG_PREVOTE) >= 1);
	const struct raft_msg *pv = h_find(h, 3, 2, RAFT_MSG_PREVOTE, 0);
	assert_non_null(pv);
	assert_int_equal(pv->term, t + 1); /* the term it would campaign in */
	h_stabilize(h);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	for (uint64_t id = 1; id <= 3; id++)
		assert_int_equal(h_term(h, id), t);
	assert_int_equal(h->sent[3][RAFT_MSG_VOTE], 0);

	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_int_equal(h_state(h, 3), RAFT_FOLLOWER);
	assert_int_equal(h_leader(h, 3), 1);
	assert_string_equal(h_buf_str(&h_node(h, 3)->sm), "while-away");
}

/* With check-quorum as well, even a rejoining member whose log is complete
 * is refused: its peers heard from the leader within the election timeout
 * (the lease, §4.2.3). */
static void test_prevote_with_lease_up_to_date_rejoiner_does_not_disturb(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &prevote_cq);
	assert_true(h_elect(h, 1));
	uint64_t t = h_term(h, 1);
	h_isolate(h, 3);
	h_tick_election(h, 3);
	h_stabilize(h);
	h_recover(h);
	h_tick_heartbeat(h, 1); /* 2 hears from the leader: its lease is fresh */
	h_stabilize(h);
	h_tick_election(h, 3);
	h_stabilize(h);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	for (uint64_t id = 1; id <= 3; id++)
		assert_int_equal(h_term(h, id), t);
	assert_int_equal(h->sent[3][RAFT_MSG_VOTE], 0);
}

/* A pre-vote grant changes nothing on the granting side: no term, no vote,
 * no hard state. A majority of grants then starts the real election. */
static void test_prevote_grant_changes_no_state(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &prevote);
	for (uint64_t id = 1; id <= 3; id++)
		h_process_ready(h, id); /* apply the bootstrap entries */
	uint64_t t = h_term(h, 1);
	assert_int_equal(raft_campaign(h_raft(h, 1)), 0);
	assert_int_equal(h_state(h, 1), RAFT_PRE_CANDIDATE);
	assert_int_equal(h_term(h, 1), t);
	h_process_ready(h, 1);
	assert_int_equal(h_count(h, 1, 0, RAFT_MSG_PREVOTE), 2);
	assert_int_equal(h_count(h, 1, 0, RAFT_MSG_VOTE), 0);
	h_deliver(h, 1, 2, RAFT_MSG_PREVOTE);
	assert_true(h_ready_begin(h, 2));
	const struct raft_update *u = &h_node(h, 2)->u;
	assert_false(u->has_hard_state && (u->hard_state.term != t || u->hard_state.vote != 0));
	h_ready_finish(h, 2);
	const struct raft_msg *r = h_find(h, 2, 1, RAFT_MSG_PREVOTE_RESP, 0);
	assert_non_null(r);
	assert_false(r->reject);
	struct raft_status st;
	h_status(h, 2, &st);
	assert_int_equal(st.term, t);
	assert_int_equal(st.vote, 0);
	h_deliver(h, 2, 1, RAFT_MSG_PREVOTE_RESP);
	assert_int_equal(h_state(h, 1), RAFT_CANDIDATE);
	assert_int_equal(h_term(h, 1), t + 1);
	h_stabilize(h);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
}

/* The control experiment: without pre-vote, the same rejoining member has
 * inflated its term and forces the leader to step down. */
static void test_without_prevote_rejoining_node_disturbs_leader(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	uint64_t t = h_term(h, 1);
	h_isolate(h, 3);
	for (int round = 0; round < 3; round++) {
		h_tick_election(h, 3);
		h_stabilize(h);
	}
	assert_true(h_term(h, 3) >= t + 3);
	h_recover(h);
	h_tick_election(h, 3);
	h_stabilize(h);
	assert_true(h_term(h, 1) > t + 2);
	assert_true(h_term(h, 2) > t + 2);
}

/* check-quorum: a leader that hears from no majority for an election
 * timeout steps down; one that does hear from it stays. */
static void test_check_quorum_isolated_leader_steps_down(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &cq);
	assert_true(h_elect(h, 1));
	uint32_t e = h_election_ticks(h, 1);
	for (uint32_t i = 0; i < 3 * e; i++) {
		h_tick(h, 1, 1);
		h_stabilize(h);
	}
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	h_isolate(h, 1);
	for (uint32_t i = 0; i < 2 * e; i++) {
		h_tick(h, 1, 1);
		h_stabilize(h);
	}
	assert_int_equal(h_state(h, 1), RAFT_FOLLOWER);
	assert_int_equal(h_leader(h, 1), 0);
}

/* With a quorum of one follower (the other is gone), the leader stays. */
static void test_check_quorum_leader_with_majority_stays(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &cq);
	assert_true(h_elect(h, 1));
	h_isolate(h, 3);
	uint32_t e = h_election_ticks(h, 1);
	for (uint32_t i = 0; i < 4 * e; i++) {
		h_tick(h, 1, 1);
		h_tick(h, 2, 1);
		h_stabilize(h);
	}
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	assert_int_equal(h_leader(h, 2), 1);
}

/* The lease under check-quorum: a follower that heard from the leader
 * within the election timeout ignores a RequestVote of a higher term; once
 * the leader has been silent for the timeout, it does grant. */
static void test_check_quorum_follower_ignores_vote_within_lease(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &cq);
	assert_true(h_elect(h, 1));
	uint64_t t = h_term(h, 2);
	struct raft_msg v = h_mk(RAFT_MSG_VOTE, 3, 2, t + 1);
	v.index = h_last_index(h, 2);
	v.log_term = h_log_term(h, 2, v.index);
	assert_int_equal(h_step(h, &v), 0);
	h_process_ready(h, 2);
	assert_int_equal(h_term(h, 2), t);
	assert_int_equal(h_leader(h, 2), 1);
	assert_int_equal(h->granted_votes[2], 1); /* only its vote for 1 */
	h_drop(h, 0, 0, 0);

	h_isolate(h, 1);
	h_tick(h, 2, h_election_ticks(h, 2));
	struct raft_msg v2 = v;
	v2.term = t + 2;
	assert_int_equal(h_step(h, &v2), 0);
	h_process_ready(h, 2);
	assert_int_equal(h_term(h, 2), t + 2);
	assert_int_equal(h->granted_votes[2], 2);
}

/* The leader's process is gone and both followers are told so: one of them
 * campaigns at once and wins, without an election timeout going by. */
static void test_leader_down_reported_election_at_once(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &prevote_cq);
	assert_true(h_elect(h, 1));
	uint64_t t = h_term(h, 2);
	h_isolate(h, 1);
	raft_report_leader_down(h_raft(h, 3), 1);
	raft_report_leader_down(h_raft(h, 2), 1);
	assert_int_equal(h_leader(h, 2), 0);
	assert_int_equal(raft_campaign(h_raft(h, 2)), 0);
	h_stabilize(h);
	assert_int_equal(h_state(h, 2), RAFT_LEADER);
	assert_int_equal(h_term(h, 2), t + 1);
	assert_int_equal(h_leader(h, 3), 2);
}

/* Only one follower is told, or the report names a live leader: its
 * pre-vote is refused by the follower still in the lease, the leader keeps
 * its term, and its next heartbeat makes it the reporter's leader again. */
static void test_leader_down_wrong_report_changes_nothing(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &prevote_cq);
	assert_true(h_elect(h, 1));
	uint64_t t = h_term(h, 1);
	raft_report_leader_down(h_raft(h, 2), 3); /* not its leader: ignored */
	assert_int_equal(h_leader(h, 2), 1);
	raft_report_leader_down(h_raft(h, 2), 1);
	assert_int_equal(raft_campaign(h_raft(h, 2)), 0);
	h_stabilize(h);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	for (uint64_t id = 1; id <= 3; id++)
		assert_int_equal(h_term(h, id), t);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_int_equal(h_state(h, 2), RAFT_FOLLOWER);
	assert_int_equal(h_leader(h, 2), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		HTEST(test_prevote_partitioned_node_term_does_not_grow),
		HTEST(test_prevote_rejoining_node_does_not_disturb_leader),
		HTEST(test_prevote_with_lease_up_to_date_rejoiner_does_not_disturb),
		HTEST(test_prevote_grant_changes_no_state),
		HTEST(test_without_prevote_rejoining_node_disturbs_leader),
		HTEST(test_check_quorum_isolated_leader_steps_down),
		HTEST(test_check_quorum_leader_with_majority_stays),
		HTEST(test_check_quorum_follower_ignores_vote_within_lease),
		HTEST(test_leader_down_reported_election_at_once),
		HTEST(test_leader_down_wrong_report_changes_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
