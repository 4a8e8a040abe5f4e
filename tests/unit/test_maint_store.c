/* test_maint_store.c: what the store keeps for maintenance. etcd's alarms: the store's alarm table (kv_mvcc.h, "Alarms"): raised and
 * cleared inside a batch, gone with an aborted batch, kept across a reopen and in a snapshot
 * copy, no revision taken. The AlarmRequest applied (server/apply.c): GET, ACTIVATE and
 * DEACTIVATE answered as etcd answers them, and the capped applier while NOSPACE is raised
 * (Put, a Txn that puts, a lease grant refused; Range, delete, a Txn without a put, compaction
 * go on). The store's space figures; the removed ids forgotten for a restored cluster; and the
 * store's hash (server/maint.h) equal for equal stores whatever their member ids, different once
 * an alarm differs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apply.h"
#include "maint.h"
#include "tmpdir.h"

#define BIN(s) ((ProtobufCBinaryData){ strlen(s), (uint8_t *)(s) })
#define NOSPACE ETCDSERVERPB__ALARM_TYPE__NOSPACE
#define CORRUPT ETCDSERVERPB__ALARM_TYPE__CORRUPT

struct fx {
	char dir[64];
	struct kv_store *s;
	uint64_t applied;
	Etcdserverpb__ResponseHeader h;
};

static void reopen(struct fx *f)
{
	struct kv_options o = { .no_sync = true };
	kv_close(f->s);
	f->s = NULL;
	assert_int_equal(kv_open(f->dir, &o, &f->s), 0);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	h_tmpdir_make(f->dir, sizeof f->dir, "maint-store");
	reopen(f);
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
	kv_close(f->s);
	h_tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static struct kv_wtx *begin(struct fx *f)
{
	struct kv_wtx *w = NULL;
	assert_int_equal(kv_txn_begin_write(f->s, &w), 0);
	return w;
}

static void commit(struct fx *f, struct kv_wtx *w)
{
	assert_int_equal(kv_txn_commit(w, ++f->applied), 0);
}

static size_t count(struct fx *f, uint64_t member, uint32_t type)
{
	struct kv_alarms a;
	size_t n = 0;
	assert_int_equal(kv_alarms_list(f->s, &a), 0);
	for (size_t i = 0; i < a.n; i++)
		n += a.v[i].member_id == member && a.v[i].type == type;
	kv_alarms_free(&a);
	return n;
}

static void test_table(void **state)
{
	struct fx *f = *state;
	struct kv_wtx *w = begin(f);
	bool changed = false, on = true;
	assert_int_equal(kv_alarm_active_w(w, NOSPACE, &on), 0);
	assert_false(on);
	assert_int_equal(kv_alarm_set(w, 7, NOSPACE, true, &changed), 0);
	assert_true(changed);
	assert_int_equal(kv_alarm_set(w, 7, NOSPACE, true, &changed), 0);
	assert_false(changed); /* already raised */
	assert_int_equal(kv_alarm_set(w, 5, CORRUPT, true, NULL), 0);
	assert_int_equal(kv_alarm_set(w, 5, 0, true, NULL), KV_EINVAL);
	assert_int_equal(kv_alarm_active_w(w, NOSPACE, &on), 0);
	assert_true(on);
	struct kv_alarms a;
	assert_int_equal(kv_alarms_list_w(w, &a), 0);
	assert_int_equal(a.n, 2);
	assert_int_equal(a.v[0].member_id, 5); /* by member id */
	assert_int_equal(a.v[0].type, CORRUPT);
	assert_int_equal(a.v[1].member_id, 7);
	kv_alarms_free(&a);
	assert_int_equal(count(f, 7, NOSPACE), 0); /* not committed yet */
	commit(f, w);
	assert_int_equal(count(f, 7, NOSPACE), 1);

	struct kv_status st;
	assert_int_equal(kv_status(f->s, &st), 0);
	assert_int_equal(st.revision, 1); /* alarms take no revision */

	/* an aborted batch leaves nothing */
	w = begin(f);
	assert_int_equal(kv_alarm_set(w, 7, NOSPACE, false, &changed), 0);
	assert_true(changed);
	kv_txn_abort(w);
	assert_int_equal(count(f, 7, NOSPACE), 1);

	/* kept across a reopen */
	reopen(f);
	assert_int_equal(count(f, 7, NOSPACE), 1);
	w = begin(f);
	assert_int_equal(kv_alarm_set(w, 7, NOSPACE, false, &changed), 0);
	assert_true(changed);
	assert_int_equal(kv_alarm_set(w, 7, NOSPACE, false, &changed), 0);
	assert_false(changed);
	commit(f, w);
	assert_int_equal(count(f, 7, NOSPACE), 0);
	assert_int_equal(count(f, 5, CORRUPT), 1);
}

