/* test_client_map.c: libcairn's private pieces without a server: the id -> watch map (linear
 * probing with backward-shift deletion) against a plain array, and the decoding arena. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "client_int.h"

#define N_KEYS 512

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void test_map_model(void **state)
{
	(void)state;
	struct cl_map m = {0};
	void *model[N_KEYS] = {0};
	static char vals[N_KEYS];
	size_t n = 0;
	for (int step = 0; step < 200000; step++) {
		/* Keys clustered and spread: small ids, negative ones, and big ones. */
		int i = (int)(next() % N_KEYS);
		int64_t key = i < N_KEYS / 2 ? i : (int64_t)i * 1000003 - 7 * N_KEYS;
		switch (next() % 3) {
		case 0:
			assert_int_equal(cl_map_put(&m, key, &vals[i]), 0);
			if (model[i] == NULL)
				n++;
			model[i] = &vals[i];
			break;
		case 1:
			assert_ptr_equal(cl_map_del(&m, key), model[i]);
			if (model[i] != NULL)
				n--;
			model[i] = NULL;
			break;
		default:
			assert_ptr_equal(cl_map_get(&m, key), model[i]);
			break;
		}
		assert_int_equal(m.n, n);
		if (step % 10000 == 0) {
			for (int j = 0; j < N_KEYS; j++) {
				int64_t k = j < N_KEYS / 2 ? j : (int64_t)j * 1000003 - 7 * N_KEYS;
				assert_ptr_equal(cl_map_get(&m, k), model[j]);
			}
		}
	}
	assert_true(m.cap <= 4 * N_KEYS);
	cl_map_free(&m);
	assert_null(cl_map_get(&m, 1));
	assert_null(cl_map_del(&m, 1));
}

static void test_arena(void **state)
{
	(void)state;
	struct cl_arena a;
	cl_arena_init(&a);
	for (int round = 0; round < 3; round++) {
		uint8_t *p[64];
		for (int i = 0; i < 64; i++) {
			size_t len = (size_t)(i * 97 % 5000) + 1;
			p[i] = cl_arena_alloc(&a, len);
			assert_non_null(p[i]);
			assert_int_equal((uintptr_t)p[i] % 16, 0);
			memset(p[i], i, len);
		}
		/* A piece bigger than a block. */
		uint8_t *big = a.pb.alloc(a.pb.allocator_data, (size_t)200 << 10);
		assert_non_null(big);
		memset(big, 0xee, (size_t)200 << 10);
		for (int i = 0; i < 64; i++)
			assert_int_equal(p[i][0], (uint8_t)i);
		a.pb.free(a.pb.allocator_data, big); /* a no-op: freed at reset */
		cl_arena_reset(&a);
		assert_ptr_equal(a.head, a.first);
		assert_null(a.first->next);
	}
	cl_arena_free(&a);
	assert_null(a.first);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_map_model),
		cmocka_unit_test(test_arena),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
