/* unit.h: what every cmocka test of the Raft core includes: cmocka in the
 * order it needs, the harness, and a setup/teardown pair that gives each test
 * a fresh harness in *state (freed even when the test fails). */
#ifndef CAIRN_TEST_UNIT_H
#define CAIRN_TEST_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "harness.h"

static inline int h_setup(void **state)
{
	*state = h_new();
	return 0;
}

static inline int h_teardown(void **state)
{
	h_free(*state);
	return 0;
}

#define HTEST(fn) cmocka_unit_test_setup_teardown(fn, h_setup, h_teardown)

#endif /* CAIRN_TEST_UNIT_H */