static void test_snapshot_carries(void **state)
{
	struct fx *f = *state;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_alarm_set(w, 9, NOSPACE, true, NULL), 0);
	commit(f, w);
	char file[128];
	snprintf(file, sizeof file, "%s/copy.mdb", f->dir);
	int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(kv_snapshot_copy_fd(f->s, fd), 0);
	close(fd);
	w = begin(f);
	assert_int_equal(kv_alarm_set(w, 9, NOSPACE, false, NULL), 0);
	commit(f, w);
	assert_int_equal(count(f, 9, NOSPACE), 0);
	assert_int_equal(kv_snapshot_install(f->s, file), 0);
	assert_int_equal(count(f, 9, NOSPACE), 1);
}

static void test_space(void **state)
{
	struct fx *f = *state;
	struct kv_space sp, rough;
	assert_int_equal(kv_space(f->s, true, &sp), 0);
	assert_int_equal(sp.quota_bytes, KV_DEFAULT_QUOTA);
	assert_true(sp.file_bytes > 0);
	assert_true(sp.used_bytes > 0 && sp.used_bytes <= sp.file_bytes);
	assert_int_equal(kv_space(f->s, false, &rough), 0);
	assert_int_equal(rough.used_bytes, rough.file_bytes); /* within the quota: the bound */
}

static void test_clear_removed(void **state)
{
	struct fx *f = *state;
	bool removed = false;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_member_set_removed(w, 3), 0);
	assert_int_equal(kv_member_set_removed(w, 4), 0);
	commit(f, w);
	assert_int_equal(kv_member_removed(f->s, 3, &removed), 0);
	assert_true(removed);
	w = begin(f);
	assert_int_equal(kv_member_clear_removed(w), 0);
	assert_int_equal(kv_member_removed_w(w, 4, &removed), 0);
	assert_false(removed);
	commit(f, w);
	reopen(f);
	assert_int_equal(kv_member_removed(f->s, 3, &removed), 0);
	assert_false(removed);
	w = begin(f); /* the table still works */
	assert_int_equal(kv_member_set_removed(w, 5), 0);
	commit(f, w);
	assert_int_equal(kv_member_removed(f->s, 5, &removed), 0);
	assert_true(removed);
}

/* ---- the AlarmRequest and the capped applier ---- */

static Etcdserverpb__AlarmResponse *alarm_req(struct fx *f, struct kv_wtx *w, int action,
					      uint64_t member, int type)
{
	Etcdserverpb__AlarmRequest ar = ETCDSERVERPB__ALARM_REQUEST__INIT;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	struct apply_result r;
	ar.action = (Etcdserverpb__AlarmRequest__AlarmAction)action;
	ar.memberid = member;
	ar.alarm = (Etcdserverpb__AlarmType)type;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_ALARM;
	req.alarm = &ar;
	assert_int_equal(apply_request(w, &req, &f->h, &r), 0);
	assert_int_equal(r.code, 0);
	Etcdserverpb__AlarmResponse *out =
		etcdserverpb__alarm_response__unpack(NULL, r.resp_len, r.resp);
	assert_non_null(out);
	assert_null(out->header); /* etcd 3.4 answers Alarm without one */
	apply_result_free(&r);
	return out;
}

static int apply_code(struct fx *f, struct kv_wtx *w, Cairn__Serverpb__Request *req,
		      const char **msg)
{
	struct apply_result r;
	assert_int_equal(apply_request(w, req, &f->h, &r), 0);
	int code = r.code;
	*msg = r.message;
	apply_result_free(&r);
	return code;
}

static int put(struct fx *f, struct kv_wtx *w, const char *k, const char **msg)
{
	Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	p.key = BIN(k);
	p.value = BIN("v");
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_PUT;
	req.put = &p;
	return apply_code(f, w, &req, msg);
}

static int txn(struct fx *f, struct kv_wtx *w, bool with_put, const char **msg)
{
	Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT, inner_op;
	Etcdserverpb__TxnRequest inner = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__RequestOp *ops[1] = { &op }, *inner_ops[1] = { &inner_op };
	Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
	Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	etcdserverpb__request_op__init(&inner_op);
	p.key = BIN("t");
	p.value = BIN("v");
	d.key = BIN("t");
	if (with_put) {
		/* the put is nested, on the failure path of the inner Txn */
		inner_op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
		inner_op.request_put = &p;
		inner.n_failure = 1;
		inner.failure = inner_ops;
		op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
		op.request_txn = &inner;
	} else {
		op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
		op.request_delete_range = &d;
	}
	t.n_success = 1;
	t.success = ops;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_TXN;
	req.txn = &t;
	return apply_code(f, w, &req, msg);
}

