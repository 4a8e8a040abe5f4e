/* test_snapshot.c: log compaction and InstallSnapshot (thesis §5): a
 * follower behind the leader's compacted log gets the snapshot in chunks,
 * installs it and continues from it; a lost chunk is resent; a restarted
 * member rebuilds its state machine from its snapshot and log. */
#include "unit.h"

#include <stdio.h>

static const struct h_opts small_chunks = {.snapshot_chunk_bytes = 8};

/* Leader 1 of 3, node 3 isolated while ten entries commit, then the leader
 * compacts its whole log. Copies the leader's state machine text to want. */
static void lagging_behind_compaction(struct harness *h, uint64_t keep, char *want, size_t cap)
{
	h_cluster(h, 3, &small_chunks);
	assert_true(h_elect(h, 1));
	h_isolate(h, 3);
	for (int i = 1; i <= 10; i++) {
		char v[32];
		snprintf(v, sizeof v, "value-%02d", i);
		assert_int_equal(h_propose(h, 1, v, NULL), 0);
	}
	h_stabilize(h);
	assert_int_equal(h_compact(h, 1, keep), 0);
	assert_int_equal(h_compact(h, 2, keep), 0);
	snprintf(want, cap, "%s", h_buf_str(&h_node(h, 1)->sm));
}

/* Heartbeat rounds until node `id` has applied what the leader has, bounded. */
static void catch_up(struct harness *h, uint64_t leader, uint64_t id)
{
	for (int round = 0; round < 50; round++) {
		h_tick_heartbeat(h, leader);
		h_stabilize(h);
		if (h_node(h, id)->applied == h_node(h, leader)->applied)
			return;
	}
}

