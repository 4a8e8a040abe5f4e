/* test_conf.c: configuration values: the conf-change codec (every encode
 * paired with a decode, every malformed input refused), raft_conf_apply's
 * rules, the role queries, and the error table. */
#include "unit.h"

static void test_conf_change_round_trip(void **state)
{
	(void)state;
	static const uint8_t ctx[] = "http://10.0.0.4:2380";
	const uint32_t types[] = {RAFT_CC_ADD_VOTER, RAFT_CC_ADD_LEARNER, RAFT_CC_REMOVE};
	for (size_t t = 0; t < 3; t++) {
		for (int with_ctx = 0; with_ctx < 2; with_ctx++) {
			struct raft_conf_change cc = {
				.type = types[t],
				.id = 0x0102030405060708ULL + t,
				.context_len = with_ctx ? (uint32_t)(sizeof ctx - 1) : 0,
				.context = with_ctx ? ctx : NULL,
			};
			uint8_t buf[RAFT_CONF_CHANGE_HEADER + 64];
			int n = raft_conf_change_encode(&cc, buf, sizeof buf);
			assert_int_equal(n, RAFT_CONF_CHANGE_HEADER + cc.context_len);
			struct raft_conf_change out;
			memset(&out, 0xff, sizeof out);
			assert_int_equal(raft_conf_change_decode(buf, (size_t)n, &out), 0);
			assert_int_equal(out.type, cc.type);
			assert_int_equal(out.id, cc.id);
			assert_int_equal(out.context_len, cc.context_len);
			if (with_ctx) {
				/* borrowed: points into the encoded bytes */
				assert_ptr_equal(out.context, buf + RAFT_CONF_CHANGE_HEADER);
				assert_memory_equal(out.context, ctx, cc.context_len);
			} else {
				assert_null(out.context);
			}
			/* An exact capacity is enough. */
			uint8_t exact[RAFT_CONF_CHANGE_HEADER + 64];
			assert_int_equal(raft_conf_change_encode(&cc, exact, (size_t)n), n);
			assert_memory_equal(exact, buf, (size_t)n);
		}
	}
	/* The largest context. */
	static uint8_t big[RAFT_MAX_CONF_CONTEXT];
	memset(big, 'x', sizeof big);
	struct raft_conf_change cc = {.type = RAFT_CC_ADD_VOTER,
				      .id = 7,
				      .context_len = RAFT_MAX_CONF_CONTEXT,
				      .context = big};
	static uint8_t buf[RAFT_CONF_CHANGE_HEADER + RAFT_MAX_CONF_CONTEXT];
	int n = raft_conf_change_encode(&cc, buf, sizeof buf);
	assert_int_equal(n, (int)sizeof buf);
	struct raft_conf_change out;
	assert_int_equal(raft_conf_change_decode(buf, sizeof buf, &out), 0);
	assert_int_equal(out.context_len, RAFT_MAX_CONF_CONTEXT);
}

static void test_conf_change_encode_rejects_bad_input(void **state)
{
	(void)state;
	uint8_t buf[RAFT_CONF_CHANGE_HEADER + 8];
	struct raft_conf_change cc = {.type = RAFT_CC_ADD_VOTER, .id = 3};
	assert_int_equal(raft_conf_change_encode(&cc, buf, RAFT_CONF_CHANGE_HEADER - 1), RAFT_EINVAL);
	assert_int_equal(raft_conf_change_encode(&cc, NULL, 100), RAFT_EINVAL);
	cc.context = (const uint8_t *)"abcd";
	cc.context_len = 4;
	assert_int_equal(raft_conf_change_encode(&cc, buf, RAFT_CONF_CHANGE_HEADER + 3), RAFT_EINVAL);
	cc.context_len = RAFT_MAX_CONF_CONTEXT + 1;
	assert_int_equal(raft_conf_change_encode(&cc, buf, sizeof buf), RAFT_EINVAL);
	cc.context_len = 4;
	cc.context = NULL;
	assert_int_equal(raft_conf_change_encode(&cc, buf, sizeof buf), RAFT_EINVAL);
	struct raft_conf_change bad_type = {.type = 9, .id = 3};
	assert_int_equal(raft_conf_change_encode(&bad_type, buf, sizeof buf), RAFT_EINVAL);
	struct raft_conf_change no_id = {.type = RAFT_CC_REMOVE, .id = 0};
	assert_int_equal(raft_conf_change_encode(&no_id, buf, sizeof buf), RAFT_EINVAL);
}