static void test_apply(void **state)
{
	struct fx *f = *state;
	struct kv_wtx *w = begin(f);
	const char *msg = NULL;
	assert_int_equal(put(f, w, "a", &msg), 0);

	Etcdserverpb__AlarmResponse *r = alarm_req(f, w, 0, 0, 0); /* GET: none */
	assert_int_equal(r->n_alarms, 0);
	etcdserverpb__alarm_response__free_unpacked(r, NULL);

	r = alarm_req(f, w, 1, 42, NOSPACE); /* ACTIVATE answers the alarm */
	assert_int_equal(r->n_alarms, 1);
	assert_int_equal(r->alarms[0]->memberid, 42);
	assert_int_equal(r->alarms[0]->alarm, NOSPACE);
	etcdserverpb__alarm_response__free_unpacked(r, NULL);
	r = alarm_req(f, w, 1, 43, CORRUPT);
	etcdserverpb__alarm_response__free_unpacked(r, NULL);

	r = alarm_req(f, w, 0, 0, 0); /* GET of every type */
	assert_int_equal(r->n_alarms, 2);
	etcdserverpb__alarm_response__free_unpacked(r, NULL);
	r = alarm_req(f, w, 0, 0, NOSPACE); /* GET of one type */
	assert_int_equal(r->n_alarms, 1);
	assert_int_equal(r->alarms[0]->memberid, 42);
	etcdserverpb__alarm_response__free_unpacked(r, NULL);

	/* capped: writes that put refused with etcd's NOSPACE */
	assert_int_equal(put(f, w, "b", &msg), 8);
	assert_string_equal(msg, "etcdserver: mvcc: database space exceeded");
	assert_int_equal(txn(f, w, true, &msg), 8);
	Etcdserverpb__LeaseGrantRequest lg = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	lg.id = 5;
	lg.ttl = 10;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_LEASE_GRANT;
	req.lease_grant = &lg;
	assert_int_equal(apply_code(f, w, &req, &msg), 8);
	/* ... the rest goes on */
	assert_int_equal(txn(f, w, false, &msg), 0);
	Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	d.key = BIN("a");
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_DELETE_RANGE;
	req.delete_range = &d;
	assert_int_equal(apply_code(f, w, &req, &msg), 0);
	Etcdserverpb__CompactionRequest c = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
	c.revision = 2;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_COMPACTION;
	req.compaction = &c;
	assert_int_equal(apply_code(f, w, &req, &msg), 0);

	/* DEACTIVATE answers the alarm it cleared, nothing for one not raised */
	r = alarm_req(f, w, 2, 42, NOSPACE);
	assert_int_equal(r->n_alarms, 1);
	etcdserverpb__alarm_response__free_unpacked(r, NULL);
	r = alarm_req(f, w, 2, 42, NOSPACE);
	assert_int_equal(r->n_alarms, 0);
	etcdserverpb__alarm_response__free_unpacked(r, NULL);
	assert_int_equal(put(f, w, "b", &msg), 0); /* CORRUPT does not cap */
	commit(f, w);
}

static void test_store_hash(void **state)
{
	struct fx *f = *state;
	struct fx g = { 0 };
	h_tmpdir_make(g.dir, sizeof g.dir, "maint-store-hash");
	reopen(&g);
	const char *msg;
	uint32_t h1, h2;
	int64_t r1, r2;
	for (int i = 0; i < 2; i++) {
		struct fx *x = i == 0 ? f : &g;
		struct kv_wtx *w = begin(x);
		assert_int_equal(put(x, w, "k", &msg), 0);
		assert_int_equal(kv_set_ids(w, 1, i == 0 ? 100 : 200), 0); /* not hashed */
		commit(x, w);
	}
	assert_int_equal(maint_store_hash(f->s, &h1, &r1), 0);
	assert_int_equal(maint_store_hash(g.s, &h2, &r2), 0);
	assert_int_equal(h1, h2);
	assert_int_equal(r1, 2);
	assert_int_equal(r2, 2);
	struct kv_wtx *w = begin(&g);
	assert_int_equal(kv_alarm_set(w, 1, NOSPACE, true, NULL), 0);
	commit(&g, w);
	assert_int_equal(maint_store_hash(g.s, &h2, &r2), 0);
	assert_int_not_equal(h1, h2);
	kv_close(g.s);
	h_tmpdir_remove(g.dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_carries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_space, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clear_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_hash, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
