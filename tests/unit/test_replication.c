/* test_replication.c: log replication rules of the Raft thesis' Figure 3.1,
 * one test per rule: the AppendEntries receiver (§3.5), the leader's rules
 * (heartbeats, nextIndex/matchIndex, §3.6.2 commitment), the leader's no-op
 * (§6.4), fast back-off (§3.5 hints), and the loop contract's split between
 * replicating and persisting (§10.2.1). */
#include "unit.h"

#include <stdio.h>

static struct raft_msg append(uint64_t from, uint64_t to, uint64_t term, uint64_t prev_index,
			      uint64_t prev_term, const struct raft_entry *e, uint32_t n,
			      uint64_t commit)
{
	struct raft_msg m = h_mk(RAFT_MSG_APPEND, from, to, term);
	m.index = prev_index;
	m.log_term = prev_term;
	m.entries = e;
	m.n_entries = n;
	m.commit = commit;
	return m;
}

static struct raft_entry ent(uint64_t term, uint64_t index, const char *s)
{
	struct raft_entry e = {.term = term,
			       .index = index,
			       .type = RAFT_ENTRY_NORMAL,
			       .len = (uint32_t)strlen(s),
			       .data = (const uint8_t *)s};
	return e;
}

/* Step m on its target, process the update, return the APPEND_RESP it sent
 * (copied), failing if there is none. */
static struct raft_msg step_and_respond(struct harness *h, const struct raft_msg *m)
{
	assert_int_equal(h_step(h, m), 0);
	h_process_ready(h, m->to);
	const struct raft_msg *r = h_find(h, m->to, m->from, RAFT_MSG_APPEND_RESP, 0);
	assert_non_null(r);
	struct raft_msg copy = *r;
	copy.entries = NULL;
	copy.n_entries = 0;
	h_drop(h, 0, 0, 0);
	return copy;
}

/* ---- The AppendEntries receiver. ------------------------------------------- */

/* "Reply false if log doesn't contain an entry at prevLogIndex whose term
 * matches prevLogTerm": a wrong term, and an index past the end. Nothing in
 * such a message is appended. The hints follow raft.h (§3.5). */
static void test_append_rejected_without_matching_prev(void **state)
{
	struct harness *h = *state;
	const uint64_t terms[] = {1, 1, 1};
	h_start_alone(h, 2, 3, terms, 3, 2, 0, NULL);
	uint64_t last = h_base(h, 2) + 3; /* all of term 1 */
	struct raft_entry e = ent(2, last + 1, "x");

	struct raft_msg m = append(1, 2, 2, last, 2, &e, 1, 0);
	struct raft_msg r = step_and_respond(h, &m);
	assert_true(r.reject);
	assert_int_equal(r.index, last);
	assert_int_equal(r.hint_term, 1);
	assert_in_range(r.hint_index, 1, last);

	m = append(1, 2, 2, last + 2, 1, &e, 1, 0);
	m.entries = NULL;
	m.n_entries = 0;
	r = step_and_respond(h, &m);
	assert_true(r.reject);
	assert_int_equal(r.index, last + 2);
	assert_int_equal(r.hint_index, last); /* our last index: the log is shorter */

	assert_int_equal(h_last_index(h, 2), last);
	for (uint64_t i = 1; i <= last; i++)
		assert_int_equal(h_log_term(h, 2, i), 1);
	assert_int_equal(h_leader(h, 2), 1); /* a rejected append is still contact */
}

/* "If an existing entry conflicts with a new one (same index but different
 * terms), delete the existing entry and all that follow it". */
static void test_append_conflict_deletes_entry_and_all_that_follow(void **state)
{
	struct harness *h = *state;
	const uint64_t terms[] = {1, 1, 1, 1};
	h_start_alone(h, 2, 3, terms, 4, 1, 0, NULL);
	uint64_t b = h_base(h, 2); /* entries b+1 .. b+4 of term 1 */
	struct raft_entry e = ent(2, b + 2, "x");
	struct raft_msg m = append(1, 2, 2, b + 1, 1, &e, 1, 0);
	assert_int_equal(h_step(h, &m), 0);
	assert_int_equal(h_last_index(h, 2), b + 2);
	assert_true(h_ready_begin(h, 2));
	const struct raft_update *u = &h_node(h, 2)->u;
	assert_int_equal(u->n_entries, 1);
	assert_int_equal(u->entries[0].index, b + 2); /* the store truncates from there */
	assert_int_equal(u->entries[0].term, 2);
	h_ready_finish(h, 2);
	assert_int_equal(h_log_term(h, 2, b + 1), 1);
	assert_int_equal(h_log_term(h, 2, b + 2), 2);
	assert_int_equal(h_log_term(h, 2, b + 3), 0);
	assert_int_equal(h_log_term(h, 2, b + 4), 0);
	const struct raft_msg *r = h_find(h, 2, 1, RAFT_MSG_APPEND_RESP, 0);
	assert_non_null(r);
	assert_false(r->reject);
	assert_int_equal(r->index, b + 2);
}