static void test_conf_change_decode_rejects_malformed(void **state)
{
	(void)state;
	struct raft_conf_change cc = {.type = RAFT_CC_ADD_LEARNER,
				      .id = 42,
				      .context_len = 3,
				      .context = (const uint8_t *)"ctx"};
	uint8_t buf[64];
	int n = raft_conf_change_encode(&cc, buf, sizeof buf);
	assert_int_equal(n, RAFT_CONF_CHANGE_HEADER + 3);
	struct raft_conf_change out;
	/* Every truncation, and a trailing byte, is refused. */
	for (int len = 0; len < n; len++)
		assert_int_equal(raft_conf_change_decode(buf, (size_t)len, &out), RAFT_ECORRUPT);
	assert_int_equal(raft_conf_change_decode(buf, (size_t)n + 1, &out), RAFT_ECORRUPT);
	assert_int_equal(raft_conf_change_decode(NULL, 16, &out), RAFT_ECORRUPT);
	/* A bad type, a zero id, an oversized context length. */
	uint8_t b[64];
	memcpy(b, buf, (size_t)n);
	b[0] = 0;
	assert_int_equal(raft_conf_change_decode(b, (size_t)n, &out), RAFT_ECORRUPT);
	memcpy(b, buf, (size_t)n);
	memset(b + 8, 0, 8);
	assert_int_equal(raft_conf_change_decode(b, (size_t)n, &out), RAFT_ECORRUPT);
	memcpy(b, buf, (size_t)n);
	b[4] = 0xff;
	b[5] = 0xff;
	assert_int_equal(raft_conf_change_decode(b, (size_t)n, &out), RAFT_ECORRUPT);
	/* Every single-bit flip either fails or decodes to a valid change. */
	for (int i = 0; i < n * 8; i++) {
		memcpy(b, buf, (size_t)n);
		b[i / 8] ^= (uint8_t)(1u << (i % 8));
		int rc = raft_conf_change_decode(b, (size_t)n, &out);
		if (rc == 0) {
			assert_true(out.type >= RAFT_CC_ADD_VOTER && out.type <= RAFT_CC_REMOVE);
			assert_true(out.id != 0);
			assert_int_equal(out.context_len, 3);
		} else {
			assert_int_equal(rc, RAFT_ECORRUPT);
		}
	}
}

static struct raft_conf conf_of(const uint64_t *voters, size_t nv, const uint64_t *learners,
				size_t nl)
{
	struct raft_conf c;
	memset(&c, 0, sizeof c);
	for (size_t i = 0; i < nv; i++)
		h_conf_add(&c, voters[i], RAFT_VOTER);
	for (size_t i = 0; i < nl; i++)
		h_conf_add(&c, learners[i], RAFT_LEARNER);
	return c;
}

