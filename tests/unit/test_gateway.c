/* test_gateway.c: the JSON codec of the etcd gateway (server/gateway.c): etcd messages written
 * as etcd 3.4's gateway writes them, read back, and malformed JSON refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "http.h"

static char *encode(const ProtobufCMessage *m)
{
	struct srv_text t;
	srv_text_init(&t, 1 << 20);
	gw_json_encode(m, &t);
	assert_false(t.full);
	return t.p;
}

static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, const char *json, char *err)
{
	return gw_json_decode(d, (const uint8_t *)json, strlen(json), err, 256);
}

/* etcd 3.4's exact output for a Range response (from its gateway). */
static void test_range_response_shape(void **state)
{
	(void)state;
	Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
	h.cluster_id = 14841639068965178418u;
	h.member_id = 10276657743932975437u;
	h.revision = 2;
	h.raft_term = 2;
	Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
	kv.key.data = (uint8_t *)"foo";
	kv.key.len = 3;
	kv.value.data = (uint8_t *)"bar";
	kv.value.len = 3;
	kv.create_revision = 2;
	kv.mod_revision = 2;
	kv.version = 1;
	Mvccpb__KeyValue *kvs[] = { &kv };
	Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
	r.header = &h;
	r.kvs = kvs;
	r.n_kvs = 1;
	r.count = 1;
	char *j = encode(&r.base);
	assert_string_equal(
		j,
		"{\"header\":{\"cluster_id\":\"14841639068965178418\",\"member_id\":"
		"\"10276657743932975437\",\"revision\":\"2\",\"raft_term\":\"2\"},\"kvs\":[{\"key\":"
		"\"Zm9v\",\"create_revision\":\"2\",\"mod_revision\":\"2\",\"version\":\"1\","
		"\"value\":\"YmFy\"}],\"count\":\"1\"}");
	free(j);
}

/* Field names as in the .proto ("ID", "TTL", "dbSize"), enums by name, oneofs. */
static void test_names_enums_oneofs(void **state)
{
	(void)state;
	Etcdserverpb__LeaseGrantResponse g = ETCDSERVERPB__LEASE_GRANT_RESPONSE__INIT;
	g.id = -5;
	g.ttl = 30;
	char *j = encode(&g.base);
	assert_string_equal(j, "{\"ID\":\"-5\",\"TTL\":\"30\"}");
	free(j);

	char err[256];
	ProtobufCMessage *m = decode(&etcdserverpb__txn_request__descriptor,
				     "{\"compare\":[{\"target\":\"VALUE\",\"result\":\"NOT_EQUAL\","
				     "\"key\":\"Zm9v\",\"value\":\"YmFy\"}],\"success\":[{"
				     "\"request_put\":{\"key\":\"Zm9v\",\"value\":\"YmF6\"}}],"
				     "\"failure\":[{\"requestRange\":{\"key\":\"Zm9v\"}}]}",
				     err);
	assert_non_null(m);
	Etcdserverpb__TxnRequest *t = (Etcdserverpb__TxnRequest *)m;
	assert_int_equal(t->n_compare, 1);
	assert_int_equal(t->compare[0]->target, ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE);
	assert_int_equal(t->compare[0]->result, ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL);
	assert_int_equal(t->compare[0]->target_union_case,
			 ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE);
	assert_memory_equal(t->compare[0]->value.data, "bar", 3);
	assert_int_equal(t->n_success, 1);
	assert_int_equal(t->success[0]->request_case,
			 ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT);
	assert_memory_equal(t->success[0]->request_put->value.data, "baz", 3);
	assert_int_equal(t->failure[0]->request_case,
			 ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE);
	/* round trip: what is written reads back the same */
	char *j1 = encode(m);
	ProtobufCMessage *m2 = decode(&etcdserverpb__txn_request__descriptor, j1, err);
	assert_non_null(m2);
	char *j2 = encode(m2);
	assert_string_equal(j1, j2);
	assert_non_null(strstr(j1, "\"target\":\"VALUE\""));
	assert_non_null(strstr(j1, "\"result\":\"NOT_EQUAL\""));
	free(j1);
	free(j2);
	protobuf_c_message_free_unpacked(m, NULL);
	protobuf_c_message_free_unpacked(m2, NULL);
}

