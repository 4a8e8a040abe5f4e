/* test_apply.c: committed Requests applied to the store (server/apply.h):
 * each kind of operation answered with etcd's response message, refusals
 * with etcd's gRPC status and message, and a failure of the member (memory)
 * failing the batch instead of refusing the request. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "tmpdir.h"

#define BIN(s) ((ProtobufCBinaryData){ strlen(s), (uint8_t *)(s) })

struct fx {
	char dir[64];
	struct kv_store *s;
	struct kv_wtx *w;
	Etcdserverpb__ResponseHeader h;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	h_tmpdir_make(f->dir, sizeof f->dir, "apply");
	struct kv_options o = { .no_sync = true };
	assert_int_equal(kv_open(f->dir, &o, &f->s), 0);
	assert_int_equal(kv_txn_begin_write(f->s, &f->w), 0);
	etcdserverpb__response_header__init(&f->h);
	f->h.cluster_id = 11;
	f->h.member_id = 22;
	f->h.raft_term = 3;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	kv_txn_abort(f->w);
	kv_close(f->s);
	h_tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static void apply_ok(struct fx *f, const Cairn__Serverpb__Request *req, struct apply_result *r)
{
	assert_int_equal(apply_request(f->w, req, &f->h, r), 0);
	if (r->code != 0)
		fail_msg("refused: %d %s", r->code, r->message);
	assert_non_null(r->resp);
}

static void check_header(const Etcdserverpb__ResponseHeader *h, int64_t rev)
{
	assert_non_null(h);
	assert_int_equal(h->cluster_id, 11);
	assert_int_equal(h->member_id, 22);
	assert_int_equal(h->raft_term, 3);
	assert_int_equal(h->revision, rev);
}

static int64_t put(struct fx *f, const char *k, const char *v, int64_t lease, bool prev,
		   Etcdserverpb__PutResponse **out)
{
	Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	struct apply_result r;
	p.key = BIN(k);
	p.value = BIN(v);
	p.lease = lease;
	p.prev_kv = prev;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_PUT;
	req.put = &p;
	apply_ok(f, &req, &r);
	Etcdserverpb__PutResponse *m = etcdserverpb__put_response__unpack(NULL, r.resp_len, r.resp);
	assert_non_null(m);
	int64_t rev = r.revision;
	check_header(m->header, rev);
	apply_result_free(&r);
	if (out != NULL)
		*out = m;
	else
		etcdserverpb__put_response__free_unpacked(m, NULL);
	return rev;
}

static void test_apply_put_and_prev_kv(void **state)
{
	struct fx *f = *state;
	Etcdserverpb__PutResponse *m;
	assert_int_equal(put(f, "a", "1", 0, true, &m), 2);
	assert_null(m->prev_kv); /* no previous kv */
	etcdserverpb__put_response__free_unpacked(m, NULL);
	assert_int_equal(put(f, "a", "2", 0, true, &m), 3);
	assert_non_null(m->prev_kv);
	assert_int_equal(m->prev_kv->value.len, 1);
	assert_memory_equal(m->prev_kv->value.data, "1", 1);
	assert_int_equal(m->prev_kv->mod_revision, 2);
	assert_int_equal(m->prev_kv->create_revision, 2);
	assert_int_equal(m->prev_kv->version, 1);
	etcdserverpb__put_response__free_unpacked(m, NULL);
}

static void test_apply_delete_range(void **state)
{
	struct fx *f = *state;
	put(f, "k1", "x", 0, false, NULL);
	put(f, "k2", "y", 0, false, NULL);
	Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	struct apply_result r;
	d.key = BIN("k");
	d.range_end = BIN("l");
	d.prev_kv = true;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_DELETE_RANGE;
	req.delete_range = &d;
	apply_ok(f, &req, &r);
	Etcdserverpb__DeleteRangeResponse *m =
		etcdserverpb__delete_range_response__unpack(NULL, r.resp_len, r.resp);
	assert_non_null(m);
	check_header(m->header, 4);
	assert_int_equal(m->deleted, 2);
	assert_int_equal(m->n_prev_kvs, 2);
	assert_memory_equal(m->prev_kvs[1]->key.data, "k2", 2);
	etcdserverpb__delete_range_response__free_unpacked(m, NULL);
	apply_result_free(&r);
}

