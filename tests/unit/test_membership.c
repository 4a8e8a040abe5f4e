/* test_membership.c: learners (thesis §4.2.1) and one-server-at-a-time
 * membership changes (§4.1, with the rule that a new leader changes nothing
 * before its first entry is applied), driven through the public API. */
#include "unit.h"

static int propose_cc(struct harness *h, uint64_t on, uint32_t type, uint64_t id, uint64_t *index)
{
	struct raft_conf_change cc = {.type = type, .id = id};
	return raft_propose_conf_change(h_raft(h, on), &cc, index);
}

static uint32_t role_on(struct harness *h, uint64_t on, uint64_t id)
{
	struct raft_status st;
	h_status(h, on, &st);
	return raft_conf_role(&st.conf, id);
}

/* A learner never starts an election, however long it hears nothing. */
static void test_learner_never_campaigns(void **state)
{
	struct harness *h = *state;
	h_cluster_learners(h, 3, 1, NULL);
	assert_true(h_elect(h, 1));
	uint64_t t = h_term(h, 4);
	h_isolate(h, 4);
	for (int i = 0; i < 5; i++) {
		h_tick_election(h, 4);
		h_stabilize(h);
	}
	assert_int_equal(h_state(h, 4), RAFT_FOLLOWER);
	assert_int_equal(h_term(h, 4), t);
	assert_int_equal(h->sent[4][RAFT_MSG_VOTE], 0);
	assert_int_equal(h->sent[4][RAFT_MSG_PREVOTE], 0);
	assert_int_equal(h_stats(h, 4)->elections_started, 0);
	assert_int_equal(raft_campaign(h_raft(h, 4)), RAFT_ENOTVOTER);
	assert_int_equal(h_term(h, 4), t);
}

/* A candidate asks only voters, and a learner's grant is not counted. */
static void test_learner_vote_not_counted(void **state)
{
	struct harness *h = *state;
	h_cluster_learners(h, 3, 1, NULL);
	assert_int_equal(raft_campaign(h_raft(h, 1)), 0);
	h_process_ready(h, 1);
	assert_int_equal(h_count(h, 1, 4, RAFT_MSG_VOTE), 0);
	h_drop(h, 0, 0, 0);
	struct raft_msg g = h_mk(RAFT_MSG_VOTE_RESP, 4, 1, h_term(h, 1));
	assert_int_equal(h_step(h, &g), 0);
	assert_int_equal(h_state(h, 1), RAFT_CANDIDATE); /* 1 + learner: not 2 of 3 */
	g.from = 2;
	assert_int_equal(h_step(h, &g), 0);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
}