/* The same rule, the other way: entries that are already there and agree are
 * not deleted (a delayed, duplicated AppendEntries must not truncate). */
static void test_append_matching_entries_are_kept(void **state)
{
	struct harness *h = *state;
	const uint64_t terms[] = {1, 1, 1, 1};
	h_start_alone(h, 2, 3, terms, 4, 1, 0, NULL);
	uint64_t b = h_base(h, 2);
	struct raft_entry e = ent(1, b + 2, "dup");
	struct raft_msg m = append(1, 2, 1, b + 1, 1, &e, 1, 0);
	struct raft_msg r = step_and_respond(h, &m);
	assert_false(r.reject);
	assert_in_range(r.index, b + 2, b + 4);
	assert_int_equal(h_last_index(h, 2), b + 4);
	assert_int_equal(h_log_term(h, 2, b + 4), 1);
}

/* "Append any new entries not already in the log", acknowledged only after
 * they are persisted (§3.8): the response is in msgs_after_persist. */
static void test_append_new_entries_appended_and_acked_after_persist(void **state)
{
	struct harness *h = *state;
	const uint64_t terms[] = {1, 1};
	h_start_alone(h, 2, 3, terms, 2, 1, 0, NULL);
	uint64_t last = h_base(h, 2) + 2;
	struct raft_entry e[2] = {ent(1, last + 1, "a"), ent(1, last + 2, "b")};
	struct raft_msg m = append(1, 2, 1, last, 1, e, 2, 0);
	assert_int_equal(h_step(h, &m), 0);
	assert_true(h_ready_begin(h, 2));
	const struct raft_update *u = &h_node(h, 2)->u;
	assert_int_equal(u->n_entries, 2);
	assert_int_equal(u->entries[0].index, last + 1);
	assert_int_equal(u->entries[1].index, last + 2);
	assert_memory_equal(u->entries[1].data, "b", 1);
	assert_null(h_umsg(u->msgs, u->n_msgs, 1, RAFT_MSG_APPEND_RESP));
	const struct raft_msg *r = h_umsg(u->msgs_after_persist, u->n_msgs_after_persist, 1,
					  RAFT_MSG_APPEND_RESP);
	assert_non_null(r);
	assert_false(r->reject);
	assert_int_equal(r->index, last + 2);
	assert_int_equal(h_count(h, 2, 1, RAFT_MSG_APPEND_RESP), 0);
	h_ready_finish(h, 2);
	assert_int_equal(h_count(h, 2, 1, RAFT_MSG_APPEND_RESP), 1);
	assert_int_equal(h_log_term(h, 2, last + 1), 1);
	assert_int_equal(h_log_term(h, 2, last + 2), 1);
}

/* "If leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index
 * of last new entry)": entries past what the message covers are not known to
 * match the leader's and are not committed; commit never goes back. */
static void test_append_commit_is_min_of_leader_commit_and_last_new_entry(void **state)
{
	struct harness *h = *state;
	const uint64_t terms[] = {1, 1, 1, 1};
	h_start_alone(h, 2, 3, terms, 4, 1, 0, NULL);
	uint64_t b = h_base(h, 2); /* b+1 .. b+4 of term 1, not committed */
	assert_int_equal(h_commit(h, 2), b);

	struct raft_msg m = append(1, 2, 2, b + 2, 1, NULL, 0, b + 4);
	step_and_respond(h, &m);
	assert_int_equal(h_commit(h, 2), b + 2);

	struct raft_entry e = ent(2, b + 3, "y");
	m = append(1, 2, 2, b + 2, 1, &e, 1, b + 10);
	step_and_respond(h, &m);
	assert_int_equal(h_commit(h, 2), b + 3);
	assert_int_equal(h_last_index(h, 2), b + 3);

	m = append(1, 2, 2, b + 3, 2, NULL, 0, 1);
	step_and_respond(h, &m);
	assert_int_equal(h_commit(h, 2), b + 3);

	/* What is committed is applied, in order. */
	assert_int_equal(h_node(h, 2)->applied, b + 3);
	char want[64];
	snprintf(want, sizeof want, "t1i%d,t1i%d,y", (int)b + 1, (int)b + 2);
	assert_string_equal(h_buf_str(&h_node(h, 2)->sm), want);
}

