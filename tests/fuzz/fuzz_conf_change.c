/* fuzz_conf_change.c: libFuzzer target for raft_conf_change_decode().
 *
 * Conf-change entries come off the wire and out of the log, so their decoder reads bytes from
 * outside. Whatever it accepts must be canonical: re-encoding the decoded value gives back the
 * same bytes over the encoded length (RAFT_CONF_CHANGE_HEADER + context_len), and the encoder
 * refuses a buffer one byte short. A failed check aborts, which libFuzzer reports with the input.
 *
 * Run: build-fuzz/bin/fuzz_conf_change -max_total_time=60 [corpus-dir]
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"

_Static_assert(RAFT_CONF_CHANGE_HEADER > 0, "a conf change has a header");

#define CHECK(cond)                                                                              \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                 \
		}                                                                                \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Encoded value, plus one spare byte to catch an encoder writing past its size. */
static uint8_t buf[RAFT_CONF_CHANGE_HEADER + RAFT_MAX_CONF_CONTEXT + 1];

static void check_same(const struct raft_conf_change *a, const struct raft_conf_change *b)
{
	CHECK(a->type == b->type);
	CHECK(a->id == b->id);
	CHECK(a->context_len == b->context_len);
	CHECK(a->context_len == 0 || memcmp(a->context, b->context, a->context_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct raft_conf_change cc;
	struct raft_conf_change again;
	size_t want;
	int n;

	memset(&cc, 0, sizeof cc);
	if (raft_conf_change_decode(data, size, &cc) < 0)
		return 0; /* rejected: fine, as long as it did not crash */

	/* What was accepted is within bounds and within the input. */
	CHECK(cc.context_len <= RAFT_MAX_CONF_CONTEXT);
	want = (size_t)RAFT_CONF_CHANGE_HEADER + cc.context_len;
	CHECK(want <= size);
	if (cc.context_len > 0) {
		CHECK(cc.context != NULL);
		CHECK(cc.context >= data && cc.context + cc.context_len <= data + size);
	}

	/* Re-encode: exactly `want` bytes, identical to the input's first `want`. */
	buf[want] = 0xa5;
	n = raft_conf_change_encode(&cc, buf, want);
	CHECK(n >= 0);
	CHECK((size_t)n == want);
	CHECK(buf[want] == 0xa5);
	CHECK(memcmp(buf, data, want) == 0);

	/* The re-encoded bytes decode to the same value. */
	memset(&again, 0, sizeof again);
	CHECK(raft_conf_change_decode(buf, want, &again) >= 0);
	check_same(&cc, &again);

	/* One byte short is refused. */
	CHECK(raft_conf_change_encode(&cc, buf, want - 1) == RAFT_EINVAL);
	return 0;
}
