/* test_bad_input.c: what arrives from the network is never trusted. A
 * message from a stranger, a malformed one, an unexpected snapshot chunk or
 * an undecodable replicated change is counted in raft_stats and ignored; it
 * never crashes the node and never changes its state unsafely. The last
 * test throws seeded random messages and calls at a node (the harness checks
 * its invariants after every step and update; run it under ASan+UBSan). */
#include "unit.h"

#include <inttypes.h>

/* What a bad message must leave alone. */
struct snap {
	struct raft_status st;
	uint64_t terms[16];
};

static void take(struct harness *h, uint64_t id, struct snap *s)
{
	h_status(h, id, &s->st);
	for (uint64_t i = 0; i < 16; i++)
		s->terms[i] = h_log_term(h, id, i);
}

static void assert_unchanged(struct harness *h, uint64_t id, const struct snap *before)
{
	struct snap now;
	take(h, id, &now);
	assert_int_equal(now.st.term, before->st.term);
	assert_int_equal(now.st.vote, before->st.vote);
	assert_int_equal(now.st.state, before->st.state);
	assert_int_equal(now.st.leader, before->st.leader);
	assert_int_equal(now.st.commit, before->st.commit);
	assert_int_equal(now.st.last_index, before->st.last_index);
	assert_memory_equal(now.terms, before->terms, sizeof now.terms);
}

/* Non-leader traffic from outside the configuration: counted, ignored,
 * whatever its term. */
static void test_message_from_unknown_member_ignored(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	struct snap b2, b1;
	take(h, 2, &b2);
	take(h, 1, &b1);
	uint64_t u2 = h_stats(h, 2)->dropped_unknown_member;
	uint64_t u1 = h_stats(h, 1)->dropped_unknown_member;
	/* vote requests are not in the list: §4.1 answers them whatever
	 * the configuration (test_vote_request_from_unapplied_member) */
	uint32_t types[] = {RAFT_MSG_VOTE_RESP, RAFT_MSG_PREVOTE_RESP, RAFT_MSG_APPEND_RESP,
			    RAFT_MSG_HEARTBEAT_RESP};
	for (size_t i = 0; i < 4; i++) {
		struct raft_msg m = h_mk(types[i], 9, 2, b2.st.term + 5);
		m.index = 100;
		m.log_term = b2.st.term + 5;
		assert_int_equal(h_step(h, &m), 0);
	}
	struct raft_msg r = h_mk(RAFT_MSG_APPEND_RESP, 9, 1, b1.st.term);
	r.index = 1;
	assert_int_equal(h_step(h, &r), 0);
	struct raft_msg hr = h_mk(RAFT_MSG_HEARTBEAT_RESP, 9, 1, b1.st.term);
	assert_int_equal(h_step(h, &hr), 0);
	h_process_ready(h, 1);
	h_process_ready(h, 2);
	assert_int_equal(h_count(h, 0, 9, 0), 0); /* no answer to a stranger */
	assert_unchanged(h, 2, &b2);
	assert_unchanged(h, 1, &b1);
	assert_int_equal(h_stats(h, 2)->dropped_unknown_member, u2 + 4);
	assert_int_equal(h_stats(h, 1)->dropped_unknown_member, u1 + 2);
}

/* §4.1: a vote request is answered without consulting the configuration.
 * Node 9 may be a voter of a configuration node 2 has not applied yet;
 * ignoring it could leave no member able to win an election. */
static void test_vote_request_from_unapplied_member(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	uint64_t term = h_term(h, 2);
	uint64_t u2 = h_stats(h, 2)->dropped_unknown_member;
	struct raft_msg v = h_mk(RAFT_MSG_VOTE, 9, 2, term + 1);
	v.index = h_last_index(h, 2);
	v.log_term = term;
	assert_int_equal(h_step(h, &v), 0);
	h_process_ready(h, 2);
	const struct raft_msg *resp = h_find(h, 2, 9, RAFT_MSG_VOTE_RESP, 0);
	assert_non_null(resp);
	assert_false(resp->reject);
	assert_int_equal(resp->term, term + 1);
	assert_int_equal(h_term(h, 2), term + 1);
	assert_int_equal(h_stats(h, 2)->dropped_unknown_member, u2);
	/* a stale log is still refused: the vote rule, not the sender, decides */
	struct raft_msg w = h_mk(RAFT_MSG_VOTE, 8, 3, term + 1);
	w.index = 0;
	w.log_term = 0;
	assert_int_equal(h_step(h, &w), 0);
	h_process_ready(h, 3);
	resp = h_find(h, 3, 8, RAFT_MSG_VOTE_RESP, 0);
	assert_non_null(resp);
	assert_true(resp->reject);
}