static void test_apply_txn(void **state)
{
	struct fx *f = *state;
	put(f, "a", "1", 0, false, NULL); /* 2 */
	/* if a == "1": put b, range [a, c), nested txn putting c; else nothing */
	Etcdserverpb__Compare c = ETCDSERVERPB__COMPARE__INIT;
	Etcdserverpb__Compare *cs[1] = { &c };
	c.key = BIN("a");
	c.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
	c.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
	c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
	c.value = BIN("1");
	Etcdserverpb__PutRequest pb = ETCDSERVERPB__PUT_REQUEST__INIT, pc = pb;
	pb.key = BIN("b");
	pb.value = BIN("2");
	pc.key = BIN("c");
	pc.value = BIN("3");
	Etcdserverpb__RangeRequest rg = ETCDSERVERPB__RANGE_REQUEST__INIT;
	rg.key = BIN("a");
	rg.range_end = BIN("c");
	Etcdserverpb__RequestOp op_c = ETCDSERVERPB__REQUEST_OP__INIT;
	op_c.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
	op_c.request_put = &pc;
	Etcdserverpb__RequestOp *inner_ops[1] = { &op_c };
	Etcdserverpb__TxnRequest inner = ETCDSERVERPB__TXN_REQUEST__INIT;
	inner.n_success = 1;
	inner.success = inner_ops;
	Etcdserverpb__RequestOp o1 = ETCDSERVERPB__REQUEST_OP__INIT, o2 = o1, o3 = o1;
	o1.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
	o1.request_put = &pb;
	o2.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
	o2.request_range = &rg;
	o3.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
	o3.request_txn = &inner;
	Etcdserverpb__RequestOp *ops[3] = { &o1, &o2, &o3 };
	Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
	t.n_compare = 1;
	t.compare = cs;
	t.n_success = 3;
	t.success = ops;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_TXN;
	req.txn = &t;
	struct apply_result r;
	apply_ok(f, &req, &r);
	Etcdserverpb__TxnResponse *m = etcdserverpb__txn_response__unpack(NULL, r.resp_len, r.resp);
	assert_non_null(m);
	check_header(m->header, 3);
	assert_true(m->succeeded);
	assert_int_equal(m->n_responses, 3);
	assert_int_equal(m->responses[1]->response_case,
			 ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE);
	Etcdserverpb__RangeResponse *rr = m->responses[1]->response_range;
	/* as in etcd, a response inside a Txn carries its revision only */
	assert_non_null(rr->header);
	assert_int_equal(rr->header->cluster_id, 0);
	assert_int_equal(rr->header->member_id, 0);
	assert_int_equal(rr->header->raft_term, 0);
	assert_int_equal(rr->header->revision, 3);
	assert_int_equal(rr->count, 2); /* a, and b written by this Txn */
	assert_memory_equal(rr->kvs[1]->key.data, "b", 1);
	assert_int_equal(m->responses[2]->response_case,
			 ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN);
	assert_true(m->responses[2]->response_txn->succeeded);
	etcdserverpb__txn_response__free_unpacked(m, NULL);
	apply_result_free(&r);
}

static void expect_refusal(struct fx *f, const Cairn__Serverpb__Request *req, int code,
			   const char *msg)
{
	struct apply_result r;
	assert_int_equal(apply_request(f->w, req, &f->h, &r), 0);
	assert_int_equal(r.code, code);
	assert_string_equal(r.message, msg);
	assert_null(r.resp);
	apply_result_free(&r);
	assert_int_equal(kv_txn_failed(f->w), 0); /* the batch goes on */
}

