/* test_campaign.c: the order in which followers campaign once their leader is known gone
 * (srv_campaign_rank, server/member.c). Every follower of a term computes the same order, so the
 * ranks of the voters other than the leader are exactly 0..k-1 (no two campaign in the same
 * slot); learners and the leader take no turn; the order changes with the term, so no member is
 * always first; and it does not depend on where a member sits in the configuration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include "member_int.h"

static struct raft_conf conf_of(const uint64_t *ids, const uint32_t *roles, uint32_t n)
{
	struct raft_conf c;
	memset(&c, 0, sizeof c);
	c.n = n;
	for (uint32_t i = 0; i < n; i++) {
		c.members[i].id = ids[i];
		c.members[i].role = roles[i];
	}
	return c;
}

/* The ranks of every voter but the leader are a permutation of 0..voters-2. */
static void check_permutation(const struct raft_conf *c, uint64_t term, uint64_t leader)
{
	bool seen[RAFT_MAX_MEMBERS] = { false };
	uint64_t k = 0;
	for (uint32_t i = 0; i < c->n; i++)
		if (c->members[i].role == RAFT_VOTER && c->members[i].id != leader)
			k++;
	for (uint32_t i = 0; i < c->n; i++) {
		const struct raft_member *v = &c->members[i];
		if (v->role != RAFT_VOTER || v->id == leader)
			continue;
		uint64_t r = srv_campaign_rank(c, term, leader, v->id);
		assert_true(r < k);
		assert_false(seen[r]);
		seen[r] = true;
	}
}

static void test_distinct_turns(void **state)
{
	(void)state;
	const uint64_t ids[] = { 0x8d781deeeb341615u,
				 0x5f5e702023e3f819u,
				 0x7e47d7b8d64db766u,
				 0x1111u,
				 0x2222u,
				 0x3333u,
				 0x4444u };
	const uint32_t voters[] = { RAFT_VOTER, RAFT_VOTER, RAFT_VOTER, RAFT_VOTER,
				    RAFT_VOTER, RAFT_VOTER, RAFT_VOTER };
	for (uint32_t n = 2; n <= 7; n++) {
		struct raft_conf c = conf_of(ids, voters, n);
		for (uint64_t term = 1; term < 500; term++)
			for (uint32_t l = 0; l < n; l++)
				check_permutation(&c, term, ids[l]);
	}
}

static void test_learners_take_no_turn(void **state)
{
	(void)state;
	const uint64_t ids[] = { 10, 20, 30, 40, 50 };
	const uint32_t roles[] = { RAFT_VOTER, RAFT_LEARNER, RAFT_VOTER, RAFT_LEARNER, RAFT_VOTER };
	struct raft_conf c = conf_of(ids, roles, 5);
	for (uint64_t term = 1; term < 200; term++) {
		check_permutation(&c, term, 10);
		/* the two voters left share turns 0 and 1 whatever the learners would hash to */
		assert_int_equal(srv_campaign_rank(&c, term, 10, 30) +
					 srv_campaign_rank(&c, term, 10, 50),
				 1);
	}
}

static void test_order_changes_with_term(void **state)
{
	(void)state;
	const uint64_t ids[] = { 101, 202, 303 };
	const uint32_t voters[] = { RAFT_VOTER, RAFT_VOTER, RAFT_VOTER };
	struct raft_conf c = conf_of(ids, voters, 3);
	int first_202 = 0;
	for (uint64_t term = 1; term <= 1000; term++)
		first_202 += srv_campaign_rank(&c, term, 101, 202) == 0;
	/* each of the two followers goes first in about half the terms */
	assert_true(first_202 > 400 && first_202 < 600);
}

static void test_independent_of_position(void **state)
{
	(void)state;
	const uint64_t a[] = { 7, 8, 9, 10, 11 };
	const uint64_t b[] = { 11, 9, 7, 10, 8 };
	const uint32_t voters[] = { RAFT_VOTER, RAFT_VOTER, RAFT_VOTER, RAFT_VOTER, RAFT_VOTER };
	struct raft_conf ca = conf_of(a, voters, 5), cb = conf_of(b, voters, 5);
	for (uint64_t term = 1; term < 200; term++)
		for (uint32_t i = 0; i < 5; i++)
			assert_int_equal(srv_campaign_rank(&ca, term, 9, a[i]),
					 srv_campaign_rank(&cb, term, 9, a[i]));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_distinct_turns),
		cmocka_unit_test(test_learners_take_no_turn),
		cmocka_unit_test(test_order_changes_with_term),
		cmocka_unit_test(test_independent_of_position),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