/* AppendEntries whose entries do not follow prevLogIndex one by one, or
 * whose terms are impossible, is malformed: dropped whole, before its term
 * is even looked at. */
static void test_append_with_bad_entries_ignored(void **state)
{
	struct harness *h = *state;
	const uint64_t terms[] = {1, 1};
	h_start_alone(h, 2, 3, terms, 2, 1, 0, NULL);
	struct snap before;
	take(h, 2, &before);
	uint64_t mal = h_stats(h, 2)->dropped_malformed;
	const uint8_t *d = (const uint8_t *)"e";
	struct {
		uint64_t term, prev, prev_term;
		struct raft_entry e[2];
		uint32_t n;
	} cases[] = {
		/* a gap after prev */
		{1, 2, 1, {{1, 4, RAFT_ENTRY_NORMAL, 1, d}}, 1},
		/* overlapping with prev */
		{1, 2, 1, {{1, 2, RAFT_ENTRY_NORMAL, 1, d}}, 1},
		/* duplicate index */
		{1, 2, 1, {{1, 3, RAFT_ENTRY_NORMAL, 1, d}, {1, 3, RAFT_ENTRY_NORMAL, 1, d}}, 2},
		/* an entry from a later term than the message */
		{5, 2, 1, {{6, 3, RAFT_ENTRY_NORMAL, 1, d}}, 1},
		/* terms going down */
		{3, 2, 1, {{3, 3, RAFT_ENTRY_NORMAL, 1, d}, {2, 4, RAFT_ENTRY_NORMAL, 1, d}}, 2},
		/* an entry older than prevLogTerm */
		{3, 2, 2, {{1, 3, RAFT_ENTRY_NORMAL, 1, d}}, 1},
		/* prevLogTerm later than the message's term */
		{2, 2, 3, {{2, 3, RAFT_ENTRY_NORMAL, 1, d}}, 1},
		/* an unknown entry type */
		{1, 2, 1, {{1, 3, 9, 1, d}}, 1},
		/* data promised but absent */
		{1, 2, 1, {{1, 3, RAFT_ENTRY_NORMAL, 5, NULL}}, 1},
	};
	size_t n = sizeof cases / sizeof cases[0];
	for (size_t i = 0; i < n; i++) {
		struct raft_msg m = h_mk(RAFT_MSG_APPEND, 1, 2, cases[i].term);
		m.index = cases[i].prev;
		m.log_term = cases[i].prev_term;
		m.entries = cases[i].e;
		m.n_entries = cases[i].n;
		m.commit = 4;
		assert_int_equal(h_step(h, &m), 0);
		assert_int_equal(h_stats(h, 2)->dropped_malformed, mal + i + 1);
	}
	h_process_ready(h, 2);
	assert_int_equal(h_count(h, 2, 0, 0), 0);
	assert_unchanged(h, 2, &before);
}

/* Nonsense at the envelope: unknown types, wrong recipient, from ourselves,
 * from id 0, term 0, entries on a type that has none. */
static void test_malformed_envelope_ignored(void **state)
{
	struct harness *h = *state;
	const uint64_t terms[] = {1, 1};
	h_start_alone(h, 2, 3, terms, 2, 1, 0, NULL);
	struct snap before;
	take(h, 2, &before);
	uint64_t mal = h_stats(h, 2)->dropped_malformed;
	struct raft *r = h_raft(h, 2);
	struct raft_entry e = {.term = 1, .index = 3, .type = RAFT_ENTRY_NORMAL};
	struct raft_msg ms[8];
	ms[0] = h_mk(0, 1, 2, 1);
	ms[1] = h_mk(RAFT_MSG_TYPE_MAX + 1, 1, 2, 1);
	ms[2] = h_mk(200, 1, 2, 1);
	ms[3] = h_mk(RAFT_MSG_HEARTBEAT, 1, 3, 9); /* not for us */
	ms[4] = h_mk(RAFT_MSG_HEARTBEAT, 2, 2, 9); /* from ourselves */
	ms[5] = h_mk(RAFT_MSG_HEARTBEAT, 0, 2, 9);
	ms[6] = h_mk(RAFT_MSG_HEARTBEAT, 1, 2, 0);
	ms[7] = h_mk(RAFT_MSG_VOTE, 3, 2, 9);
	ms[7].entries = &e;
	ms[7].n_entries = 1;
	for (size_t i = 0; i < 8; i++)
		assert_int_equal(raft_step(r, &ms[i]), 0);
	assert_int_equal(raft_step(r, NULL), RAFT_EINVAL);
	assert_int_equal(h_stats(h, 2)->dropped_malformed, mal + 8);
	h_process_ready(h, 2);
	assert_int_equal(h_count(h, 2, 0, 0), 0);
	assert_unchanged(h, 2, &before);
}