static void test_apply_refusals(void **state)
{
	struct fx *f = *state;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	expect_refusal(f, &req, 3, "invalid argument"); /* no operation */

	Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_PUT;
	req.put = &p;
	expect_refusal(f, &req, 3, "etcdserver: key is not provided");
	p.key = BIN("k");
	p.lease = 77;
	expect_refusal(f, &req, 5, "etcdserver: requested lease not found");

	Etcdserverpb__CompactionRequest c = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
	c.revision = 100;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_COMPACTION;
	req.compaction = &c;
	expect_refusal(f, &req, 11, "etcdserver: mvcc: required revision is a future revision");

	/* 129 ops in one list, and a Txn nested past the depth bound */
	Etcdserverpb__RangeRequest rg = ETCDSERVERPB__RANGE_REQUEST__INIT;
	rg.key = BIN("a");
	Etcdserverpb__RequestOp o = ETCDSERVERPB__REQUEST_OP__INIT;
	o.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
	o.request_range = &rg;
	Etcdserverpb__RequestOp *many[KV_MAX_TXN_OPS + 1];
	for (size_t i = 0; i < KV_MAX_TXN_OPS + 1; i++)
		many[i] = &o;
	Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
	t.n_success = KV_MAX_TXN_OPS + 1;
	t.success = many;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_TXN;
	req.txn = &t;
	expect_refusal(f, &req, 3, "etcdserver: too many operations in txn request");
	Etcdserverpb__TxnRequest nest[KV_MAX_TXN_DEPTH + 2];
	Etcdserverpb__RequestOp nop[KV_MAX_TXN_DEPTH + 2];
	Etcdserverpb__RequestOp *nops[KV_MAX_TXN_DEPTH + 2];
	for (int i = 0; i < KV_MAX_TXN_DEPTH + 2; i++) {
		etcdserverpb__txn_request__init(&nest[i]);
		etcdserverpb__request_op__init(&nop[i]);
		nops[i] = &nop[i];
		if (i + 1 < KV_MAX_TXN_DEPTH + 2) {
			nop[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
			nop[i].request_txn = &nest[i + 1];
			nest[i].n_success = 1;
			nest[i].success = &nops[i];
		}
	}
	req.txn = &nest[0];
	expect_refusal(f, &req, 3, "invalid argument");
	/* an op with nothing in it */
	Etcdserverpb__RequestOp empty = ETCDSERVERPB__REQUEST_OP__INIT;
	Etcdserverpb__RequestOp *eops[1] = { &empty };
	t.n_success = 1;
	t.success = eops;
	req.txn = &t;
	expect_refusal(f, &req, 3, "invalid argument");
}

static void test_apply_leases(void **state)
{
	struct fx *f = *state;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
	g.id = 5;
	g.ttl = 60;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_LEASE_GRANT;
	req.lease_grant = &g;
	struct apply_result r;
	apply_ok(f, &req, &r);
	Etcdserverpb__LeaseGrantResponse *gm =
		etcdserverpb__lease_grant_response__unpack(NULL, r.resp_len, r.resp);
	assert_non_null(gm);
	assert_int_equal(gm->id, 5);
	assert_int_equal(gm->ttl, 60);
	check_header(gm->header, 1);
	etcdserverpb__lease_grant_response__free_unpacked(gm, NULL);
	apply_result_free(&r);
	expect_refusal(f, &req, 9, "etcdserver: lease already exists");

	put(f, "x", "1", 5, false, NULL); /* 2 */
	put(f, "y", "1", 5, false, NULL); /* 3 */

	Etcdserverpb__LeaseCheckpoint cp = ETCDSERVERPB__LEASE_CHECKPOINT__INIT;
	Etcdserverpb__LeaseCheckpoint *cps[1] = { &cp };
	cp.id = 5;
	cp.remaining_ttl = 30;
	Etcdserverpb__LeaseCheckpointRequest c = ETCDSERVERPB__LEASE_CHECKPOINT_REQUEST__INIT;
	c.n_checkpoints = 1;
	c.checkpoints = cps;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_LEASE_CHECKPOINT;
	req.lease_checkpoint = &c;
	apply_ok(f, &req, &r);
	apply_result_free(&r);

	Etcdserverpb__LeaseRevokeRequest v = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
	v.id = 5;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_LEASE_REVOKE;
	req.lease_revoke = &v;
	apply_ok(f, &req, &r);
	assert_int_equal(r.revision, 4); /* both keys deleted at one revision */
	Etcdserverpb__LeaseRevokeResponse *vm =
		etcdserverpb__lease_revoke_response__unpack(NULL, r.resp_len, r.resp);
	assert_non_null(vm);
	check_header(vm->header, 4);
	etcdserverpb__lease_revoke_response__free_unpacked(vm, NULL);
	apply_result_free(&r);
	expect_refusal(f, &req, 5, "etcdserver: requested lease not found");
}

static void test_apply_range_through_the_log(void **state)
{
	struct fx *f = *state;
	put(f, "a", "1", 0, false, NULL);
	Etcdserverpb__RangeRequest rg = ETCDSERVERPB__RANGE_REQUEST__INIT;
	rg.key = BIN("a");
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_RANGE;
	req.range = &rg;
	struct apply_result r;
	apply_ok(f, &req, &r); /* sees the batch's own put */
	Etcdserverpb__RangeResponse *m =
		etcdserverpb__range_response__unpack(NULL, r.resp_len, r.resp);
	assert_non_null(m);
	assert_int_equal(m->count, 1);
	assert_memory_equal(m->kvs[0]->value.data, "1", 1);
	check_header(m->header, 2);
	etcdserverpb__range_response__free_unpacked(m, NULL);
	apply_result_free(&r);
	rg.revision = 9;
	expect_refusal(f, &req, 11, "etcdserver: mvcc: required revision is a future revision");
}

/* A heap that fails every allocation once armed. */
static bool fail_all;
static void *t_malloc(void *ctx, size_t size)
{
	(void)ctx;
	return fail_all ? NULL : malloc(size);
}
static void *t_realloc(void *ctx, void *p, size_t size)
{
	(void)ctx;
	return fail_all ? NULL : realloc(p, size);
}
static void t_free(void *ctx, void *p)
{
	(void)ctx;
	free(p);
}

static void test_apply_member_failure_fails_the_batch(void **state)
{
	struct fx *f = *state;
	static const struct kv_heap h = { NULL, t_malloc, t_realloc, t_free };
	Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	struct apply_result r;
	p.key = BIN("k");
	p.value = BIN("v");
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_PUT;
	req.put = &p;
	kv_heap_set(&h);
	fail_all = true;
	int err = apply_request(f->w, &req, &f->h, &r);
	fail_all = false;
	kv_heap_set(NULL);
	assert_int_equal(err, KV_ENOMEM);
	assert_int_equal(kv_txn_failed(f->w), KV_ENOMEM);
	assert_int_equal(kv_txn_commit(f->w, 1), KV_ENOMEM);
	/* applied again, it goes through */
	assert_int_equal(kv_txn_begin_write(f->s, &f->w), 0);
	apply_ok(f, &req, &r);
	apply_result_free(&r);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_apply_put_and_prev_kv),
		T(test_apply_delete_range),
		T(test_apply_txn),
		T(test_apply_refusals),
		T(test_apply_leases),
		T(test_apply_range_through_the_log),
		T(test_apply_member_failure_fails_the_batch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
