/* test_watch.c: the member-free pieces of the Watch service (server/watch.h):
 * which keys a watcher covers after etcd's normalisation, the hand-written
 * WatchResponse (prefix + events encoded once) read back by protobuf-c as the
 * message etcd's clients expect, and where a large response is cut (etcd's
 * fragment rule, and whole revisions without fragment). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "watch.h"

#define K(s) (const uint8_t *)(s), strlen(s)

static void test_watch_key_in(void **state)
{
	(void)state;
	/* one key */
	assert_true(watch_key_in(WATCH_KEY, K("a"), NULL, 0, K("a")));
	assert_false(watch_key_in(WATCH_KEY, K("a"), NULL, 0, K("ab")));
	assert_false(watch_key_in(WATCH_KEY, K("ab"), NULL, 0, K("a")));
	/* [b, d) */
	assert_false(watch_key_in(WATCH_RANGE, K("b"), K("d"), K("a")));
	assert_true(watch_key_in(WATCH_RANGE, K("b"), K("d"), K("b")));
	assert_true(watch_key_in(WATCH_RANGE, K("b"), K("d"), K("c\xff\xff")));
	assert_false(watch_key_in(WATCH_RANGE, K("b"), K("d"), K("d")));
	/* a prefix as clients send it: [p/, p0) */
	assert_true(watch_key_in(WATCH_RANGE, K("p/"), K("p0"), K("p/x")));
	assert_false(watch_key_in(WATCH_RANGE, K("p/"), K("p0"), K("p")));
	/* from a key on (range_end "\0"), and everything (key "\0" too) */
	assert_true(watch_key_in(WATCH_FROM, K("m"), NULL, 0, K("m")));
	assert_true(watch_key_in(WATCH_FROM, K("m"), NULL, 0, K("z")));
	assert_false(watch_key_in(WATCH_FROM, K("m"), NULL, 0, K("l\xff")));
	static const uint8_t zero = 0;
	assert_true(watch_key_in(WATCH_FROM, &zero, 1, NULL, 0, K("\x01")));
	/* bytes compare unsigned, a shorter key first */
	assert_true(watch_key_in(WATCH_RANGE, K("a"), K("a\x80"), K("a\x7f")));
	assert_false(watch_key_in(WATCH_RANGE, K("a"), K("a\x80"), K("a\x80")));
}

static void test_watch_varint(void **state)
{
	(void)state;
	uint8_t b[10];
	assert_int_equal(watch_put_varint(b, 0), 1);
	assert_int_equal(b[0], 0);
	assert_int_equal(watch_put_varint(b, 300), 2);
	assert_int_equal(b[0], 0xac);
	assert_int_equal(b[1], 0x02);
	/* -1 as an int64 field: ten bytes */
	assert_int_equal(watch_put_varint(b, (uint64_t)(int64_t)-1), 10);
	assert_int_equal(b[9], 0x01);
}

static struct kv_event mk(enum kv_event_type t, const char *key, const char *val, int64_t rev,
			  const char *prev)
{
	struct kv_event e;
	memset(&e, 0, sizeof e);
	e.type = t;
	e.kv.key = (uint8_t *)key;
	e.kv.key_len = strlen(key);
	e.kv.value = (uint8_t *)val;
	e.kv.value_len = strlen(val);
	e.kv.mod_revision = rev;
	e.kv.create_revision = t == KV_EVENT_PUT ? rev - 1 : 0;
	e.kv.version = t == KV_EVENT_PUT ? 2 : 0;
	e.kv.lease = t == KV_EVENT_PUT ? 77 : 0;
	if (prev != NULL) {
		e.has_prev_kv = true;
		e.prev_kv.key = (uint8_t *)key;
		e.prev_kv.key_len = strlen(key);
		e.prev_kv.value = (uint8_t *)prev;
		e.prev_kv.value_len = strlen(prev);
		e.prev_kv.mod_revision = rev - 1;
		e.prev_kv.version = 1;
	}
	return e;
}

/* A response made of the prefix and events encoded apart decodes as one WatchResponse with
 * every field in place, with and without prev_kv, for a negative watch id and a fragment. */
