/* test_election.c: the election rules of the Raft thesis' Figure 3.1, one
 * test per rule: "Rules for Servers" (all servers, followers, candidates) and
 * the RequestVote receiver (§3.4, §3.6.1 election restriction, §3.8 persist
 * before responding). */
#include "unit.h"

/* Node 2 alone of the configuration {1,2,3}, with a preloaded log and hard
 * state: the other members are played by the test. */
static void start_follower(struct harness *h, const uint64_t *terms, size_t n, uint64_t term,
			   uint64_t vote)
{
	h_start_alone(h, 2, 3, terms, n, term, vote, NULL);
}

static struct raft_msg vote_req(uint64_t from, uint64_t term, uint64_t last_index,
				uint64_t last_term)
{
	struct raft_msg m = h_mk(RAFT_MSG_VOTE, from, 2, term);
	m.index = last_index;
	m.log_term = last_term;
	return m;
}

/* Step a VOTE on node 2, process its update, return whether the vote was
 * granted (the response must exist). A grant must leave after persistence. */
static bool vote_on_2(struct harness *h, const struct raft_msg *req)
{
	assert_int_equal(h_step(h, req), 0);
	struct h_node *n = h_node(h, 2);
	bool granted = false, found = false;
	if (h_ready_begin(h, 2)) {
		const struct raft_msg *a = h_umsg(n->u.msgs_after_persist, n->u.n_msgs_after_persist,
						  req->from, RAFT_MSG_VOTE_RESP);
		const struct raft_msg *b = h_umsg(n->u.msgs, n->u.n_msgs, req->from,
						  RAFT_MSG_VOTE_RESP);
		/* §3.8: a granted vote is persisted before it is sent. */
		assert_true(b == NULL || b->reject);
		if (a) {
			found = true;
			granted = !a->reject;
		} else if (b) {
			found = true;
		}
		h_ready_finish(h, 2);
	}
	assert_true(found);
	if (granted) {
		/* What was sent after persistence is what the store holds. */
		struct raft_hard_state hs;
		raft_memstore_hard_state(n->ms, &hs);
		assert_int_equal(hs.vote, req->from);
		assert_int_equal(hs.term, req->term);
	}
	h_drop(h, 0, 0, 0);
	return granted;
}

/* ---- All servers. ---------------------------------------------------------- */

/* "If RPC request or response contains term T > currentTerm: set currentTerm
 * = T, convert to follower (§3.3)". */
static void test_all_servers_higher_term_converts_to_follower(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	uint64_t t = h_term(h, 1);

	/* A leader, on a response carrying a higher term. */
	struct raft_msg m = h_mk(RAFT_MSG_APPEND_RESP, 2, 1, t + 2);
	m.reject = true;
	m.index = h_last_index(h, 1);
	assert_int_equal(h_step(h, &m), 0);
	struct raft_status st;
	h_status(h, 1, &st);
	assert_int_equal(st.state, RAFT_FOLLOWER);
	assert_int_equal(st.term, t + 2);
	assert_int_equal(st.vote, 0);
	assert_int_not_equal(st.leader, 1);
	/* The adopted term is persistent state: it is in the next hard state. */
	assert_true(h_ready_begin(h, 1));
	assert_true(h_node(h, 1)->u.has_hard_state);
	assert_int_equal(h_node(h, 1)->u.hard_state.term, t + 2);
	assert_int_equal(h_node(h, 1)->u.hard_state.vote, 0);
	h_ready_finish(h, 1);

	/* A candidate, on a request from the leader of a higher term. */
	assert_int_equal(raft_campaign(h_raft(h, 3)), 0);
	assert_int_equal(h_state(h, 3), RAFT_CANDIDATE);
	uint64_t t3 = h_term(h, 3);
	m = h_mk(RAFT_MSG_APPEND, 2, 3, t3 + 3);
	assert_int_equal(h_step(h, &m), 0);
	h_status(h, 3, &st);
	assert_int_equal(st.state, RAFT_FOLLOWER);
	assert_int_equal(st.term, t3 + 3);
	assert_int_equal(st.leader, 2);
}