/* ---- All servers: apply. ------------------------------------------------------- */

/* "If commitIndex > lastApplied: increment lastApplied, apply" - on every
 * member, in log order, the same entries (the harness checks each index is
 * applied with one entry everywhere). */
static void test_all_servers_apply_committed_entries_in_order(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(h_propose(h, 1, "a", NULL), 0);
	assert_int_equal(h_propose(h, 1, "b", NULL), 0);
	h_stabilize(h);
	assert_int_equal(h_propose(h, 3, "c", NULL), 0); /* forwarded */
	h_stabilize(h);
	for (uint64_t id = 1; id <= 3; id++) {
		assert_string_equal(h_buf_str(&h_node(h, id)->sm), "a,b,c");
		assert_int_equal(h_node(h, id)->applied, h_commit(h, id));
		assert_int_equal(h_commit(h, id), h_last_index(h, 1));
	}
}

/* ---- Leaders. ---------------------------------------------------------------- */

/* "Upon election: send initial empty AppendEntries RPCs (heartbeat) to each
 * server; repeat during idle periods to prevent election timeouts". */
static void test_leader_sends_heartbeats_when_idle(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	uint64_t t = h_term(h, 1);
	h_tick_heartbeat(h, 1);
	h_process_ready(h, 1);
	assert_int_equal(h_count(h, 1, 2, RAFT_MSG_HEARTBEAT), 1);
	assert_int_equal(h_count(h, 1, 3, RAFT_MSG_HEARTBEAT), 1);
	h_stabilize(h);
	/* Time passes for everyone, many election timeouts: nothing changes. */
	uint32_t e = h_election_ticks(h, 1);
	for (uint32_t i = 0; i < 6 * e; i++) {
		for (uint64_t id = 1; id <= 3; id++)
			h_tick(h, id, 1);
		h_stabilize(h);
	}
	for (uint64_t id = 1; id <= 3; id++) {
		assert_int_equal(h_term(h, id), t);
		assert_int_equal(h_leader(h, id), 1);
		assert_int_equal(h_stats(h, id)->elections_started, id == 1 ? 1 : 0);
	}
}

/* A new leader appends a no-op entry of its term (§6.4, and the fix of the
 * one-server-change bug in §4.1), replicated and committed like any entry. */
static void test_leader_appends_noop_on_election(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	uint64_t last = h_last_index(h, 1);
	uint64_t t = h_term(h, 1) + 1;
	assert_int_equal(raft_campaign(h_raft(h, 1)), 0);
	h_process_ready(h, 1);
	h_deliver(h, 1, 0, RAFT_MSG_VOTE);
	h_process_ready(h, 2);
	h_process_ready(h, 3);
	h_deliver(h, 0, 1, RAFT_MSG_VOTE_RESP);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	assert_true(h_ready_begin(h, 1));
	const struct raft_update *u = &h_node(h, 1)->u;
	assert_int_equal(u->n_entries, 1);
	assert_int_equal(u->entries[0].type, RAFT_ENTRY_NOOP);
	assert_int_equal(u->entries[0].term, t);
	assert_int_equal(u->entries[0].index, last + 1);
	const struct raft_msg *a = h_umsg(u->msgs, u->n_msgs, 2, RAFT_MSG_APPEND);
	assert_non_null(a);
	assert_int_equal(a->n_entries, 1);
	assert_int_equal(a->entries[0].type, RAFT_ENTRY_NOOP);
	h_ready_finish(h, 1);
	h_stabilize(h);
	for (uint64_t id = 1; id <= 3; id++) {
		assert_int_equal(h_node(h, id)->applied, last + 1);
		assert_int_equal(h_node(h, id)->n_applied_normal, 0);
	}
	assert_true(h->committed[last + 1].set);
	assert_int_equal(h->committed[last + 1].type, RAFT_ENTRY_NOOP);
}