/* A learner's acknowledgement does not count toward commitment. */
static void test_learner_ack_not_counted_for_commit(void **state)
{
	struct harness *h = *state;
	h_cluster_learners(h, 2, 1, NULL); /* voters 1, 2; learner 3 */
	assert_true(h_elect(h, 1));
	h_isolate(h, 2);
	uint64_t ix;
	assert_int_equal(h_propose(h, 1, "x", &ix), 0);
	h_stabilize(h);
	struct raft_progress_info pi;
	assert_true(h_progress(h, 1, 3, &pi));
	assert_int_equal(pi.match, ix); /* the learner holds it ... */
	assert_true(h_commit(h, 1) < ix); /* ... which does not commit it */
	h_recover(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_int_equal(h_commit(h, 1), ix);
	assert_string_equal(h_buf_str(&h_node(h, 3)->sm), "x");
}

/* RAFT_CC_ADD_VOTER promotes a learner: from then on it counts. */
static void test_learner_promoted_by_add_voter(void **state)
{
	struct harness *h = *state;
	h_cluster_learners(h, 2, 1, NULL);
	assert_true(h_elect(h, 1));
	uint64_t icc;
	assert_int_equal(propose_cc(h, 1, RAFT_CC_ADD_VOTER, 3, &icc), 0);
	assert_true(icc > 0);
	assert_int_equal(role_on(h, 1, 3), RAFT_LEARNER); /* not before it applies */
	h_stabilize(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	for (uint64_t id = 1; id <= 3; id++) {
		assert_int_equal(role_on(h, id, 3), RAFT_VOTER);
		/* the bootstrap's entries, then the promotion */
		assert_int_equal(h_node(h, id)->n_applied_conf, h_base(h, id) + 1);
	}
	h_isolate(h, 2);
	uint64_t iy;
	assert_int_equal(h_propose(h, 1, "y", &iy), 0);
	h_stabilize(h);
	assert_int_equal(h_commit(h, 1), iy); /* 1 and 3 of {1, 2, 3} */
	/* And it may now campaign. */
	h_recover(h);
	assert_int_equal(raft_campaign(h_raft(h, 3)), 0);
	h_stabilize(h);
	assert_int_equal(h_state(h, 3), RAFT_LEADER);
}

/* A new member joins as a learner and catches up on the whole log. */
static void test_learner_added_catches_up(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(h_propose(h, 1, "a", NULL), 0);
	assert_int_equal(h_propose(h, 1, "b", NULL), 0);
	h_stabilize(h);
	/* A joiner starts with an empty store: the log it receives (the
	 * bootstrap's entries first) tells it the configuration. */
	h_node_init(h, 4, NULL);
	assert_int_equal(h_node_start(h, 4, NULL), 0);
	assert_int_equal(propose_cc(h, 1, RAFT_CC_ADD_LEARNER, 4, NULL), 0);
	h_stabilize(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_string_equal(h_buf_str(&h_node(h, 4)->sm), "a,b");
	assert_int_equal(role_on(h, 4, 4), RAFT_LEARNER);
	assert_int_equal(role_on(h, 1, 4), RAFT_LEARNER);
	assert_int_equal(h_commit(h, 4), h_commit(h, 1));
	/* It replicates new entries like any follower. */
	assert_int_equal(h_propose(h, 1, "c", NULL), 0);
	h_stabilize(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_string_equal(h_buf_str(&h_node(h, 4)->sm), "a,b,c");
}

/* One change at a time: a second one is refused while the first is not
 * applied, accepted once it is. */
static void test_conf_change_refused_while_one_pending(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(propose_cc(h, 1, RAFT_CC_ADD_LEARNER, 4, NULL), 0);
	assert_int_equal(propose_cc(h, 1, RAFT_CC_ADD_LEARNER, 5, NULL), RAFT_ECONFPENDING);
	h_process_ready(h, 1);
	assert_int_equal(propose_cc(h, 1, RAFT_CC_REMOVE, 3, NULL), RAFT_ECONFPENDING);
	h_stabilize(h); /* committed and applied on the leader */
	assert_int_equal(role_on(h, 1, 4), RAFT_LEARNER);
	assert_int_equal(propose_cc(h, 1, RAFT_CC_ADD_LEARNER, 5, NULL), 0);
	h_stabilize(h);
	assert_int_equal(role_on(h, 1, 5), RAFT_LEARNER);
	/* Ordinary proposals are never held back by a pending change. */
	assert_int_equal(propose_cc(h, 1, RAFT_CC_REMOVE, 5, NULL), 0);
	assert_int_equal(h_propose(h, 1, "x", NULL), 0);
}

/* §4.1's fix: a new leader accepts no change until the entry of its own
 * term is applied (committed is not enough). */
static void test_new_leader_refuses_conf_change_until_first_entry_applied(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_int_equal(raft_campaign(h_raft(h, 1)), 0);
	h_process_ready(h, 1);
	h_deliver_all(h);
	h_process_ready(h, 2);
	h_process_ready(h, 3);
	h_deliver_all(h);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	assert_int_equal(propose_cc(h, 1, RAFT_CC_ADD_LEARNER, 4, NULL), RAFT_ECONFPENDING);
	h_process_ready(h, 1); /* the no-op goes out and is persisted */
	assert_int_equal(propose_cc(h, 1, RAFT_CC_ADD_LEARNER, 4, NULL), RAFT_ECONFPENDING);
	h_deliver_all(h);
	h_process_ready(h, 2);
	h_process_ready(h, 3);
	h_deliver(h, 0, 1, RAFT_MSG_APPEND_RESP);
	assert_int_equal(h_commit(h, 1), h_last_index(h, 1)); /* committed ... */
	assert_int_equal(propose_cc(h, 1, RAFT_CC_ADD_LEARNER, 4, NULL), RAFT_ECONFPENDING);
	h_process_ready(h, 1); /* ... and now applied */
	assert_int_equal(h_node(h, 1)->applied, h_commit(h, 1));
	assert_int_equal(propose_cc(h, 1, RAFT_CC_ADD_LEARNER, 4, NULL), 0);
}

/* Only the leader takes changes; invalid changes are refused up front. */
static void test_conf_change_refused_off_leader_or_invalid(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 2, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(propose_cc(h, 2, RAFT_CC_ADD_LEARNER, 4, NULL), RAFT_ENOTLEADER);
	assert_int_equal(propose_cc(h, 1, RAFT_CC_REMOVE, 9, NULL), RAFT_EUNKNOWNMEMBER);
	assert_int_equal(propose_cc(h, 1, 77, 4, NULL), RAFT_EINVAL);
	assert_int_equal(propose_cc(h, 1, RAFT_CC_ADD_LEARNER, 0, NULL), RAFT_EINVAL);
	uint64_t last = h_last_index(h, 1);
	/* Removing voters one at a time down to none: the last is refused. */
	assert_int_equal(propose_cc(h, 1, RAFT_CC_REMOVE, 2, NULL), 0);
	h_stabilize(h);
	assert_int_equal(propose_cc(h, 1, RAFT_CC_REMOVE, 1, NULL), RAFT_EINVAL);
	assert_int_equal(h_last_index(h, 1), last + 1);
}

/* Removing a member: it no longer counts, and the leader stops sending. */
static void test_removed_member_no_longer_counts(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(propose_cc(h, 1, RAFT_CC_REMOVE, 3, NULL), 0);
	h_stabilize(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_int_equal(role_on(h, 1, 3), 0);
	assert_int_equal(role_on(h, 2, 3), 0);
	struct raft_progress_info pi;
	assert_false(h_progress(h, 1, 3, &pi));
	h_crash(h, 3);
	uint64_t ix;
	assert_int_equal(h_propose(h, 1, "x", &ix), 0);
	h_stabilize(h);
	assert_int_equal(h_commit(h, 1), ix); /* 1 and 2 of {1, 2} */
	h_tick_heartbeat(h, 1);
	h_process_ready(h, 1);
	assert_int_equal(h_count(h, 1, 3, 0), 0);
}

/* A leader that removes itself steps down once the change is applied, and
 * the remaining members elect a leader among themselves (§4.2.2). */
static void test_removed_leader_steps_down(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(propose_cc(h, 1, RAFT_CC_REMOVE, 1, NULL), 0);
	h_stabilize(h);
	assert_int_not_equal(h_state(h, 1), RAFT_LEADER);
	assert_int_equal(raft_campaign(h_raft(h, 1)), RAFT_ENOTVOTER);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	h_tick_election(h, 2);
	h_stabilize(h);
	assert_int_equal(h_state(h, 2), RAFT_LEADER);
	uint64_t ix;
	assert_int_equal(h_propose(h, 2, "after", &ix), 0);
	h_stabilize(h);
	assert_int_equal(h_commit(h, 2), ix);
	assert_int_equal(role_on(h, 2, 1), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		HTEST(test_learner_never_campaigns),
		HTEST(test_learner_vote_not_counted),
		HTEST(test_learner_ack_not_counted_for_commit),
		HTEST(test_learner_promoted_by_add_voter),
		HTEST(test_learner_added_catches_up),
		HTEST(test_conf_change_refused_while_one_pending),
		HTEST(test_new_leader_refuses_conf_change_until_first_entry_applied),
		HTEST(test_conf_change_refused_off_leader_or_invalid),
		HTEST(test_removed_member_no_longer_counts),
		HTEST(test_removed_leader_steps_down),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