/* A message of an older term is ignored, and counted. */
static void test_all_servers_stale_term_message_ignored(void **state)
{
	struct harness *h = *state;
	struct raft_conf c = h_conf_voters(3);
	for (uint64_t id = 1; id <= 3; id++) {
		h_node_init(h, id, &c);
		h_node_preload(h, id, NULL, 0, 3, 0);
		assert_int_equal(h_node_start(h, id, NULL), 0);
	}
	assert_true(h_elect(h, 1));
	struct raft_status before, after;
	h_status(h, 2, &before);
	assert_int_equal(before.term, 4);
	assert_int_equal(before.leader, 1);
	uint64_t dropped = h_stats(h, 2)->dropped_stale_term;

	/* A well-formed AppendEntries of term 2 that would overwrite the
	 * leader's no-op (term 4) after the bootstrap entries, and commit it. */
	uint64_t b = h_base(h, 2);
	struct raft_entry e = {.term = 2, .index = b + 1, .type = RAFT_ENTRY_NORMAL, .len = 5,
			       .data = (const uint8_t *)"stale"};
	struct raft_msg m = h_mk(RAFT_MSG_APPEND, 3, 2, 2);
	m.index = b;
	m.log_term = 1;
	m.entries = &e;
	m.n_entries = 1;
	m.commit = b + 1;
	assert_int_equal(h_step(h, &m), 0);
	/* A RequestVote of term 3 from a log as good as ours. */
	struct raft_msg v = h_mk(RAFT_MSG_VOTE, 3, 2, 3);
	v.index = before.last_index + 10;
	v.log_term = 3;
	assert_int_equal(h_step(h, &v), 0);
	h_process_ready(h, 2);

	h_status(h, 2, &after);
	assert_int_equal(after.term, 4);
	assert_int_equal(after.state, RAFT_FOLLOWER);
	assert_int_equal(after.leader, 1);
	assert_int_equal(after.vote, before.vote);
	assert_int_equal(after.last_index, before.last_index);
	assert_int_equal(after.commit, before.commit);
	assert_int_equal(h_log_term(h, 2, b + 1), 4);
	assert_int_equal(h_stats(h, 2)->dropped_stale_term, dropped + 2);
	assert_int_equal(h->granted_votes[2], 1); /* only the vote for 1 */
}

/* ---- Followers: RequestVote. ---------------------------------------------- */

/* "If votedFor is null or candidateId ... grant vote": at most one candidate
 * per term, and the same candidate again (a retransmission). */
static void test_follower_votes_at_most_once_per_term(void **state)
{
	struct harness *h = *state;
	start_follower(h, NULL, 0, 0, 0);
	uint64_t b = h_base(h, 2);
	struct raft_msg r1 = vote_req(1, 2, b, 1);
	struct raft_msg r3 = vote_req(3, 2, b, 1);
	assert_true(vote_on_2(h, &r1));
	assert_false(vote_on_2(h, &r3));
	assert_true(vote_on_2(h, &r1));
	struct raft_status st;
	h_status(h, 2, &st);
	assert_int_equal(st.term, 2);
	assert_int_equal(st.vote, 1);
	/* A new term frees the vote. */
	struct raft_msg r3b = vote_req(3, 3, b, 1);
	assert_true(vote_on_2(h, &r3b));
}

/* votedFor is persistent state: a restarted follower remembers its vote. */
static void test_follower_vote_survives_restart(void **state)
{
	struct harness *h = *state;
	start_follower(h, NULL, 0, 0, 0);
	uint64_t b = h_base(h, 2);
	struct raft_msg r1 = vote_req(1, 2, b, 1);
	assert_true(vote_on_2(h, &r1));
	h_crash(h, 2);
	assert_int_equal(h_restart(h, 2), 0);
	struct raft_status st;
	h_status(h, 2, &st);
	assert_int_equal(st.term, 2);
	assert_int_equal(st.vote, 1);
	struct raft_msg r3 = vote_req(3, 2, b, 1);
	assert_false(vote_on_2(h, &r3));

	/* A vote that was never persisted was never sent either: after a crash
	 * between raft_ready() and persistence, the node may vote again. */
	struct raft_msg r3b = vote_req(3, 3, b, 1);
	assert_int_equal(h_step(h, &r3b), 0);
	assert_true(h_ready_begin(h, 2));
	assert_int_equal(h_count(h, 2, 3, RAFT_MSG_VOTE_RESP), 0);
	h_crash(h, 2);
	assert_int_equal(h_restart(h, 2), 0);
	h_status(h, 2, &st);
	assert_int_equal(st.term, 2);
	struct raft_msg r1b = vote_req(1, 3, b, 1);
	assert_true(vote_on_2(h, &r1b));
}