/* Elect node 1 of a preset cluster step by step, leaving the new leader's
 * first update unprocessed and nothing in flight. */
static void elect_1_no_stabilize(struct harness *h, uint32_t n)
{
	assert_int_equal(raft_campaign(h_raft(h, 1)), 0);
	h_process_ready(h, 1);
	h_deliver(h, 1, 0, RAFT_MSG_VOTE);
	for (uint64_t id = 2; id <= n; id++)
		h_process_ready(h, id);
	h_deliver(h, 0, 1, RAFT_MSG_VOTE_RESP);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	h_drop(h, 0, 0, 0);
}

/* "If AppendEntries fails because of log inconsistency: decrement nextIndex
 * and retry", with the §3.5 optimization: the follower's hint (its term at
 * the conflict) lets the leader skip that whole term in one round trip. */
static void test_leader_fast_backoff_skips_conflicting_term(void **state)
{
	struct harness *h = *state;
	const struct h_preset p[3] = {
		{7, {1, 1, 1, 2, 2, 3, 3}, 3},
		{9, {1, 1, 1, 2, 2, 2, 2, 2, 2}, 3},
		{7, {1, 1, 1, 2, 2, 3, 3}, 3},
	};
	h_cluster_preset(h, 3, p, NULL);
	uint64_t b = h_base(h, 1);
	elect_1_no_stabilize(h, 3);
	h_process_ready(h, 1); /* the no-op at b+8, term 4 */
	const struct raft_msg *a = h_find(h, 1, 2, RAFT_MSG_APPEND, 0);
	assert_non_null(a);
	assert_int_equal(a->index, b + 7);
	assert_int_equal(a->log_term, 3);
	h_deliver(h, 1, 2, RAFT_MSG_APPEND);
	h_process_ready(h, 2);
	const struct raft_msg *r = h_find(h, 2, 1, RAFT_MSG_APPEND_RESP, 0);
	assert_non_null(r);
	assert_true(r->reject);
	assert_int_equal(r->index, b + 7);
	assert_int_equal(r->hint_term, 2);
	h_deliver(h, 2, 1, RAFT_MSG_APPEND_RESP);
	h_process_ready(h, 1);
	/* Not b+6 (one step back) but b+5, the leader's last entry of term 2. */
	a = h_find(h, 1, 2, RAFT_MSG_APPEND, 0);
	assert_non_null(a);
	assert_int_equal(a->index, b + 5);
	assert_int_equal(a->log_term, 2);
	h_stabilize(h);
	assert_int_equal(h_last_index(h, 2), b + 8);
	for (uint64_t i = 1; i <= b + 8; i++)
		assert_int_equal(h_log_term(h, 2, i), h_log_term(h, 1, i));
	assert_int_equal(h_log_term(h, 2, b + 9), 0);
	assert_int_equal(h_commit(h, 2), b + 8);
}

/* Fast back-off when the follower's log is shorter: its last index is the
 * hint and the leader jumps there at once. */
static void test_leader_fast_backoff_to_short_follower_last_index(void **state)
{
	struct harness *h = *state;
	const struct h_preset p[3] = {
		{7, {1, 1, 1, 2, 2, 3, 3}, 3},
		{1, {1}, 3},
		{7, {1, 1, 1, 2, 2, 3, 3}, 3},
	};
	h_cluster_preset(h, 3, p, NULL);
	uint64_t b = h_base(h, 1);
	elect_1_no_stabilize(h, 3);
	h_process_ready(h, 1);
	h_deliver(h, 1, 2, RAFT_MSG_APPEND);
	h_process_ready(h, 2);
	const struct raft_msg *r = h_find(h, 2, 1, RAFT_MSG_APPEND_RESP, 0);
	assert_non_null(r);
	assert_true(r->reject);
	assert_int_equal(r->hint_index, b + 1);
	h_deliver(h, 2, 1, RAFT_MSG_APPEND_RESP);
	h_process_ready(h, 1);
	const struct raft_msg *a = h_find(h, 1, 2, RAFT_MSG_APPEND, 0);
	assert_non_null(a);
	assert_int_equal(a->index, b + 1);
	assert_int_equal(a->log_term, 1);
	assert_int_equal(a->n_entries, 7);
	h_stabilize(h);
	for (uint64_t i = 1; i <= b + 8; i++)
		assert_int_equal(h_log_term(h, 2, i), h_log_term(h, 1, i));
}