/* A snapshot chunk nobody announced (not from offset 0, or for a snapshot
 * we already cover) is counted and not staged; malformed chunks are
 * dropped whole. */
static void test_unexpected_snapshot_chunk_ignored(void **state)
{
	struct harness *h = *state;
	const uint64_t terms[] = {1, 1, 1};
	h_start_alone(h, 2, 3, terms, 3, 1, 0, NULL);
	uint64_t b = h_base(h, 2);
	struct raft_msg c = h_mk(RAFT_MSG_APPEND, 1, 2, 1);
	c.index = b + 3;
	c.log_term = 1;
	c.commit = b + 2;
	assert_int_equal(h_step(h, &c), 0);
	h_process_ready(h, 2);
	h_drop(h, 0, 0, 0);
	assert_int_equal(h_commit(h, 2), b + 2);
	struct snap before;
	take(h, 2, &before);
	uint64_t ds = h_stats(h, 2)->dropped_snapshot;
	uint64_t mal = h_stats(h, 2)->dropped_malformed;

	static const uint8_t data[100] = {0};
	struct raft_msg s = h_mk(RAFT_MSG_SNAPSHOT, 1, 2, 1);
	s.snap.index = b + 50;
	s.snap.term = 1;
	s.snap.size = 100;
	s.snap.conf = h_conf_voters(3);
	s.index = 40; /* a middle chunk of a stream we never saw begin */
	s.len = 10;
	s.data = data + 40;
	assert_int_equal(h_step(h, &s), 0);
	assert_int_equal(h_stats(h, 2)->dropped_snapshot, ds + 1);
	assert_true(h_ready_begin(h, 2));
	const struct raft_update *u = &h_node(h, 2)->u;
	assert_int_equal(u->n_snapshot_chunks, 0);
	assert_null(u->snapshot);
	const struct raft_msg *resp = h_umsg(u->msgs, u->n_msgs, 1, RAFT_MSG_SNAPSHOT_RESP);
	if (resp == NULL)
		resp = h_umsg(u->msgs_after_persist, u->n_msgs_after_persist, 1,
			      RAFT_MSG_SNAPSHOT_RESP);
	assert_non_null(resp); /* "restart from offset 0" */
	assert_true(resp->reject);
	assert_int_equal(resp->index, 0);
	h_ready_finish(h, 2);
	h_drop(h, 0, 0, 0);

	/* A snapshot at or below our commit index is not installed. */
	struct raft_msg old = s;
	old.snap.index = b + 2;
	old.snap.size = 10;
	old.index = 0;
	old.len = 10;
	old.data = data;
	old.last = true;
	assert_int_equal(h_step(h, &old), 0);
	assert_int_equal(h_stats(h, 2)->dropped_snapshot, ds + 2);

	/* Malformed: inconsistent `last`, chunk past the end, empty conf,
	 * snapshot term beyond the message term. */
	struct raft_msg bad[4] = {s, s, s, s};
	bad[0].index = 90;
	bad[0].last = false; /* 90 + 10 == size: must be last */
	bad[1].index = 95;
	bad[2].snap.conf.n = 0;
	bad[3].snap.term = 5;
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(h_step(h, &bad[i]), 0);
	assert_int_equal(h_stats(h, 2)->dropped_malformed, mal + 4);
	h_process_ready(h, 2);
	assert_unchanged(h, 2, &before);
	assert_int_equal(h_stats(h, 2)->snapshots_installed, 0);
}

/* An AppendEntries that arrives late and would overwrite committed entries
 * leaves them alone. */