/* §3.6.1: refuse a candidate whose last entry has an older term, even if its
 * log is longer; grant one with a newer last term, even if shorter. */
static void test_follower_refuses_vote_to_older_last_term(void **state)
{
	struct harness *h = *state;
	const uint64_t terms[] = {1, 1, 2};
	start_follower(h, terms, 3, 2, 0);
	uint64_t last = h_base(h, 2) + 3; /* last entry: term 2 */
	struct raft_msg longer_older = vote_req(1, 3, last + 2, 1);
	assert_false(vote_on_2(h, &longer_older));
	assert_int_equal(h_term(h, 2), 3); /* the term is adopted all the same */
	struct raft_msg shorter_newer = vote_req(3, 4, last - 1, 3);
	assert_true(vote_on_2(h, &shorter_newer));
}

/* §3.6.1: with equal last terms, the longer log is more up-to-date. */
static void test_follower_refuses_vote_to_shorter_log_same_last_term(void **state)
{
	struct harness *h = *state;
	const uint64_t terms[] = {1, 1, 2};
	start_follower(h, terms, 3, 2, 0);
	uint64_t last = h_base(h, 2) + 3;
	struct raft_msg shorter = vote_req(1, 3, last - 1, 2);
	assert_false(vote_on_2(h, &shorter));
	struct raft_msg equal = vote_req(3, 4, last, 2);
	assert_true(vote_on_2(h, &equal));
	struct raft_msg longer = vote_req(1, 5, last + 1, 2);
	assert_true(vote_on_2(h, &longer));
}

/* "If election timeout elapses without receiving AppendEntries RPC from
 * current leader or granting vote to candidate: convert to candidate". The
 * timeout is randomized in [election_ticks, 2 * election_ticks). */
static void test_follower_election_timeout_starts_election(void **state)
{
	struct harness *h = *state;
	start_follower(h, NULL, 0, 0, 0);
	uint64_t t = h_term(h, 2);
	uint32_t e = h_election_ticks(h, 2);
	h_tick(h, 2, e - 1);
	h_process_ready(h, 2);
	assert_int_equal(h_state(h, 2), RAFT_FOLLOWER);
	assert_int_equal(h_term(h, 2), t);
	assert_int_equal(h_count(h, 2, 0, RAFT_MSG_VOTE), 0);
	h_tick(h, 2, e + 1);
	h_process_ready(h, 2);
	assert_int_equal(h_state(h, 2), RAFT_CANDIDATE);
	assert_int_equal(h_term(h, 2), t + 1);
	assert_int_equal(h_count(h, 2, 1, RAFT_MSG_VOTE), 1);
	assert_int_equal(h_count(h, 2, 3, RAFT_MSG_VOTE), 1);
	assert_int_equal(h_stats(h, 2)->elections_started, 1);
}

/* The other half of the rule: contact from the leader resets the timer. */
static void test_follower_leader_contact_prevents_election(void **state)
{
	struct harness *h = *state;
	start_follower(h, NULL, 0, 1, 0);
	uint32_t e = h_election_ticks(h, 2);
	for (uint32_t i = 0; i < 10 * e; i++) {
		if (i % (e / 2 ? e / 2 : 1) == 0) {
			struct raft_msg hb = h_mk(RAFT_MSG_HEARTBEAT, 1, 2, 1);
			assert_int_equal(h_step(h, &hb), 0);
		}
		h_tick(h, 2, 1);
		h_process_ready(h, 2);
		h_drop(h, 0, 0, 0);
	}
	assert_int_equal(h_state(h, 2), RAFT_FOLLOWER);
	assert_int_equal(h_term(h, 2), 1);
	assert_int_equal(h_leader(h, 2), 1);
	assert_int_equal(h_stats(h, 2)->elections_started, 0);
}

/* Granting a vote also resets the timer ("... or granting vote to
 * candidate"): a follower that just voted does not start its own election
 * before a full minimum timeout has passed. */