/* "If successful: update nextIndex and matchIndex for follower". */
static void test_leader_updates_match_and_next_index(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	struct raft_progress_info p2, p3;
	assert_true(h_progress(h, 1, 2, &p2));
	assert_int_equal(p2.match, h_last_index(h, 1));
	assert_int_equal(p2.next, p2.match + 1);
	assert_int_equal(p2.state, RAFT_PROGRESS_REPLICATE);

	h_isolate(h, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(h_propose(h, 1, "z", NULL), 0);
	h_stabilize(h);
	assert_true(h_progress(h, 1, 2, &p2));
	assert_true(h_progress(h, 1, 3, &p3));
	assert_int_equal(p2.match, h_last_index(h, 1));
	assert_int_equal(p2.next, p2.match + 1);
	assert_int_equal(p3.match, h_last_index(h, 1) - 3);

	h_recover(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_true(h_progress(h, 1, 3, &p3));
	assert_int_equal(p3.match, h_last_index(h, 1));
	assert_int_equal(p3.next, p3.match + 1);
}

/* The Figure 3.7 scenario (§3.6.2): an entry of an earlier term stored on a
 * majority is not committed by counting replicas, because a server whose log
 * ends in a later term can still be elected and overwrite it. */
static void test_leader_never_commits_earlier_term_by_counting_replicas(void **state)
{
	struct harness *h = *state;
	/* (c) of Figure 3.7: S1 is back and will lead term 4 with [1 2]; S5
	 * led term 3 and holds [1 3]. */
	const struct h_preset p[5] = {
		{2, {1, 2}, 3}, {2, {1, 2}, 2}, {1, {1}, 3}, {1, {1}, 3}, {2, {1, 3}, 3},
	};
	/* One entry per AppendEntries, so the leader's no-op travels apart. */
	const struct h_opts o = {.max_msg_bytes = 1};
	h_cluster_preset(h, 5, p, &o);
	uint64_t b = h_base(h, 1); /* 1/b+1 on all; 2/b+2 on S1, S2; 3/b+2 on S5 */
	elect_1_no_stabilize(h, 5);
	assert_int_equal(h_term(h, 1), 4);
	h_cut(h, 1, 2);
	h_cut(h, 1, 5);
	h_process_ready(h, 1);
	/* S3 and S4 reject (they lack index 2), and receive 2/2 alone. */
	h_deliver(h, 1, 0, RAFT_MSG_APPEND);
	h_process_ready(h, 3);
	h_process_ready(h, 4);
	h_deliver(h, 0, 1, RAFT_MSG_APPEND_RESP);
	h_process_ready(h, 1);
	const struct raft_msg *a = h_find(h, 1, 3, RAFT_MSG_APPEND, 0);
	assert_non_null(a);
	assert_int_equal(a->index, b + 1);
	assert_int_equal(a->n_entries, 1);
	assert_int_equal(a->entries[0].term, 2);
	h_deliver(h, 1, 0, RAFT_MSG_APPEND);
	h_process_ready(h, 3);
	h_process_ready(h, 4);
	h_deliver(h, 0, 1, RAFT_MSG_APPEND_RESP);
	struct raft_progress_info pi;
	assert_true(h_progress(h, 1, 3, &pi));
	assert_int_equal(pi.match, b + 2);
	assert_true(h_progress(h, 1, 4, &pi));
	assert_int_equal(pi.match, b + 2);
	/* 2/b+2 is on S1, S2, S3, S4: a majority, yet not committed. */
	assert_int_equal(h_commit(h, 1), b);
	h_process_ready(h, 1);
	assert_int_equal(h_commit(h, 1), b);
	assert_int_equal(h_node(h, 1)->applied, b);
	h_drop(h, 0, 0, 0); /* the no-op never arrives */

	/* (d): S1 crashes, S5 is elected with S2, S3, S4 and overwrites 2. */
	h_crash(h, 1);
	h_recover(h);
	assert_int_equal(raft_campaign(h_raft(h, 5)), 0);
	h_stabilize(h);
	if (h_state(h, 5) != RAFT_LEADER) {
		assert_int_equal(raft_campaign(h_raft(h, 5)), 0);
		h_stabilize(h);
	}
	assert_int_equal(h_state(h, 5), RAFT_LEADER);
	char t2[16], t3[16];
	snprintf(t2, sizeof t2, "t2i%d", (int)b + 2);
	snprintf(t3, sizeof t3, "t3i%d", (int)b + 2);
	for (uint64_t id = 2; id <= 5; id++) {
		assert_int_equal(h_log_term(h, id, b + 2), 3);
		assert_true(h_node(h, id)->applied >= b + 2);
		assert_null(strstr(h_buf_str(&h_node(h, id)->sm), t2));
		assert_non_null(strstr(h_buf_str(&h_node(h, id)->sm), t3));
	}
}

/* The other half of §3.6.2: once an entry of the leader's term is on a
 * majority, it and every entry before it (2/2 here) are committed. */
static void test_leader_commits_earlier_terms_through_current_term_entry(void **state)
{
	struct harness *h = *state;
	const struct h_preset p[5] = {
		{2, {1, 2}, 3}, {2, {1, 2}, 2}, {1, {1}, 3}, {1, {1}, 3}, {2, {1, 3}, 3},
	};
	const struct h_opts o = {.max_msg_bytes = 1};
	h_cluster_preset(h, 5, p, &o);
	uint64_t b = h_base(h, 1);
	elect_1_no_stabilize(h, 5);
	h_cut(h, 1, 2);
	h_cut(h, 1, 5);
	h_stabilize(h);
	assert_int_equal(h_state(h, 1), RAFT_LEADER);
	assert_int_equal(h_commit(h, 1), b + 3); /* the no-op 4/b+3 on S1, S3, S4 */
	for (uint64_t id = 3; id <= 4; id++) {
		assert_int_equal(h_log_term(h, id, b + 2), 2);
		assert_int_equal(h_log_term(h, id, b + 3), 4);
	}
	char want[32];
	snprintf(want, sizeof want, "t1i%d,t2i%d", (int)b + 1, (int)b + 2);
	assert_string_equal(h_buf_str(&h_node(h, 1)->sm), want);
	/* S5 can no longer win: S3 and S4 now hold a later last term. It
	 * learns the committed log at the next heartbeat. */
	h_recover(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_string_equal(h_buf_str(&h_node(h, 5)->sm), want);
	assert_int_equal(h_log_term(h, 5, b + 2), 2);
}

/* "If there exists an N > commitIndex such that a majority of matchIndex[i]
 * >= N and log[N].term == currentTerm: set commitIndex = N". */
static void test_leader_commits_on_majority_of_current_term(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 5, NULL);
	assert_true(h_elect(h, 1));
	h_isolate(h, 4);
	h_isolate(h, 5);
	uint64_t ix, iy;
	assert_int_equal(h_propose(h, 1, "x", &ix), 0);
	h_stabilize(h);
	assert_int_equal(h_commit(h, 1), ix); /* 1, 2, 3 of 5 */
	h_isolate(h, 3);
	assert_int_equal(h_propose(h, 1, "y", &iy), 0);
	assert_int_equal(iy, ix + 1);
	h_stabilize(h);
	assert_int_equal(h_commit(h, 1), ix); /* 1, 2 of 5: not a majority */
	assert_int_equal(h_last_index(h, 2), iy);
	h_recover(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_int_equal(h_commit(h, 1), iy);
	for (uint64_t id = 1; id <= 5; id++)
		assert_string_equal(h_buf_str(&h_node(h, id)->sm), "x,y");
}

/* §10.2.1 and THE LOOP CONTRACT step 1: the leader sends AppendEntries with
 * a new entry in the same update that hands the entry out for persistence,
 * in msgs (sent before persisting), and commits nothing it has not
 * persisted. */
static void test_leader_replicates_while_persisting(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	uint64_t ix;
	assert_int_equal(h_propose(h, 1, "x", &ix), 0);
	assert_true(h_ready_begin(h, 1));
	const struct raft_update *u = &h_node(h, 1)->u;
	assert_int_equal(u->n_entries, 1);
	assert_int_equal(u->entries[0].index, ix);
	for (uint64_t to = 2; to <= 3; to++) {
		const struct raft_msg *a = h_umsg(u->msgs, u->n_msgs, to, RAFT_MSG_APPEND);
		assert_non_null(a);
		assert_int_equal(a->n_entries, 1);
		assert_int_equal(a->entries[0].index, ix);
		assert_null(h_umsg(u->msgs_after_persist, u->n_msgs_after_persist, to,
				   RAFT_MSG_APPEND));
	}
	for (uint32_t i = 0; i < u->n_committed; i++)
		assert_true(u->committed[i].index < ix);
	assert_int_equal(h_count(h, 1, 0, RAFT_MSG_APPEND), 2); /* already on the wire */
	h_ready_finish(h, 1);
	h_stabilize(h);
	assert_string_equal(h_buf_str(&h_node(h, 2)->sm), "x");
}

/* The leader counts itself toward a majority only once its own write is
 * persisted (raft_advance). In a 3-member cluster one follower's ack is not
 * a majority until then; two followers' acks are one without the leader. */
static void test_leader_counts_itself_only_after_persisting(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	uint64_t ix, iy;

	assert_int_equal(h_propose(h, 1, "x", &ix), 0);
	assert_true(h_ready_begin(h, 1)); /* APPENDs out, leader not persisted */
	h_deliver(h, 1, 2, RAFT_MSG_APPEND);
	h_process_ready(h, 2);
	h_deliver(h, 2, 1, RAFT_MSG_APPEND_RESP);
	assert_true(h_commit(h, 1) < ix);
	h_ready_finish(h, 1); /* now the leader's copy is durable: 2 of 3 */
	assert_int_equal(h_commit(h, 1), ix);
	h_process_ready(h, 1);
	assert_string_equal(h_buf_str(&h_node(h, 1)->sm), "x");
	h_stabilize(h);

	assert_int_equal(h_propose(h, 1, "y", &iy), 0);
	assert_true(h_ready_begin(h, 1));
	h_deliver(h, 1, 0, RAFT_MSG_APPEND);
	h_process_ready(h, 2);
	h_process_ready(h, 3);
	h_deliver(h, 0, 1, RAFT_MSG_APPEND_RESP);
	assert_int_equal(h_commit(h, 1), iy); /* 2 and 3 hold it durably */
	h_ready_finish(h, 1);
	h_stabilize(h);
	for (uint64_t id = 1; id <= 3; id++)
		assert_string_equal(h_buf_str(&h_node(h, id)->sm), "x,y");
}

/* A single voter is its own majority, still only once it has persisted. */
static void test_single_node_commits_only_after_persisting(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 1, NULL);
	assert_true(h_elect(h, 1));
	uint64_t ix;
	assert_int_equal(h_propose(h, 1, "x", &ix), 0);
	assert_true(h_ready_begin(h, 1));
	const struct raft_update *u = &h_node(h, 1)->u;
	assert_int_equal(u->n_entries, 1);
	for (uint32_t i = 0; i < u->n_committed; i++)
		assert_true(u->committed[i].index < ix);
	assert_true(h_commit(h, 1) < ix);
	h_ready_finish(h, 1);
	assert_int_equal(h_commit(h, 1), ix);
	assert_true(h_process_ready(h, 1));
	assert_string_equal(h_buf_str(&h_node(h, 1)->sm), "x");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		HTEST(test_append_rejected_without_matching_prev),
		HTEST(test_append_conflict_deletes_entry_and_all_that_follow),
		HTEST(test_append_matching_entries_are_kept),
		HTEST(test_append_new_entries_appended_and_acked_after_persist),
		HTEST(test_append_commit_is_min_of_leader_commit_and_last_new_entry),
		HTEST(test_all_servers_apply_committed_entries_in_order),
		HTEST(test_leader_sends_heartbeats_when_idle),
		HTEST(test_leader_appends_noop_on_election),
		HTEST(test_leader_fast_backoff_skips_conflicting_term),
		HTEST(test_leader_fast_backoff_to_short_follower_last_index),
		HTEST(test_leader_updates_match_and_next_index),
		HTEST(test_leader_never_commits_earlier_term_by_counting_replicas),
		HTEST(test_leader_commits_earlier_terms_through_current_term_entry),
		HTEST(test_leader_commits_on_majority_of_current_term),
		HTEST(test_leader_replicates_while_persisting),
		HTEST(test_leader_counts_itself_only_after_persisting),
		HTEST(test_single_node_commits_only_after_persisting),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