static void test_stale_append_never_truncates_committed_entries(void **state)
{
	struct harness *h = *state;
	const uint64_t terms[] = {1, 1, 1};
	h_start_alone(h, 2, 3, terms, 3, 2, 0, NULL);
	uint64_t b = h_base(h, 2);
	struct raft_msg c = h_mk(RAFT_MSG_APPEND, 1, 2, 2);
	c.index = b + 3;
	c.log_term = 1;
	c.commit = b + 3;
	assert_int_equal(h_step(h, &c), 0);
	h_process_ready(h, 2);
	assert_int_equal(h_commit(h, 2), b + 3);
	struct raft_entry e = {.term = 2, .index = b + 2, .type = RAFT_ENTRY_NORMAL, .len = 1,
			       .data = (const uint8_t *)"x"};
	struct raft_msg m = h_mk(RAFT_MSG_APPEND, 1, 2, 2);
	m.index = b + 1;
	m.log_term = 1;
	m.entries = &e;
	m.n_entries = 1;
	assert_int_equal(h_step(h, &m), 0);
	h_process_ready(h, 2);
	for (uint64_t i = 1; i <= b + 3; i++)
		assert_int_equal(h_log_term(h, 2, i), 1);
	assert_int_equal(h_last_index(h, 2), b + 3);
	assert_int_equal(h_node(h, 2)->n_applied_normal, 3);
	assert_null(strchr(h_buf_str(&h_node(h, 2)->sm), 'x'));
}

/* A conf-change entry that does not decode, or an entry of an unknown
 * type, committed by a faulty leader, changes no membership. */
static void test_undecodable_conf_change_entry_changes_nothing(void **state)
{
	struct harness *h = *state;
	h_start_alone(h, 2, 3, NULL, 0, 1, 0, NULL);
	uint64_t b = h_base(h, 2);
	struct raft_entry e = {.term = 1, .index = b + 1, .type = RAFT_ENTRY_CONF_CHANGE, .len = 7,
			       .data = (const uint8_t *)"garbage"};
	struct raft_msg m = h_mk(RAFT_MSG_APPEND, 1, 2, 1);
	m.index = b;
	m.log_term = 1;
	m.entries = &e;
	m.n_entries = 1;
	m.commit = b + 1;
	assert_int_equal(h_step(h, &m), 0);
	h_process_ready(h, 2);
	h_process_ready(h, 2);
	assert_int_equal(h_node(h, 2)->applied, b + 1);
	assert_int_equal(h_node(h, 2)->n_applied_bad_conf, 1);
	struct raft_status st;
	h_status(h, 2, &st);
	assert_int_equal(st.conf.n, 3);
	assert_int_equal(raft_conf_voters(&st.conf), 3);
}

/* ---- Seeded random input. ---------------------------------------------------- */

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void random_msg(uint64_t *s, struct raft_msg *m, struct raft_entry *ents, uint8_t *data)
{
	memset(m, 0, sizeof *m);
	m->type = (uint32_t)(rnd(s) % (RAFT_MSG_TYPE_MAX + 2));
	m->from = rnd(s) % 5;
	m->to = rnd(s) % 8 ? 2 : rnd(s) % 4;
	m->term = rnd(s) % 6;
	m->log_term = rnd(s) % 6;
	m->index = rnd(s) % 10;
	m->commit = rnd(s) % 12;
	m->reject = rnd(s) % 2;
	m->hint_index = rnd(s) % 10;
	m->hint_term = rnd(s) % 6;
	m->context = rnd(s) % 4;
	uint32_t n = (uint32_t)(rnd(s) % 4);
	bool sequential = rnd(s) % 4 != 0;
	uint64_t t = m->log_term;
	for (uint32_t i = 0; i < n; i++) {
		if (rnd(s) % 3 == 0 && t < m->term)
			t++;
		ents[i].term = sequential ? t : rnd(s) % 6;
		ents[i].index = sequential ? m->index + 1 + i : rnd(s) % 12;
		ents[i].type = (uint32_t)(rnd(s) % 5 == 0 ? rnd(s) % 4 : RAFT_ENTRY_NORMAL);
		ents[i].len = (uint32_t)(rnd(s) % 4);
		ents[i].data = data;
	}
	m->n_entries = n;
	m->entries = n ? ents : NULL;
	m->snap.index = rnd(s) % 12;
	m->snap.term = rnd(s) % 6;
	m->snap.size = rnd(s) % 24;
	m->snap.conf = h_conf_voters(1 + (uint32_t)(rnd(s) % 3));
	if (rnd(s) % 8 == 0)
		m->snap.conf.n = 0;
	m->len = (uint32_t)(rnd(s) % 9);
	if (m->type == RAFT_MSG_SNAPSHOT && rnd(s) % 3 == 0) {
		/* a whole, well-formed snapshot in one chunk */
		m->snap.term = m->term ? rnd(s) % (m->term + 1) : 0;
		m->snap.index = 4 + rnd(s) % 16;
		m->snap.size = rnd(s) % 9;
		m->snap.conf = h_conf_voters(3);
		m->index = 0;
		m->len = (uint32_t)m->snap.size;
		m->last = true;
	} else if (m->type == RAFT_MSG_SNAPSHOT && rnd(s) % 2) {
		/* plausible chunks more often */
		m->index = m->snap.size ? rnd(s) % m->snap.size : 0;
		uint64_t left = m->snap.size - m->index;
		m->len = (uint32_t)(left < 8 ? left : 8);
		m->last = m->index + m->len == m->snap.size;
	} else {
		m->last = rnd(s) % 2;
	}
	m->data = m->len ? data : NULL;
}