static void test_follower_granting_vote_resets_timer(void **state)
{
	struct harness *h = *state;
	start_follower(h, NULL, 0, 0, 0);
	uint32_t e = h_election_ticks(h, 2);
	h_tick(h, 2, e - 1);
	struct raft_msg r1 = vote_req(1, 2, h_base(h, 2), 1);
	assert_true(vote_on_2(h, &r1));
	h_tick(h, 2, e - 1);
	h_process_ready(h, 2);
	assert_int_equal(h_state(h, 2), RAFT_FOLLOWER);
	assert_int_equal(h_term(h, 2), 2);
}

/* ---- Candidates. ------------------------------------------------------------ */

/* "On conversion to candidate: increment currentTerm, vote for self ... send
 * RequestVote RPCs": the requests leave only after term and vote are
 * persisted (§3.8), so they are in msgs_after_persist. */
static void test_candidate_persists_term_and_vote_before_requests(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	uint64_t t = h_term(h, 1);
	assert_int_equal(raft_campaign(h_raft(h, 1)), 0);
	assert_true(h_ready_begin(h, 1));
	const struct raft_update *u = &h_node(h, 1)->u;
	assert_int_equal(u->state, RAFT_CANDIDATE);
	assert_true(u->has_hard_state);
	assert_int_equal(u->hard_state.term, t + 1);
	assert_int_equal(u->hard_state.vote, 1);
	assert_int_equal(h_ucount(u->msgs, u->n_msgs, RAFT_MSG_VOTE), 0);
	assert_int_equal(h_ucount(u->msgs_after_persist, u->n_msgs_after_persist, RAFT_MSG_VOTE), 2);
	const struct raft_msg *v = h_umsg(u->msgs_after_persist, u->n_msgs_after_persist, 2,
					  RAFT_MSG_VOTE);
	assert_non_null(v);
	assert_int_equal(v->term, t + 1);
	assert_int_equal(v->index, h_last_index(h, 1));
	assert_int_equal(v->log_term, h_log_term(h, 1, v->index));
	assert_int_equal(h_count(h, 1, 0, RAFT_MSG_VOTE), 0); /* nothing sent yet */

	/* A crash before persistence: no request left, nothing was kept. */
	h_crash(h, 1);
	assert_int_equal(h_restart(h, 1), 0);
	assert_int_equal(h_term(h, 1), t);
	assert_int_equal(h_count(h, 1, 0, RAFT_MSG_VOTE), 0);

	/* Done properly, the requests follow the persisted hard state. */
	assert_int_equal(raft_campaign(h_raft(h, 1)), 0);
	h_process_ready(h, 1);
	struct raft_hard_state hs;
	raft_memstore_hard_state(h_node(h, 1)->ms, &hs);
	assert_int_equal(hs.term, t + 1);
	assert_int_equal(hs.vote, 1);
	assert_int_equal(h_count(h, 1, 0, RAFT_MSG_VOTE), 2);
}

/* "If votes received from majority of servers: become leader": with 5
 * voters, the candidate and one vote are not enough, two votes are. */
static void test_candidate_majority_becomes_leader(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 5, NULL);
	uint64_t t = h_term(h, 1);
	assert_int_equal(raft_campaign(h_raft(h, 1)), 0);
	h_process_ready(h, 1);
	assert_int_equal(h_count(h, 1, 0, RAFT_MSG_VOTE), 4);
	h_deliver(h, 1, 2, RAFT_MSG_VOTE);
	h_process_ready(h, 2);
	h_deliver(h, 2, 1, RAFT_MSG_VOTE_RESP);
	assert_int_equal(h_state(h, 1), RAFT_CANDIDATE);
	h_deliver(h, 1, 3, RAFT_MSG_VOTE);
	h_process_ready(h, 3);
	h_deliver(h, 3, 1, RAFT_MSG_VOTE_RESP);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	assert_int_equal(h_term(h, 1), t + 1);
	assert_int_equal(h_leader(h, 1), 1);
	assert_int_equal(h_stats(h, 1)->leader_changes >= 1, true);
}

/* Refused votes count for nothing: with a majority refusing, the candidate
 * does not become leader. */