static void test_int64_edges(void **state)
{
	(void)state;
	char err[256];
	ProtobufCMessage *m =
		decode(&etcdserverpb__range_request__descriptor,
		       "{\"limit\":\"9223372036854775807\",\"revision\":-9223372036854775808,"
		       "\"sort_order\":2,\"sortTarget\":\"MOD\",\"serializable\":true}",
		       err);
	assert_non_null(m);
	Etcdserverpb__RangeRequest *r = (Etcdserverpb__RangeRequest *)m;
	assert_true(r->limit == INT64_MAX);
	assert_true(r->revision == INT64_MIN);
	assert_int_equal(r->sort_order, 2);
	assert_int_equal(r->sort_target, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD);
	assert_true(r->serializable);
	char *j = encode(m);
	assert_string_equal(j,
			    "{\"limit\":\"9223372036854775807\",\"revision\":"
			    "\"-9223372036854775808\",\"sort_order\":\"DESCEND\",\"sort_target\":"
			    "\"MOD\",\"serializable\":true}");
	free(j);
	protobuf_c_message_free_unpacked(m, NULL);

	Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
	h.cluster_id = UINT64_MAX;
	j = encode(&h.base);
	assert_string_equal(j, "{\"cluster_id\":\"18446744073709551615\"}");
	free(j);
	/* defaults are left out: an empty message is {} */
	Etcdserverpb__ResponseHeader z = ETCDSERVERPB__RESPONSE_HEADER__INIT;
	j = encode(&z.base);
	assert_string_equal(j, "{}");
	free(j);

	static const char *const bad[] = {
		"{\"limit\":\"9223372036854775808\"}", /* over int64 */
		"{\"limit\":1.5}",
		"{\"limit\":\"x\"}",
		"{\"limit\":1e3}",
		"{\"sort_order\":\"SIDEWAYS\"}",
		"{\"serializable\":\"true\"}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		m = decode(&etcdserverpb__range_request__descriptor, bad[i], err);
		if (m != NULL) {
			fail_msg("accepted %s", bad[i]);
		}
		assert_true(err[0] != '\0');
	}
}