static void test_watch_compose_roundtrip(void **state)
{
	(void)state;
	struct kv_event ev[3] = {
		mk(KV_EVENT_PUT, "k1", "v1", 10, "old"),
		mk(KV_EVENT_DELETE, "k2", "", 10, "gone"),
		mk(KV_EVENT_PUT, "k3", "", 11, NULL),
	};
	Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
	h.cluster_id = 0xfeedfacecafebeefull;
	h.member_id = 42;
	h.revision = 11;
	h.raft_term = 3;
	uint8_t hdr[64];
	size_t hlen = etcdserverpb__response_header__pack(&h, hdr);
	for (int with_prev = 0; with_prev < 2; with_prev++) {
		for (int variant = 0; variant < 2; variant++) {
			int64_t id = variant ? -1 : 123456789;
			bool frag = variant == 1;
			uint8_t *ebuf = NULL;
			size_t elen = 0, ecap = 0;
			for (int i = 0; i < 3; i++)
				assert_int_equal(
					watch_event_encode(&ev[i], with_prev, &ebuf, &elen, &ecap),
					0);
			uint8_t *msg = malloc(WATCH_PREFIX_MAX(hlen) + elen);
			assert_non_null(msg);
			size_t n = watch_prefix(msg, hdr, hlen, id, frag);
			assert_true(n <= WATCH_PREFIX_MAX(hlen));
			memcpy(msg + n, ebuf, elen);
			Etcdserverpb__WatchResponse *r =
				etcdserverpb__watch_response__unpack(NULL, n + elen, msg);
			assert_non_null(r);
			assert_non_null(r->header);
			assert_int_equal(r->header->cluster_id, h.cluster_id);
			assert_int_equal(r->header->member_id, 42);
			assert_int_equal(r->header->revision, 11);
			assert_int_equal(r->header->raft_term, 3);
			assert_int_equal(r->watch_id, id);
			assert_int_equal(r->fragment, frag);
			assert_false(r->created);
			assert_false(r->canceled);
			assert_int_equal(r->n_events, 3);
			for (int i = 0; i < 3; i++) {
				Mvccpb__Event *e = r->events[i];
				assert_int_equal(e->type,
						 ev[i].type == KV_EVENT_DELETE ?
							 MVCCPB__EVENT__EVENT_TYPE__DELETE :
							 MVCCPB__EVENT__EVENT_TYPE__PUT);
				assert_int_equal(e->kv->key.len, ev[i].kv.key_len);
				assert_memory_equal(e->kv->key.data, ev[i].kv.key,
						    ev[i].kv.key_len);
				assert_int_equal(e->kv->value.len, ev[i].kv.value_len);
				assert_int_equal(e->kv->mod_revision, ev[i].kv.mod_revision);
				assert_int_equal(e->kv->create_revision, ev[i].kv.create_revision);
				assert_int_equal(e->kv->version, ev[i].kv.version);
				assert_int_equal(e->kv->lease, ev[i].kv.lease);
				if (with_prev && ev[i].has_prev_kv) {
					assert_non_null(e->prev_kv);
					assert_int_equal(e->prev_kv->value.len,
							 ev[i].prev_kv.value_len);
					assert_memory_equal(e->prev_kv->value.data,
							    ev[i].prev_kv.value,
							    ev[i].prev_kv.value_len);
					assert_int_equal(e->prev_kv->mod_revision,
							 ev[i].kv.mod_revision - 1);
				} else {
					assert_null(e->prev_kv);
				}
			}
			/* the same message packed by protobuf-c has the same size */
			assert_int_equal(etcdserverpb__watch_response__get_packed_size(r),
					 n + elen);
			etcdserverpb__watch_response__free_unpacked(r, NULL);
			free(msg);
			free(ebuf);
		}
	}
}

/* watch_plan: etcd's fragment rule (events while under the limit, at least one), and without
 * fragment only whole revisions. */
static void test_watch_plan(void **state)
{
	(void)state;
	size_t ends[16];
	/* under the limit, or a single event: one message */
	size_t s1[] = { 10, 10, 10 };
	int64_t r1[] = { 5, 5, 6 };
	assert_int_equal(watch_plan(s1, r1, 3, 31, true, ends), 1);
	assert_int_equal(ends[0], 3);
	size_t big[] = { 1000 };
	int64_t rb[] = { 9 };
	assert_int_equal(watch_plan(big, rb, 1, 10, true, ends), 1);
	assert_int_equal(watch_plan(s1, r1, 0, 10, true, ends), 0);
	/* fragment: 10 events of 30 bytes, limit 100: 3 + 3 + 3 + 1 */
	size_t s2[10];
	int64_t r2[10];
	for (int i = 0; i < 10; i++) {
		s2[i] = 30;
		r2[i] = 7;
	}
	assert_int_equal(watch_plan(s2, r2, 10, 100, true, ends), 4);
	assert_int_equal(ends[0], 3);
	assert_int_equal(ends[1], 6);
	assert_int_equal(ends[2], 9);
	assert_int_equal(ends[3], 10);
	/* without fragment the one revision stays whole */
	assert_int_equal(watch_plan(s2, r2, 10, 100, false, ends), 1);
	assert_int_equal(ends[0], 10);
	/* without fragment, cut between revisions: [7 7][8 8 8][9] with limit 100 */
	size_t s3[] = { 30, 30, 30, 30, 30, 30 };
	int64_t r3[] = { 7, 7, 8, 8, 8, 9 };
	assert_int_equal(watch_plan(s3, r3, 6, 100, false, ends), 3);
	assert_int_equal(ends[0], 2);
	assert_int_equal(ends[1], 5);
	assert_int_equal(ends[2], 6);
	/* a fragment never exceeds the limit unless it is one event */
	size_t s4[] = { 150, 20, 20, 90, 5 };
	int64_t r4[] = { 1, 1, 1, 1, 1 };
	assert_int_equal(watch_plan(s4, r4, 5, 100, true, ends), 3);
	assert_int_equal(ends[0], 1);
	assert_int_equal(ends[1], 3);
	assert_int_equal(ends[2], 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_watch_key_in),
		cmocka_unit_test(test_watch_varint),
		cmocka_unit_test(test_watch_compose_roundtrip),
		cmocka_unit_test(test_watch_plan),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