static void test_candidate_refused_votes_do_not_elect(void **state)
{
	struct harness *h = *state;
	struct raft_conf c = h_conf_voters(3);
	const uint64_t longer[] = {1, 1};
	for (uint64_t id = 1; id <= 3; id++) {
		h_node_init(h, id, &c);
		h_node_preload(h, id, longer, id == 1 ? 1 : 2, 1, 0);
		assert_int_equal(h_node_start(h, id, NULL), 0);
	}
	assert_int_equal(raft_campaign(h_raft(h, 1)), 0);
	h_stabilize(h);
	assert_int_not_equal(h_state(h, 1), RAFT_LEADER);
	assert_int_equal(h->granted_votes[2], 0);
	assert_int_equal(h->granted_votes[3], 0);
}

/* "If AppendEntries RPC received from new leader: convert to follower". */
static void test_candidate_append_from_new_leader_becomes_follower(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	uint64_t t = h_term(h, 1) + 1;
	assert_int_equal(raft_campaign(h_raft(h, 1)), 0);
	assert_int_equal(raft_campaign(h_raft(h, 3)), 0);
	assert_int_equal(h_state(h, 1), RAFT_CANDIDATE);
	assert_int_equal(h_state(h, 3), RAFT_CANDIDATE);
	/* Node 2 won term t: its AppendEntries and heartbeats carry term t. */
	struct raft_msg a = h_mk(RAFT_MSG_APPEND, 2, 1, t);
	assert_int_equal(h_step(h, &a), 0);
	struct raft_msg hb = h_mk(RAFT_MSG_HEARTBEAT, 2, 3, t);
	assert_int_equal(h_step(h, &hb), 0);
	for (uint64_t id = 1; id <= 3; id += 2) {
		struct raft_status st;
		h_status(h, id, &st);
		assert_int_equal(st.state, RAFT_FOLLOWER);
		assert_int_equal(st.term, t);
		assert_int_equal(st.leader, 2);
	}
}

/* "If election timeout elapses: start new election". */
static void test_candidate_timeout_starts_new_election(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	uint64_t t = h_term(h, 1);
	assert_int_equal(raft_campaign(h_raft(h, 1)), 0);
	h_process_ready(h, 1);
	h_drop(h, 0, 0, 0); /* the votes are lost */
	h_tick_election(h, 1);
	assert_int_equal(h_state(h, 1), RAFT_CANDIDATE);
	assert_true(h_term(h, 1) >= t + 2);
	t = h_term(h, 1);
	assert_true(h_ready_begin(h, 1));
	const struct raft_update *u = &h_node(h, 1)->u;
	assert_int_equal(u->hard_state.term, t);
	assert_int_equal(u->hard_state.vote, 1);
	const struct raft_msg *v = h_umsg(u->msgs_after_persist, u->n_msgs_after_persist, 3,
					  RAFT_MSG_VOTE);
	assert_non_null(v);
	assert_int_equal(v->term, t);
	h_ready_finish(h, 1);
	h_stabilize(h);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	assert_int_equal(h_term(h, 1), t);
}

/* A single voter elects itself: its own vote is a majority. */
static void test_candidate_single_voter_elects_itself(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 1, NULL);
	uint64_t t = h_term(h, 1);
	assert_true(h_elect(h, 1));
	assert_int_equal(h_term(h, 1), t + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		HTEST(test_all_servers_higher_term_converts_to_follower),
		HTEST(test_all_servers_stale_term_message_ignored),
		HTEST(test_follower_votes_at_most_once_per_term),
		HTEST(test_follower_vote_survives_restart),
		HTEST(test_follower_refuses_vote_to_older_last_term),
		HTEST(test_follower_refuses_vote_to_shorter_log_same_last_term),
		HTEST(test_follower_election_timeout_starts_election),
		HTEST(test_follower_leader_contact_prevents_election),
		HTEST(test_follower_granting_vote_resets_timer),
		HTEST(test_candidate_persists_term_and_vote_before_requests),
		HTEST(test_candidate_majority_becomes_leader),
		HTEST(test_candidate_refused_votes_do_not_elect),
		HTEST(test_candidate_append_from_new_leader_becomes_follower),
		HTEST(test_candidate_timeout_starts_new_election),
		HTEST(test_candidate_single_voter_elects_itself),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