static void test_snapshot_sent_in_chunks_to_lagging_follower(void **state)
{
	struct harness *h = *state;
	char want[256];
	lagging_behind_compaction(h, 0, want, sizeof want);
	struct raft_status st1;
	h_status(h, 1, &st1);
	assert_true(st1.first_index > h_last_index(h, 3) + 1); /* entries gone */
	h_recover(h);
	catch_up(h, 1, 3);
	assert_string_equal(h_buf_str(&h_node(h, 3)->sm), want);
	assert_int_equal(h_node(h, 3)->applied, h_node(h, 1)->applied);
	assert_int_equal(h_stats(h, 3)->snapshots_installed, 1);
	assert_int_equal(h_stats(h, 1)->snapshots_sent, 1);
	/* more than one chunk of at most 8 bytes went out */
	size_t size = strlen(want);
	assert_true(h->sent[1][RAFT_MSG_SNAPSHOT] >= (size + 7) / 8);
	struct raft_status st3;
	h_status(h, 3, &st3);
	assert_int_equal(raft_conf_voters(&st3.conf), 3);
	assert_int_equal(st3.first_index, st1.first_index);
	/* The follower continues with ordinary replication. */
	struct raft_progress_info pi;
	assert_true(h_progress(h, 1, 3, &pi));
	assert_int_equal(pi.state, RAFT_PROGRESS_REPLICATE);
	uint64_t snaps = h->sent[1][RAFT_MSG_SNAPSHOT];
	assert_int_equal(h_propose(h, 1, "after", NULL), 0);
	h_stabilize(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_int_equal(h->sent[1][RAFT_MSG_SNAPSHOT], snaps);
	char want2[300];
	snprintf(want2, sizeof want2, "%s,after", want);
	assert_string_equal(h_buf_str(&h_node(h, 3)->sm), want2);
}

/* A chunk lost on the way: the follower asks for the stream again from
 * what it has (or the leader resends after a stall), and the snapshot still
 * arrives whole. */
static void test_snapshot_lost_chunk_is_resent(void **state)
{
	struct harness *h = *state;
	char want[256];
	lagging_behind_compaction(h, 0, want, sizeof want);
	h_recover(h);
	h_tick_heartbeat(h, 1);
	bool dropped = false;
	int rejects = 0;
	for (int round = 0; round < 200 && h_node(h, 3)->applied < h_node(h, 1)->applied;
	     round++) {
		for (uint64_t id = 1; id <= 3; id++)
			while (h_process_ready(h, id))
				;
		/* the second chunk of the first window, only */
		const struct raft_msg *m = h_find(h, 1, 3, RAFT_MSG_SNAPSHOT, 1);
		if (!dropped && m && m->index > 0) {
			assert_true(h_drop_nth(h, 1, 3, RAFT_MSG_SNAPSHOT, 1));
			dropped = true;
		}
		if (h->nq == 0)
			h_tick_heartbeat(h, 1);
		for (size_t i = 0; h_find(h, 3, 1, RAFT_MSG_SNAPSHOT_RESP, i); i++)
			rejects += h_find(h, 3, 1, RAFT_MSG_SNAPSHOT_RESP, i)->reject;
		h_deliver_all(h);
	}
	assert_true(dropped);
	assert_true(rejects > 0); /* the follower asked for the gap again */
	assert_string_equal(h_buf_str(&h_node(h, 3)->sm), want);
	assert_int_equal(h_stats(h, 3)->snapshots_installed, 1);
}

/* With `keep` entries left before the snapshot, a follower just behind is
 * caught up with AppendEntries: no snapshot is sent when the log suffices. */
static void test_snapshot_not_sent_when_log_suffices(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &small_chunks);
	assert_true(h_elect(h, 1));
	h_isolate(h, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(h_propose(h, 1, "v", NULL), 0);
	h_stabilize(h);
	assert_int_equal(h_compact(h, 1, 5), 0);
	h_recover(h);
	catch_up(h, 1, 3);
	assert_int_equal(h->sent[1][RAFT_MSG_SNAPSHOT], 0);
	assert_string_equal(h_buf_str(&h_node(h, 3)->sm), "v,v,v");
}

/* A restarted member starts from its snapshot and re-applies the committed
 * entries after it. */
static void test_restart_rebuilds_from_snapshot_and_log(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, NULL);
	assert_true(h_elect(h, 1));
	assert_int_equal(h_propose(h, 1, "a", NULL), 0);
	assert_int_equal(h_propose(h, 1, "b", NULL), 0);
	h_stabilize(h);
	assert_int_equal(h_compact(h, 2, 1), 0);
	uint64_t snap_index = h_node(h, 2)->applied;
	assert_int_equal(h_propose(h, 1, "c", NULL), 0);
	h_stabilize(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_string_equal(h_buf_str(&h_node(h, 2)->sm), "a,b,c");
	h_crash(h, 2);
	assert_int_equal(h_restart(h, 2), 0);
	assert_int_equal(h_node(h, 2)->applied, snap_index);
	assert_string_equal(h_buf_str(&h_node(h, 2)->sm), "a,b");
	struct raft_status st;
	h_status(h, 2, &st);
	assert_int_equal(st.first_index, snap_index); /* one entry kept */
	h_process_ready(h, 2);
	assert_string_equal(h_buf_str(&h_node(h, 2)->sm), "a,b,c");
	/* and it still takes part */
	assert_int_equal(h_propose(h, 1, "d", NULL), 0);
	h_stabilize(h);
	h_tick_heartbeat(h, 1);
	h_stabilize(h);
	assert_string_equal(h_buf_str(&h_node(h, 2)->sm), "a,b,c,d");
}

/* A member that joins with an empty store after the log was compacted gets
 * everything, configuration included, from the snapshot. */
static void test_new_member_joins_from_snapshot(void **state)
{
	struct harness *h = *state;
	h_cluster(h, 3, &small_chunks);
	assert_true(h_elect(h, 1));
	assert_int_equal(h_propose(h, 1, "x", NULL), 0);
	h_stabilize(h);
	h_node_init(h, 4, NULL);
	assert_int_equal(h_node_start(h, 4, &small_chunks), 0);
	struct raft_conf_change cc = {.type = RAFT_CC_ADD_LEARNER, .id = 4};
	assert_int_equal(raft_propose_conf_change(h_raft(h, 1), &cc, NULL), 0);
	h_drop(h, 0, 4, 0);
	h_isolate(h, 4);
	h_stabilize(h);
	assert_int_equal(h_compact(h, 1, 0), 0);
	h_recover(h);
	catch_up(h, 1, 4);
	assert_int_equal(h_stats(h, 4)->snapshots_installed, 1);
	assert_string_equal(h_buf_str(&h_node(h, 4)->sm), "x");
	struct raft_status st;
	h_status(h, 4, &st);
	assert_int_equal(raft_conf_role(&st.conf, 4), RAFT_LEARNER);
	assert_int_equal(raft_conf_voters(&st.conf), 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		HTEST(test_snapshot_sent_in_chunks_to_lagging_follower),
		HTEST(test_snapshot_lost_chunk_is_resent),
		HTEST(test_snapshot_not_sent_when_log_suffices),
		HTEST(test_restart_rebuilds_from_snapshot_and_log),
		HTEST(test_new_member_joins_from_snapshot),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