static void test_bytes_base64(void **state)
{
	(void)state;
	char err[256];
	/* every length modulo 3, with and without padding, URL-safe too */
	static const struct {
		const char *b64;
		const char *raw;
		size_t len;
	} cases[] = {
		{ "", "", 0 },
		{ "YQ==", "a", 1 },
		{ "YQ", "a", 1 },
		{ "YWI=", "ab", 2 },
		{ "YWJj", "abc", 3 },
		{ "-_8=", "\xfb\xff", 2 },
		{ "+/8=", "\xfb\xff", 2 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char json[64];
		snprintf(json, sizeof json, "{\"key\":\"%s\"}", cases[i].b64);
		ProtobufCMessage *m = decode(&etcdserverpb__put_request__descriptor, json, err);
		assert_non_null(m);
		Etcdserverpb__PutRequest *p = (Etcdserverpb__PutRequest *)m;
		assert_int_equal(p->key.len, cases[i].len);
		if (cases[i].len > 0) {
			assert_memory_equal(p->key.data, cases[i].raw, cases[i].len);
		}
		protobuf_c_message_free_unpacked(m, NULL);
	}
	/* binary with every byte value: written standard and padded, read back equal */
	uint8_t all[256];
	for (int i = 0; i < 256; i++) {
		all[i] = (uint8_t)i;
	}
	Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
	p.value.data = all;
	p.value.len = sizeof all;
	char *j = encode(&p.base);
	ProtobufCMessage *m = decode(&etcdserverpb__put_request__descriptor, j, err);
	assert_non_null(m);
	assert_int_equal(((Etcdserverpb__PutRequest *)m)->value.len, 256);
	assert_memory_equal(((Etcdserverpb__PutRequest *)m)->value.data, all, 256);
	free(j);
	protobuf_c_message_free_unpacked(m, NULL);
	assert_null(decode(&etcdserverpb__put_request__descriptor, "{\"key\":\"!!\"}", err));
	assert_string_equal(err, "illegal base64 data at input byte 0");
	assert_null(decode(&etcdserverpb__put_request__descriptor, "{\"key\":\"Y\"}", err));
}

static void test_strings_and_unknown_fields(void **state)
{
	(void)state;
	char err[256];
	ProtobufCMessage *m = decode(
		&etcdserverpb__member_add_request__descriptor,
		"{\"peerURLs\":[\"http://a:1\",\"h\\u00e9\\ud83d\\ude00\\n\"],\"bogus\":{\"x\":[1,2,"
		"{\"y\":null}],\"z\":\"w\"},\"isLearner\":true}",
		err);
	assert_non_null(m);
	Etcdserverpb__MemberAddRequest *a = (Etcdserverpb__MemberAddRequest *)m;
	assert_int_equal(a->n_peerurls, 2);
	assert_string_equal(a->peerurls[1], "h\xc3\xa9\xf0\x9f\x98\x80\n");
	assert_true(a->islearner);
	char *j = encode(m);
	assert_string_equal(j, "{\"peerURLs\":[\"http://a:1\",\"h\xc3\xa9\xf0\x9f\x98\x80\\n\"],"
			       "\"isLearner\":true}");
	free(j);
	protobuf_c_message_free_unpacked(m, NULL);
	/* a key given twice: the last wins, the first is freed */
	m = decode(&etcdserverpb__put_request__descriptor,
		   "{\"key\":\"YQ==\",\"key\":\"Yg==\",\"value\":null}", err);
	assert_non_null(m);
	assert_memory_equal(((Etcdserverpb__PutRequest *)m)->key.data, "b", 1);
	protobuf_c_message_free_unpacked(m, NULL);
	/* empty body: the empty message */
	m = gw_json_decode(&etcdserverpb__put_request__descriptor, (const uint8_t *)"", 0, err,
			   256);
	assert_non_null(m);
	protobuf_c_message_free_unpacked(m, NULL);
	/* only the first value is read, as Go's decoder does */
	m = decode(&etcdserverpb__put_request__descriptor, "{} trailing", err);
	assert_non_null(m);
	protobuf_c_message_free_unpacked(m, NULL);
}

static void test_malformed(void **state)
{
	(void)state;
	char err[256];
	static const char *const bad[] = {
		"{",
		"{\"key\":\"Zm9v",
		"{\"key\" \"Zm9v\"}",
		"{\"key\":\"Zm9v\",}",
		"{\"key\":\"Zm9v\" \"value\":\"\"}",
		"[]",
		"\"x\"",
		"x",
		"{\"lease\":01}",
		"{\"lease\":-}",
		"{\"prev_kv\":tru}",
		"{\"key\":\"\\x\"}",
		"{\"key\":\"a\nb\"}",
		"{\"bogus\":[1,]}",
		"{\"bogus\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ProtobufCMessage *m = decode(&etcdserverpb__put_request__descriptor, bad[i], err);
		if (m != NULL) {
			fail_msg("accepted %s", bad[i]);
		}
		assert_true(err[0] != '\0');
	}
	assert_null(decode(&etcdserverpb__put_request__descriptor, "{\"key\":\"Zm9v", err));
	assert_string_equal(err, "unexpected EOF");
	assert_null(decode(&etcdserverpb__range_request__descriptor, "{\"limit\":x}", err));
	assert_string_equal(err, "invalid character 'x' in numeric literal");
	/* null in a repeated field of messages is refused, not stored */
	assert_null(decode(&etcdserverpb__txn_request__descriptor, "{\"success\":[null]}", err));
	/* a half-built message is freed on error (ASan checks) */
	assert_null(decode(&etcdserverpb__txn_request__descriptor,
			   "{\"success\":[{\"request_put\":{\"key\":\"YQ==\"}},{\"request_put\":"
			   "{\"key\":\"!\"}}]}",
			   err));
}

static void test_routes(void **state)
{
	(void)state;
	const struct gw_route *r = gw_route_find("/v3/kv/range");
	assert_non_null(r);
	assert_string_equal(r->method, "/etcdserverpb.KV/Range");
	assert_false(r->stream);
	r = gw_route_find("/v3/watch");
	assert_non_null(r);
	assert_true(r->stream);
	assert_non_null(gw_route_find("/v3/kv/lease/revoke"));
	assert_string_equal(gw_route_find("/v3/maintenance/transfer-leadership")->method,
			    "/etcdserverpb.Maintenance/MoveLeader");
	assert_string_equal(gw_route_find("/v3/cluster/member/promote")->method,
			    "/etcdserverpb.Cluster/MemberPromote");
	assert_string_equal(gw_route_find("/v3/cluster/member/update")->method,
			    "/etcdserverpb.Cluster/MemberUpdate");
	/* not bound in etcd 3.4 */
	assert_null(gw_route_find("/v3/maintenance/hashkv"));
	assert_null(gw_route_find("/v3/auth/status"));
	assert_int_equal(gw_http_status(0), 200);
	assert_int_equal(gw_http_status(3), 400);
	assert_int_equal(gw_http_status(5), 404);
	assert_int_equal(gw_http_status(9), 412);
	assert_int_equal(gw_http_status(11), 400);
	assert_int_equal(gw_http_status(14), 503);
	assert_int_equal(gw_http_status(99), 500);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_range_response_shape),
		cmocka_unit_test(test_names_enums_oneofs),
		cmocka_unit_test(test_int64_edges),
		cmocka_unit_test(test_bytes_base64),
		cmocka_unit_test(test_strings_and_unknown_fields),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_routes),
	};
	return cmocka_run_group_tests_name("gateway", tests, NULL, NULL);
}