static void test_conf_apply_rules(void **state)
{
	(void)state;
	const uint64_t v[] = {1, 2, 3};
	struct raft_conf c = conf_of(v, 3, NULL, 0);
	assert_int_equal(raft_conf_voters(&c), 3);
	assert_int_equal(raft_conf_role(&c, 2), RAFT_VOTER);
	assert_int_equal(raft_conf_role(&c, 4), 0);

	struct raft_conf_change cc = {.type = RAFT_CC_ADD_LEARNER, .id = 4};
	assert_int_equal(raft_conf_apply(&c, &cc), 0);
	assert_int_equal(c.n, 4);
	assert_int_equal(raft_conf_role(&c, 4), RAFT_LEARNER);
	assert_int_equal(raft_conf_voters(&c), 3);

	cc.type = RAFT_CC_ADD_VOTER; /* promotion, no duplicate */
	assert_int_equal(raft_conf_apply(&c, &cc), 0);
	assert_int_equal(c.n, 4);
	assert_int_equal(raft_conf_role(&c, 4), RAFT_VOTER);
	assert_int_equal(raft_conf_voters(&c), 4);
	assert_int_equal(raft_conf_apply(&c, &cc), 0); /* idempotent */
	assert_int_equal(c.n, 4);

	cc.type = RAFT_CC_ADD_LEARNER; /* demotion */
	cc.id = 1;
	assert_int_equal(raft_conf_apply(&c, &cc), 0);
	assert_int_equal(raft_conf_role(&c, 1), RAFT_LEARNER);
	assert_int_equal(raft_conf_voters(&c), 3);

	cc.type = RAFT_CC_REMOVE;
	cc.id = 2;
	assert_int_equal(raft_conf_apply(&c, &cc), 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(raft_conf_role(&c, 2), 0);
	assert_int_equal(raft_conf_role(&c, 3), RAFT_VOTER);
	assert_int_equal(raft_conf_role(&c, 4), RAFT_VOTER);

	/* Refusals leave conf unchanged. */
	struct raft_conf before = c;
	cc.id = 2;
	assert_int_equal(raft_conf_apply(&c, &cc), RAFT_EUNKNOWNMEMBER);
	cc.id = 0;
	assert_int_equal(raft_conf_apply(&c, &cc), RAFT_EINVAL);
	cc.id = 5;
	cc.type = 0;
	assert_int_equal(raft_conf_apply(&c, &cc), RAFT_EINVAL);
	assert_memory_equal(&c, &before, sizeof c);

	/* No change may leave the cluster without a voter. */
	const uint64_t one[] = {1};
	const uint64_t l[] = {2};
	struct raft_conf single = conf_of(one, 1, l, 1);
	struct raft_conf_change rm = {.type = RAFT_CC_REMOVE, .id = 1};
	assert_int_equal(raft_conf_apply(&single, &rm), RAFT_EINVAL);
	struct raft_conf_change demote = {.type = RAFT_CC_ADD_LEARNER, .id = 1};
	assert_int_equal(raft_conf_apply(&single, &demote), RAFT_EINVAL);
	assert_int_equal(raft_conf_voters(&single), 1);
}

static void test_conf_apply_member_bound(void **state)
{
	(void)state;
	struct raft_conf c;
	memset(&c, 0, sizeof c);
	h_conf_add(&c, 1, RAFT_VOTER);
	for (uint64_t id = 2; id <= RAFT_MAX_MEMBERS; id++) {
		struct raft_conf_change cc = {.type = RAFT_CC_ADD_LEARNER, .id = id};
		assert_int_equal(raft_conf_apply(&c, &cc), 0);
	}
	assert_int_equal(c.n, RAFT_MAX_MEMBERS);
	struct raft_conf before = c;
	struct raft_conf_change more = {.type = RAFT_CC_ADD_VOTER, .id = 100};
	assert_int_equal(raft_conf_apply(&c, &more), RAFT_ETOOMANYMEMBERS);
	assert_memory_equal(&c, &before, sizeof c);
	/* Changing the role of a present member is still possible when full. */
	struct raft_conf_change promote = {.type = RAFT_CC_ADD_VOTER, .id = 16};
	assert_int_equal(raft_conf_apply(&c, &promote), 0);
	assert_int_equal(raft_conf_voters(&c), 2);
}

static void test_strerror_covers_every_code(void **state)
{
	(void)state;
#define CHECK_ERR(name, num, msg)                                                \
	assert_int_equal(RAFT_E##name, -(num));                                  \
	assert_string_equal(raft_strerror(RAFT_E##name), msg);
	RAFT_ERRNO_MAP(CHECK_ERR)
#undef CHECK_ERR
	assert_non_null(raft_strerror(0));
	assert_non_null(raft_strerror(-1000));
	assert_non_null(raft_strerror(12345));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conf_change_round_trip),
		cmocka_unit_test(test_conf_change_encode_rejects_bad_input),
		cmocka_unit_test(test_conf_change_decode_rejects_malformed),
		cmocka_unit_test(test_conf_apply_rules),
		cmocka_unit_test(test_conf_apply_member_bound),
		cmocka_unit_test(test_strerror_covers_every_code),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