static uint64_t h_base_for_three(void)
{
	struct harness *h = h_new();
	struct raft_conf c = h_conf_voters(3);
	h_node_init(h, 1, &c);
	uint64_t b = h_base(h, 1);
	h_free(h);
	return b;
}

static void test_random_input_never_crashes(void **state)
{
	(void)state;
	uint8_t data[64];
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = (uint8_t)('a' + i % 26);
	/* Evidence that the input reached deep: it must have moved terms,
	 * committed entries and been refused as malformed, across the seeds. */
	uint64_t max_term = 0, max_applied = 0, malformed = 0, installs = 0;
	for (uint64_t seed = 1; seed <= 40; seed++) {
		struct harness *h = h_new();
		uint64_t s = seed;
		const uint64_t terms[] = {1, 1, 2};
		struct h_opts o = {.pre_vote = seed % 2 == 0,
				   .check_quorum = seed % 3 == 0,
				   .snapshot_chunk_bytes = 8,
				   .max_pending_reads = 8};
		h_start_alone(h, 2, 3, terms, 3, 2, 0, &o);
		for (int step = 0; step < 600; step++) {
			struct raft *r = h_raft(h, 2);
			struct raft_msg m;
			struct raft_entry ents[4];
			int rc = 0;
			switch (rnd(&s) % 12) {
			case 0:
				h_tick(h, 2, (uint32_t)(1 + rnd(&s) % 12));
				break;
			case 1:
				rc = raft_propose(r, data, rnd(&s) % 16, NULL);
				break;
			case 2:
				rc = raft_read_index(r, rnd(&s));
				break;
			case 3:
				rc = raft_campaign(r);
				break;
			case 4:
				rc = raft_transfer_leadership(r, rnd(&s) % 5);
				break;
			case 5: {
				struct raft_conf_change cc = {.type = (uint32_t)(rnd(&s) % 4),
							      .id = rnd(&s) % 5};
				rc = raft_propose_conf_change(r, &cc, NULL);
				break;
			}
			case 6:
				raft_report_unreachable(r, rnd(&s) % 5);
				break;
			case 7:
				if (h_node(h, 2)->applied > 0 && rnd(&s) % 4 == 0)
					assert_int_equal(h_compact(h, 2, rnd(&s) % 3), 0);
				break;
			default:
				random_msg(&s, &m, ents, data);
				rc = raft_step(r, &m);
				assert_int_equal(rc, 0);
				break;
			}
			/* Calls may refuse, never fail locally. */
			assert_true(rc <= 0 && rc != RAFT_ENOMEM && rc != RAFT_EIO);
			h_process_ready(h, 2);
			if (rnd(&s) % 50 == 0) {
				h_crash(h, 2);
				assert_int_equal(h_restart(h, 2), 0);
			}
			h_drop(h, 0, 0, 0);
			if (h_term(h, 2) > max_term)
				max_term = h_term(h, 2);
			if (h_node(h, 2)->applied > max_applied)
				max_applied = h_node(h, 2)->applied;
			malformed += h_stats(h, 2)->dropped_malformed;
			installs += h_stats(h, 2)->snapshots_installed;
		}
		h_free(h);
	}
	assert_true(max_term > 3);
	assert_true(max_applied > h_base_for_three());
	assert_true(malformed > 0);
	assert_true(installs > 0);
	print_message("random input: max term %" PRIu64 ", max applied %" PRIu64
		      ", snapshot installs seen %" PRIu64 "\n",
		      max_term, max_applied, installs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		HTEST(test_message_from_unknown_member_ignored),
		HTEST(test_append_with_bad_entries_ignored),
		HTEST(test_malformed_envelope_ignored),
		HTEST(test_unexpected_snapshot_chunk_ignored),
		HTEST(test_stale_append_never_truncates_committed_entries),
		HTEST(test_undecodable_conf_change_entry_changes_nothing),
		cmocka_unit_test(test_random_input_never_crashes),
		HTEST(test_vote_request_from_unapplied_member),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
