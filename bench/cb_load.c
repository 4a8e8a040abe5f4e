/* cb_load.c: cairn-bench's load engine: one libuv loop, one libcairn client, a fixed array of
 * slots (one per outstanding request), the workloads, and what is recorded per operation
 * (histograms, the per-second series, the fault log, the linearizability history).
 *
 * Cost per operation: no allocation and no formatting. Keys and values are written into one
 * scratch buffer each (libcairn encodes its arguments before returning), the key index and the
 * value id in place; only --check adds lin_history_add's copy of the op.
 *
 * Closed loop (--clients N): each slot starts its next request when the last one ends. Open loop
 * (--rate R): request k is due at t_begin + k/R; a 1 ms timer issues what is due on free slots,
 * and latency runs from the due time, so a stalled server is charged for the requests it held
 * back (no coordinated omission). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "cairn.h"
#include "cb_bench.h"
#include "lincheck.h"

/* A read whose value does not decode: never written by this run, so the checker rejects it. */
#define CB_BAD_ID (UINT64_MAX - 1)
/* Put responses remembered by revision for the watch latency (a ring: older ones are lost). */
#define WATCH_RING (1u << 18)
#define ID_MUL UINT64_C(0x9E3779B97F4A7C15)

enum phase { P_POPULATE, P_WARMUP, P_MEASURE, P_DRAIN, P_CLOSING };

/* One op of the fault log: enough to compute unavailability and the windows after a fault. */
struct oplog_ent {
	uint64_t call, end, lat;
	uint8_t write, ok;
};

struct cache_ent {
	uint64_t id;  /* the value last seen (0: absent) */
	int64_t mod;  /* its mod_revision (0: absent) */
	int64_t seen; /* the revision it was seen at, to keep only newer observations */
};

struct run;

struct slot {
	struct run *r;
	uint32_t idx;
	uint8_t kind; /* enum cb_kind of the request in flight */
	uint8_t step; /* 0: the next request starts a new operation; else the cycle's step */
	bool busy;
	bool measured; /* issued in the measured phase */
	bool parked;
	bool ok;        /* the last request succeeded */
	bool serial;    /* the read in flight is serializable */
	bool more;      /* a list page said there is more */
	uint64_t start; /* latency origin: due time (open loop) or issue time */
	uint64_t call;  /* issue time, for the history and the fault log */
	uint32_t key;
	uint64_t id;     /* value written */
	uint64_t cmp_id; /* CAS: the value expected */
	int64_t cmp_mod;
	int64_t lease;
	struct cairn_keepalive *ka;
	bool ka_answered;
	bool lease_attached; /* the put with the lease may have happened */
	struct slot *next;   /* free or parked list */
};

struct watch_ctx {
	struct run *r;
	uint32_t idx;
};

struct run {
	const struct cb_opts *o;
	struct cb_result *res;
	struct cl_cluster *cl;
	uv_loop_t loop;
	uv_timer_t tick;
	uv_signal_t sig_int, sig_term;
	struct cairn_client *cli;
	bool cli_closed;
	int phase;
	uint64_t t_begin, t0, t_stop, drain_deadline, measure_end;
	bool sched_started;
	/* slots */
	struct slot *slots;
	uint32_t n_slots, busy;
	struct slot *free_list, *parked;
	/* open loop */
	uint64_t period_ns, sched_k;
	/* counters */
	uint64_t issued_measured;
	uint64_t next_id;
	uint64_t rng;
	uint64_t seq_next;
	uint64_t nonce;
	/* keys: prefix, 8 hex digits of the run tag, '/', the index, padding */
	uint8_t *key, *key2, *val, *cmpval, *range_end;
	size_t key_len, idx_off, range_end_len, base_len;
	int digits;
	struct cache_ent *cache;
	/* populate */
	uint64_t pop_next, pop_done, pop_total;
	/* per-second series */
	struct hist sec_hist;
	size_t cur_sec, cap_secs, last_sec;
	uint64_t sec_ops, sec_err;
	uint64_t last_progress;
	bool progress;
	/* watches */
	struct watch_ctx *wctx;
	uint64_t
		*wlast; /* k8s: [watcher][key] the value of the last event (UINT64_MAX: none yet) */
	struct cairn_watch **watches;
	uint32_t n_watches, watches_live;
	struct {
		int64_t rev;
		uint64_t t;
	} * ring; /* by revision: the put's response */
	struct {
		uint64_t id, t;
	} * idring; /* by value id: the put's start */
	/* history and fault log */
	struct lin_history *hist;
	struct oplog_ent *oplog;
	size_t n_oplog, cap_oplog;
	bool oplog_on;
};

static volatile sig_atomic_t interrupted;

bool cb_interrupted(void)
{
	return interrupted != 0;
}

void cb_set_interrupted(void)
{
	interrupted = 1;
}

uint64_t cb_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(struct run *r)
{
	/* xorshift64*: cheap, and the seed reproduces the key order. */
	uint64_t x = r->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	r->rng = x;
	return x * UINT64_C(2685821657736338717);
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* ---- keys and values ---- */

static void key_write(struct run *r, uint8_t *buf, uint64_t idx)
{
	uint8_t *d = buf + r->idx_off;
	for (int i = r->digits - 1; i >= 0; i--) {
		d[i] = (uint8_t)('0' + idx % 10);
		idx /= 10;
	}
}

static const uint8_t *key_of(struct run *r, uint64_t idx)
{
	key_write(r, r->key, idx);
	return r->key;
}

/* The key index of a key of this run, or UINT64_MAX. */
static uint64_t key_index(const struct run *r, const uint8_t *k, size_t len)
{
	if (len != r->key_len || memcmp(k, r->key, r->idx_off) != 0)
		return UINT64_MAX;
	uint64_t v = 0;
	for (int i = 0; i < r->digits; i++) {
		uint8_t c = k[r->idx_off + (size_t)i];
		if (c < '0' || c > '9')
			return UINT64_MAX;
		v = v * 10 + (uint64_t)(c - '0');
	}
	return v < r->o->key_space ? v : UINT64_MAX;
}

static void val_encode(const struct run *r, uint8_t *buf, uint64_t id)
{
	if (r->o->val_size >= 8)
		put_le64(buf, id);
	if (r->o->val_size >= 16)
		put_le64(buf + 8, (id * ID_MUL) ^ r->nonce);
}

static uint64_t val_decode(const struct run *r, const uint8_t *v, size_t len)
{
	if (len != r->o->val_size || len < 16)
		return CB_BAD_ID;
	uint64_t id = get_le64(v);
	if (id == 0 || id >= r->next_id || get_le64(v + 8) != ((id * ID_MUL) ^ r->nonce))
		return CB_BAD_ID;
	return id;
}

static uint64_t pick_key(struct run *r)
{
	if (r->o->sequential)
		return r->seq_next++ % r->o->key_space;
	return rng_next(r) % r->o->key_space;
}

/* ---- recording ---- */

static bool kind_is_write(int k)
{
	return k == CB_K_PUT || k == CB_K_TXN || k == CB_K_DELETE || k == CB_K_GRANT ||
	       k == CB_K_REVOKE;
}

/* Whether a failed write certainly did not happen. Everything else (the connection broke, a
 * deadline, "etcdserver: request timed out" after the proposal was made) may have been applied:
 * the history then has it with an unknown outcome, which is always safe for the check. */
static bool certainly_not_applied(const struct cairn_status *st)
{
	if (st->maybe_applied)
		return false;
	switch (st->code) {
	case CAIRN_INVALID_ARGUMENT:
	case CAIRN_NOT_FOUND:
	case CAIRN_ALREADY_EXISTS:
	case CAIRN_PERMISSION_DENIED:
	case CAIRN_RESOURCE_EXHAUSTED:
	case CAIRN_FAILED_PRECONDITION:
	case CAIRN_OUT_OF_RANGE:
	case CAIRN_UNIMPLEMENTED:
	case CAIRN_UNAUTHENTICATED:
		return true;
	default:
		return false;
	}
}

static void sec_flush(struct run *r)
{
	struct cb_result *res = r->res;
	if (r->cur_sec >= r->cap_secs)
		return;
	struct cb_sec *s = &res->secs[r->cur_sec];
	s->ops = r->sec_ops;
	s->errors = r->sec_err;
	s->p50 = hist_percentile(&r->sec_hist, 50);
	s->p99 = hist_percentile(&r->sec_hist, 99);
	s->max = hist_max(&r->sec_hist);
	if (res->n_secs < r->cur_sec + 1)
		res->n_secs = r->cur_sec + 1;
	hist_reset(&r->sec_hist);
	r->sec_ops = r->sec_err = 0;
}

/* Moves the per-second series to the second of `now`, closing the seconds before it. */
static void sec_advance(struct run *r, uint64_t now)
{
	if (r->phase < P_MEASURE)
		return;
	size_t sec = (size_t)((now - r->t0) / 1000000000u);
	if (sec > r->last_sec)
		sec = r->last_sec; /* what ends while draining counts in the last second */
	while (r->cur_sec < sec) {
		sec_flush(r);
		r->cur_sec++;
	}
}

static void oplog_add(struct run *r, const struct slot *s, uint64_t now, bool ok)
{
	if (!r->oplog_on)
		return;
	if (r->n_oplog == r->cap_oplog) {
		size_t cap = r->cap_oplog ? r->cap_oplog * 2 : 65536;
		if (cap > r->o->max_history)
			cap = (size_t)r->o->max_history;
		if (cap <= r->n_oplog) {
			if (!r->res->oplog_overflow && !r->o->quiet)
				fprintf(stderr,
					"cairn-bench: the fault log is full (--max-history %" PRIu64
					" ops): fault figures use the ops recorded so far\n",
					r->o->max_history);
			r->res->oplog_overflow = true;
			return;
		}
		void *p = realloc(r->oplog, cap * sizeof *r->oplog);
		if (!p) {
			r->res->oplog_overflow = true;
			return;
		}
		r->oplog = p;
		r->cap_oplog = cap;
	}
	struct oplog_ent *e = &r->oplog[r->n_oplog++];
	e->call = s->call;
	e->end = now;
	e->lat = now - s->start;
	e->write = kind_is_write(s->kind);
	e->ok = ok;
}

/* Counts one finished request of slot s in the statistics. */
static void record(struct slot *s, const struct cairn_status *st, uint64_t now)
{
	struct run *r = s->r;
	struct cb_result *res = r->res;
	bool ok = st->code == 0;
	s->ok = ok;
	if (r->phase == P_CLOSING && st->code == CAIRN_CANCELLED) {
		res->cancelled_at_end++;
		return;
	}
	if (!s->measured) {
		if (r->phase != P_POPULATE)
			res->warmup_ops++;
		return;
	}
	uint64_t lat = now - s->start;
	int k = s->kind;
	res->ops++;
	res->kind_ops[k]++;
	sec_advance(r, now);
	r->sec_ops++;
	if (ok) {
		hist_record(&res->all, lat);
		hist_record(&res->kind[k], lat);
		hist_record(&r->sec_hist, lat);
	} else {
		res->errors++;
		res->kind_errors[k]++;
		r->sec_err++;
		int c = st->code >= 0 && st->code <= 16 ? st->code : CAIRN_UNKNOWN;
		res->errors_by_code[c]++;
	}
	oplog_add(r, s, now, ok);
}

static void hist_add(struct run *r, const struct lin_op *op)
{
	if (!r->hist)
		return;
	if (lin_history_len(r->hist) >= r->o->max_history) {
		fprintf(stderr,
			"cairn-bench: the history reached --max-history %" PRIu64
			" ops: recording stops and the check will not run (raise --max-history, or "
			"shorten the run)\n",
			r->o->max_history);
		r->res->check.overflow = true;
		lin_history_free(r->hist);
		r->hist = NULL;
		return;
	}
	if (lin_history_add(r->hist, op) != 0) {
		fprintf(stderr, "cairn-bench: out of memory recording the history: the check "
				"will not run\n");
		r->res->check.overflow = true;
		lin_history_free(r->hist);
		r->hist = NULL;
		return;
	}
	if (op->ret == LIN_RETURN_UNKNOWN)
		r->res->check.unknown++;
}

/* A write's history entry: ret is now, or unknown when it failed and may have happened; a write
 * that certainly did not happen is left out. */
static bool write_ret(const struct cairn_status *st, uint64_t now, uint64_t *ret)
{
	if (st->code == 0) {
		*ret = now;
		return true;
	}
	if (certainly_not_applied(st))
		return false;
	*ret = LIN_RETURN_UNKNOWN;
	return true;
}

static void hist_step(struct run *r, struct slot *s, uint64_t ret, int kind, uint64_t value,
		      uint32_t key)
{
	struct lin_step step = { .kind = (uint8_t)kind, .key = key, .value = value };
	struct lin_op op = { .client = s->idx,
			     .call = s->call,
			     .ret = ret,
			     .then = &step,
			     .n_then = 1,
			     .succeeded = true };
	hist_add(r, &op);
}

static void cache_see(struct run *r, uint32_t key, uint64_t id, int64_t mod, int64_t seen)
{
	if (!r->cache)
		return;
	struct cache_ent *c = &r->cache[key];
	if (seen >= c->seen) {
		c->id = id;
		c->mod = mod;
		c->seen = seen;
	}
}

/* ---- multi-request operations: s->step is the step in flight (0: a one-request op) ---- */

enum step {
	S_NONE = 0,
	S_UPD_READ,  /* k8s update: the read */
	S_UPD_CAS,   /* k8s update: the Txn on the mod_revision read */
	S_LIST,      /* k8s list: one page */
	S_GRANT,     /* lease: grant */
	S_LEASE_PUT, /* lease: put with the lease */
	S_KA,        /* lease: one keepalive answer */
	S_REVOKE,    /* lease: revoke */
};

/* ---- the slot machine ---- */

static void slot_issue(struct slot *s);
static void slot_done(struct slot *s);

static void slot_park(struct slot *s)
{
	struct run *r = s->r;
	r->res->local_errors++;
	s->parked = true;
	s->next = r->parked;
	r->parked = s;
}

/* Starts a request: the common bookkeeping; rc is what the cairn_*() call returned. */
static void started(struct slot *s, int rc)
{
	if (rc < 0) {
		/* Nothing started: retried from the next tick (1 ms) rather than spinning. */
		slot_park(s);
	}
}

static void on_put(void *data, const struct cairn_status *st, const struct cairn_put_result *res)
{
	struct slot *s = data;
	struct run *r = s->r;
	uint64_t now = cb_now_ns();
	record(s, st, now);
	uint64_t ret;
	if (write_ret(st, now, &ret))
		hist_step(r, s, ret, LIN_PUT, s->id, s->key);
	if (st->code == 0) {
		int64_t rev = res->header.revision;
		cache_see(r, s->key, s->id, rev, rev);
		if (r->ring) {
			size_t i = (size_t)rev & (WATCH_RING - 1);
			r->ring[i].rev = rev;
			r->ring[i].t = now;
		}
	}
	if (s->step == S_LEASE_PUT)
		s->lease_attached = st->code == 0 || !certainly_not_applied(st);
	if (r->phase == P_POPULATE)
		r->pop_done++; /* attempted: a failed populate put leaves its key absent */
	slot_done(s);
}

static void issue_put(struct slot *s, uint32_t key, int64_t lease)
{
	struct run *r = s->r;
	s->kind = CB_K_PUT;
	s->key = key;
	s->id = r->next_id++;
	val_encode(r, r->val, s->id);
	if (r->idring) {
		size_t i = (size_t)s->id & (WATCH_RING - 1);
		r->idring[i].id = s->id;
		r->idring[i].t = s->call;
	}
	struct cairn_put_opts po = { .lease = lease };
	started(s, cairn_put(r->cli, key_of(r, key), r->key_len, r->val, r->o->val_size,
			     lease ? &po : NULL, on_put, s));
}

static void on_get(void *data, const struct cairn_status *st, const struct cairn_range_result *res)
{
	struct slot *s = data;
	struct run *r = s->r;
	uint64_t now = cb_now_ns();
	record(s, st, now);
	if (st->code == 0) {
		uint64_t id = 0;
		int64_t mod = 0;
		if (res->n_kvs > 0) {
			id = val_decode(r, res->kvs[0].value, res->kvs[0].value_len);
			mod = res->kvs[0].mod_revision;
			if (id == CB_BAD_ID)
				r->res->check.bad_values++;
		}
		if (s->serial) {
			r->res->check.skipped_serializable += r->hist ? 1 : 0;
		} else {
			hist_step(r, s, now, LIN_GET, id, s->key);
		}
		cache_see(r, s->key, id, mod, res->header.revision);
		s->cmp_id = id;
		s->cmp_mod = mod;
	}
	slot_done(s);
}

static void issue_get(struct slot *s, uint32_t key, bool serializable)
{
	struct run *r = s->r;
	s->kind = CB_K_GET;
	s->key = key;
	s->serial = serializable;
	struct cairn_range_opts ro = { .serializable = serializable };
	started(s, cairn_range(r->cli, key_of(r, key), r->key_len, &ro, on_get, s));
}

static void on_list(void *data, const struct cairn_status *st, const struct cairn_range_result *res)
{
	struct slot *s = data;
	struct run *r = s->r;
	record(s, st, cb_now_ns());
	/* k8s: a paged list continues after the last key while the server says there is more. */
	s->more = false;
	if (st->code == 0 && res->more && res->n_kvs > 0) {
		const struct cairn_kv *last = &res->kvs[res->n_kvs - 1];
		uint64_t idx = key_index(r, last->key, last->key_len);
		if (idx != UINT64_MAX && idx + 1 < r->o->key_space) {
			s->key = (uint32_t)(idx + 1);
			s->more = true;
		}
	}
	slot_done(s);
}

static void issue_list(struct slot *s, uint32_t from)
{
	struct run *r = s->r;
	s->kind = CB_K_LIST;
	s->key = from;
	struct cairn_range_opts ro = { .range_end = r->range_end,
				       .range_end_len = r->range_end_len,
				       .limit = r->o->limit,
				       .serializable = r->o->serializable };
	started(s, cairn_range(r->cli, key_of(r, from), r->key_len, &ro, on_list, s));
}

static void on_delete(void *data, const struct cairn_status *st,
		      const struct cairn_delete_result *res)
{
	struct slot *s = data;
	struct run *r = s->r;
	uint64_t now = cb_now_ns();
	record(s, st, now);
	uint64_t ret;
	if (write_ret(st, now, &ret))
		hist_step(r, s, ret, LIN_DELETE, 0, s->key);
	if (st->code == 0)
		cache_see(r, s->key, 0, 0, res->header.revision);
	slot_done(s);
}

static void issue_delete(struct slot *s, uint32_t key)
{
	struct run *r = s->r;
	s->kind = CB_K_DELETE;
	s->key = key;
	started(s, cairn_delete(r->cli, key_of(r, key), r->key_len, NULL, on_delete, s));
}

static void on_txn(void *data, const struct cairn_status *st, const struct cairn_txn_result *res)
{
	struct slot *s = data;
	struct run *r = s->r;
	uint64_t now = cb_now_ns();
	record(s, st, now);
	struct lin_cmp cmp = { .key = s->key, .value = s->cmp_id };
	struct lin_step then = { .kind = LIN_PUT, .key = s->key, .value = s->id };
	struct lin_step els = { .kind = LIN_GET, .key = s->key, .value = 0 };
	struct lin_op op = { .client = s->idx,
			     .call = s->call,
			     .cmps = &cmp,
			     .n_cmps = 1,
			     .then = &then,
			     .n_then = 1,
			     .els = &els,
			     .n_els = 1 };
	if (st->code == 0) {
		op.ret = now;
		op.succeeded = res->succeeded;
		int64_t rev = res->header.revision;
		if (res->succeeded) {
			cache_see(r, s->key, s->id, rev, rev);
			if (r->ring) {
				size_t i = (size_t)rev & (WATCH_RING - 1);
				r->ring[i].rev = rev;
				r->ring[i].t = now;
			}
		} else {
			if (s->measured)
				r->res->conflicts++;
			uint64_t id = 0;
			int64_t mod = 0;
			if (res->n_results == 1 && res->results[0].type == CAIRN_OP_RANGE &&
			    res->results[0].u.range.n_kvs > 0) {
				const struct cairn_kv *kv = &res->results[0].u.range.kvs[0];
				id = val_decode(r, kv->value, kv->value_len);
				mod = kv->mod_revision;
				if (id == CB_BAD_ID)
					r->res->check.bad_values++;
			}
			els.value = id;
			cache_see(r, s->key, id, mod, rev);
		}
		hist_add(r, &op);
	} else if (!certainly_not_applied(st)) {
		op.ret = LIN_RETURN_UNKNOWN;
		hist_add(r, &op);
	}
	slot_done(s);
}

/* Compare-and-swap of `key` from (cmp_id, cmp_mod) to a new value: on mod_revision or on the
 * value (--cas); an absent key is compared by version 0 (etcd fails a value compare on an
 * absent key). The failure branch reads the key, so a lost race tells the current value. */
static void issue_cas(struct slot *s, uint32_t key, uint64_t cmp_id, int64_t cmp_mod)
{
	struct run *r = s->r;
	s->kind = CB_K_TXN;
	s->key = key;
	s->cmp_id = cmp_id;
	s->cmp_mod = cmp_mod;
	s->id = r->next_id++;
	const uint8_t *k = key_of(r, key);
	val_encode(r, r->val, s->id);
	if (r->idring) {
		size_t i = (size_t)s->id & (WATCH_RING - 1);
		r->idring[i].id = s->id;
		r->idring[i].t = s->call;
	}
	struct cairn_compare cmp = { .result = CAIRN_CMP_EQUAL, .key = k, .key_len = r->key_len };
	if (r->o->cas == CB_CAS_VALUE && cmp_id != 0 && cmp_id != CB_BAD_ID) {
		val_encode(r, r->cmpval, cmp_id);
		cmp.target = CAIRN_CMP_VALUE;
		cmp.value = r->cmpval;
		cmp.value_len = r->o->val_size;
	} else if (r->o->cas == CB_CAS_VALUE && cmp_id == 0) {
		cmp.target = CAIRN_CMP_VERSION;
		cmp.number = 0;
	} else {
		cmp.target = CAIRN_CMP_MOD;
		cmp.number = cmp_mod;
	}
	struct cairn_op put = { .type = CAIRN_OP_PUT,
				.key = k,
				.key_len = r->key_len,
				.value = r->val,
				.value_len = r->o->val_size };
	struct cairn_op get = { .type = CAIRN_OP_RANGE, .key = k, .key_len = r->key_len };
	struct cairn_txn t = { .compare = &cmp,
			       .n_compare = 1,
			       .success = &put,
			       .n_success = 1,
			       .failure = &get,
			       .n_failure = 1 };
	started(s, cairn_txn(r->cli, &t, on_txn, s));
}

/* The step after s->step, given how its request ended; S_NONE ends the operation. */
static int next_step(const struct slot *s)
{
	switch (s->step) {
	case S_UPD_READ:
		return s->ok ? S_UPD_CAS : S_NONE;
	case S_LIST:
		return s->more ? S_LIST : S_NONE;
	case S_GRANT:
		return s->ok ? S_LEASE_PUT : S_NONE;
	case S_LEASE_PUT:
		return s->ok ? S_KA : S_REVOKE;
	case S_KA:
		return S_REVOKE;
	default:
		return S_NONE;
	}
}

static void on_revoke(void *data, const struct cairn_status *st,
		      const struct cairn_lease_result *res)
{
	(void)res;
	struct slot *s = data;
	struct run *r = s->r;
	uint64_t now = cb_now_ns();
	record(s, st, now);
	/* The revocation deletes the slot's key (one key per slot in this workload) if the put
	 * with the lease may have happened. A revoke that failed leaves the lease to expire at a
	 * time nobody sees: a delete with an unknown outcome. */
	if (s->lease_attached)
		hist_step(r, s, st->code == 0 ? now : LIN_RETURN_UNKNOWN, LIN_DELETE, 0, s->key);
	s->lease_attached = false;
	s->lease = 0;
	slot_done(s);
}

static void on_keepalive(void *data, struct cairn_keepalive *ka, const struct cairn_status *st,
			 const struct cairn_lease_result *res, bool final)
{
	(void)res;
	struct slot *s = data;
	if (!s->ka_answered) {
		s->ka_answered = true;
		record(s, st, cb_now_ns());
		if (!final)
			cairn_lease_keepalive_stop(ka);
	}
	if (!final)
		return;
	s->ka = NULL;
	slot_done(s);
}

static void on_grant(void *data, const struct cairn_status *st,
		     const struct cairn_lease_result *res)
{
	struct slot *s = data;
	record(s, st, cb_now_ns());
	if (st->code == 0)
		s->lease = res->id;
	slot_done(s);
}

static void issue_step(struct slot *s)
{
	struct run *r = s->r;
	switch (s->step) {
	case S_UPD_READ:
		issue_get(s, s->key, false);
		break;
	case S_UPD_CAS:
		issue_cas(s, s->key, s->cmp_id, s->cmp_mod);
		break;
	case S_LIST:
		issue_list(s, s->key);
		break;
	case S_GRANT:
		s->kind = CB_K_GRANT;
		started(s, cairn_lease_grant(r->cli, r->o->lease_ttl, 0, on_grant, s));
		break;
	case S_LEASE_PUT:
		issue_put(s, s->idx % (uint32_t)r->o->key_space, s->lease);
		break;
	case S_KA:
		s->kind = CB_K_KEEPALIVE;
		s->ka_answered = false;
		started(s, cairn_lease_keepalive(r->cli, s->lease, on_keepalive, s, &s->ka));
		break;
	case S_REVOKE:
		s->kind = CB_K_REVOKE;
		s->key = s->idx % (uint32_t)r->o->key_space;
		started(s, cairn_lease_revoke(r->cli, s->lease, on_revoke, s));
		break;
	default:
		break;
	}
}

/* ---- choosing the next operation ---- */

static void issue_mix(struct slot *s)
{
	struct run *r = s->r;
	const unsigned *m = r->o->mix;
	unsigned total = m[0] + m[1] + m[2] + m[3];
	unsigned x = (unsigned)(rng_next(r) % total);
	uint32_t key = (uint32_t)pick_key(r);
	if (x < m[CB_MIX_PUT]) {
		issue_put(s, key, 0);
	} else if ((x -= m[CB_MIX_PUT]) < m[CB_MIX_RANGE]) {
		issue_get(s, key, r->o->serializable);
	} else if ((x -= m[CB_MIX_RANGE]) < m[CB_MIX_TXN]) {
		const struct cache_ent *c = &r->cache[key];
		issue_cas(s, key, c->id, c->mod);
	} else {
		issue_delete(s, key);
	}
}

/* Kubernetes-like: 80 % optimistic updates (a linearizable read, then a Txn on the
 * mod_revision read), 10 % paged lists of the whole key space (--limit keys per page,
 * continuing after the last key while the server says there is more), 10 % deletes; the
 * watchers follow the prefix with prev_kv. */
static void issue_k8s(struct slot *s)
{
	struct run *r = s->r;
	unsigned x = (unsigned)(rng_next(r) % 100);
	uint32_t key = (uint32_t)pick_key(r);
	if (x < 80) {
		s->step = S_UPD_READ;
		s->key = key;
	} else if (x < 90) {
		s->step = S_LIST;
		s->key = 0;
	} else {
		issue_delete(s, key);
		return;
	}
	issue_step(s);
}

/* Starts slot s's next request: the next step of its operation, or a new operation. */
static void slot_issue(struct slot *s)
{
	struct run *r = s->r;
	const struct cb_opts *o = r->o;
	s->call = cb_now_ns();
	if (s->parked)
		s->parked = false;
	if (s->step != S_NONE) {
		issue_step(s);
		return;
	}
	s->measured = r->phase == P_MEASURE;
	if (r->phase == P_POPULATE) {
		issue_put(s, (uint32_t)r->pop_next++, 0);
		return;
	}
	if (s->measured)
		r->issued_measured++;
	switch (o->workload) {
	case CB_W_PUT:
	case CB_W_WATCH:
		issue_put(s, (uint32_t)pick_key(r), 0);
		break;
	case CB_W_RANGE:
		if (o->prefix)
			issue_list(s, (uint32_t)pick_key(r));
		else
			issue_get(s, (uint32_t)pick_key(r), o->serializable);
		break;
	case CB_W_TXN: {
		uint32_t key = (uint32_t)pick_key(r);
		const struct cache_ent *c = &r->cache[key];
		issue_cas(s, key, c->id, c->mod);
		break;
	}
	case CB_W_MIX:
		issue_mix(s);
		break;
	case CB_W_LEASE:
		s->step = S_GRANT;
		issue_step(s);
		break;
	case CB_W_K8S:
		issue_k8s(s);
		break;
	default:
		break;
	}
}

/* Whether a new operation may start now. */
static bool may_start(const struct run *r)
{
	if (r->phase == P_POPULATE)
		return r->pop_next < r->pop_total;
	if (r->phase >= P_DRAIN)
		return false;
	if (r->phase == P_MEASURE && r->o->count && r->issued_measured >= r->o->count)
		return false;
	return true;
}

static void slot_idle(struct slot *s)
{
	struct run *r = s->r;
	s->busy = false;
	s->step = S_NONE;
	r->busy--;
	s->next = r->free_list;
	r->free_list = s;
}

static void slot_start(struct slot *s, uint64_t start)
{
	struct run *r = s->r;
	if (!s->busy) {
		s->busy = true;
		r->busy++;
	}
	s->step = S_NONE;
	s->start = start;
	slot_issue(s);
}

/* Open loop: issues every request due by `now` on free slots, each timed from its due time. */
static void open_issue_due(struct run *r, uint64_t now)
{
	if (r->phase != P_WARMUP && r->phase != P_MEASURE)
		return;
	while (r->free_list && may_start(r)) {
		uint64_t due = r->t_begin + (uint64_t)((double)r->sched_k * (double)r->period_ns);
		if (due > now)
			break;
		struct slot *s = r->free_list;
		r->free_list = s->next;
		r->sched_k++;
		slot_start(s, due);
	}
}

/* A request of slot s ended: continue its operation, start its next one, or rest. */
static void slot_done(struct slot *s)
{
	struct run *r = s->r;
	if (r->phase >= P_CLOSING) {
		slot_idle(s);
		return;
	}
	int next = next_step(s);
	if (next != S_NONE && r->phase < P_DRAIN) {
		/* The operation's next request is timed from now. */
		s->step = (uint8_t)next;
		s->start = cb_now_ns();
		slot_issue(s);
		return;
	}
	if (next == S_REVOKE || next == S_KA) {
		/* Draining in the middle of a lease cycle: revoke the lease all the same, so that
		 * it does not expire later, unseen (bounded by the drain deadline). */
		s->step = S_REVOKE;
		s->start = cb_now_ns();
		slot_issue(s);
		return;
	}
	s->step = S_NONE;
	if (r->o->rate > 0 && r->phase != P_POPULATE) {
		slot_idle(s);
		open_issue_due(r, cb_now_ns());
		return;
	}
	if (!may_start(r)) {
		slot_idle(s);
		return;
	}
	s->start = cb_now_ns();
	slot_issue(s);
}

/* ---- watches ---- */

/* With prev_kv (k8s), each event's previous value must be the value of the watcher's previous
 * event on that key: a lost, repeated or reordered event breaks the chain. */
static void watch_chain(struct run *r, uint32_t w, const struct cairn_event *ev)
{
	uint64_t idx = key_index(r, ev->kv.key, ev->kv.key_len);
	if (idx == UINT64_MAX)
		return;
	uint64_t *last = &r->wlast[(size_t)w * r->o->key_space + idx];
	uint64_t prev = 0;
	if (ev->prev_kv)
		prev = val_decode(r, ev->prev_kv->value, ev->prev_kv->value_len);
	if (*last != UINT64_MAX && prev != *last)
		r->res->watch_chain_breaks++;
	*last = ev->type == CAIRN_EVENT_PUT ? val_decode(r, ev->kv.value, ev->kv.value_len) : 0;
}

static void on_watch(void *data, struct cairn_watch *w, const struct cairn_watch_batch *b)
{
	struct watch_ctx *wc = data;
	struct run *r = wc->r;
	uint64_t now = cb_now_ns();
	if (b->canceled) {
		r->watches_live--;
		if (r->phase < P_CLOSING && b->status.code != CAIRN_CANCELLED)
			r->res->watch_canceled++;
		r->watches[wc->idx] = NULL;
		return;
	}
	(void)w;
	bool timed = r->phase == P_MEASURE || r->phase == P_DRAIN;
	for (size_t i = 0; i < b->n_events; i++) {
		const struct cairn_event *ev = &b->events[i];
		if (r->wlast)
			watch_chain(r, wc->idx, ev);
		if (ev->type != CAIRN_EVENT_PUT || !timed)
			continue;
		int64_t rev = ev->kv.mod_revision;
		size_t j = (size_t)rev & (WATCH_RING - 1);
		uint64_t lat = 0;
		if (r->ring[j].rev == rev && now > r->ring[j].t)
			lat = now - r->ring[j].t;
		else
			r->res->watch_early++;
		r->res->kind_ops[CB_K_WATCH]++;
		hist_record(&r->res->kind[CB_K_WATCH], lat);
		uint64_t id = val_decode(r, ev->kv.value, ev->kv.value_len);
		if (id != CB_BAD_ID) {
			size_t k = (size_t)id & (WATCH_RING - 1);
			if (r->idring[k].id == id && now > r->idring[k].t) {
				r->res->kind_ops[CB_K_WATCH_PUT]++;
				hist_record(&r->res->kind[CB_K_WATCH_PUT], now - r->idring[k].t);
			}
		}
	}
}

static int watches_start(struct run *r)
{
	if (r->o->watchers == 0)
		return 0;
	r->ring = calloc(WATCH_RING, sizeof *r->ring);
	r->idring = calloc(WATCH_RING, sizeof *r->idring);
	r->watches = calloc(r->o->watchers, sizeof *r->watches);
	r->wctx = calloc(r->o->watchers, sizeof *r->wctx);
	if (!r->ring || !r->idring || !r->watches || !r->wctx)
		return -1;
	bool prev_kv = r->o->workload == CB_W_K8S;
	if (prev_kv && (uint64_t)r->o->watchers * r->o->key_space <= (64u << 20)) {
		r->wlast = malloc((size_t)r->o->watchers * r->o->key_space * sizeof *r->wlast);
		if (!r->wlast)
			return -1;
		memset(r->wlast, 0xff, (size_t)r->o->watchers * r->o->key_space * sizeof *r->wlast);
	}
	struct cairn_watch_opts wo = { .range_end = r->range_end,
				       .range_end_len = r->range_end_len,
				       .prev_kv = r->o->workload == CB_W_K8S };
	for (uint32_t i = 0; i < r->o->watchers; i++) {
		r->wctx[i].r = r;
		r->wctx[i].idx = i;
		int rc = cairn_watch(r->cli, r->key, r->base_len, &wo, on_watch, &r->wctx[i],
				     &r->watches[i]);
		if (rc < 0) {
			snprintf(r->res->failure, sizeof r->res->failure, "watch: %s",
				 cairn_strerror(rc));
			return -1;
		}
		r->n_watches++;
		r->watches_live++;
	}
	return 0;
}

/* ---- phases ---- */

static void enter_measure(struct run *r, uint64_t now)
{
	r->phase = P_MEASURE;
	r->t0 = now;
	/* --count runs until the count, within the hard cap all the same. */
	double secs = r->o->duration_s > 0 ? r->o->duration_s : CB_MAX_DURATION_S;
	r->measure_end = now + (uint64_t)(secs * 1e9);
	r->cur_sec = 0;
	hist_reset(&r->sec_hist);
	r->sec_ops = r->sec_err = 0;
	r->last_progress = now;
	if (r->o->n_faults > 0 && r->cl) {
		int rc = cl_schedule_start(r->cl, r->o->faults, r->o->n_faults, (int64_t)now);
		if (rc < 0)
			fprintf(stderr, "cairn-bench: the fault schedule did not start: %s\n",
				cl_errmsg(r->cl));
		else
			r->sched_started = true;
	}
}

static void on_client_closed(struct cairn_client *c, void *data)
{
	(void)c;
	struct run *r = data;
	r->cli_closed = true;
	uv_close((uv_handle_t *)&r->tick, NULL);
	uv_close((uv_handle_t *)&r->sig_int, NULL);
	uv_close((uv_handle_t *)&r->sig_term, NULL);
}

static void begin_closing(struct run *r)
{
	r->phase = P_CLOSING;
	uv_timer_stop(&r->tick);
	cairn_client_close(r->cli, on_client_closed, r);
}

static void enter_drain(struct run *r, uint64_t now)
{
	if (r->phase == P_MEASURE) {
		r->t_stop = now;
		sec_advance(r, now);
	} else if (r->t0 == 0) {
		r->t0 = r->t_stop = now; /* interrupted before the measured phase */
	}
	r->phase = P_DRAIN;
	r->drain_deadline = now + (r->o->timeout_ms + 1000) * 1000000u;
	if (cb_interrupted())
		r->drain_deadline = now + 500000000u;
}

static void begin_load(struct run *r, uint64_t now)
{
	r->t_begin = now;
	r->phase = P_WARMUP;
	if (r->o->warmup_s <= 0)
		enter_measure(r, now);
	if (r->o->rate > 0) {
		open_issue_due(r, now);
		return;
	}
	for (uint32_t i = 0; i < r->n_slots && may_start(r); i++) {
		struct slot *s = r->free_list;
		if (!s)
			break;
		r->free_list = s->next;
		slot_start(s, cb_now_ns());
	}
}

static void progress_line(struct run *r, uint64_t now)
{
	if (!r->progress || r->cur_sec == 0)
		return;
	const struct cb_sec *s = &r->res->secs[r->cur_sec - 1];
	fprintf(stderr, "\r%6.0fs %10" PRIu64 " ops/s  p99 %8.2f ms  errors %" PRIu64 "   ",
		(double)(now - r->t0) / 1e9, s->ops, (double)s->p99 / 1e6, r->res->errors);
	fflush(stderr);
}

static void on_tick(uv_timer_t *t)
{
	struct run *r = t->data;
	uint64_t now = cb_now_ns();
	if (cb_interrupted() && r->phase < P_DRAIN) {
		r->res->interrupted = true;
		if (r->phase == P_POPULATE)
			r->phase = P_WARMUP; /* no load to start */
		enter_drain(r, now);
	}
	switch (r->phase) {
	case P_POPULATE:
		if (r->pop_done >= r->pop_total && r->busy == 0) {
			r->free_list = NULL;
			for (uint32_t i = r->n_slots; i-- > 0;) {
				r->slots[i].next = r->free_list;
				r->free_list = &r->slots[i];
			}
			begin_load(r, now);
		}
		break;
	case P_WARMUP:
		if (now >= r->t_begin + (uint64_t)(r->o->warmup_s * 1e9))
			enter_measure(r, now);
		break;
	case P_MEASURE:
		if (now >= r->measure_end || (r->o->count && r->issued_measured >= r->o->count))
			enter_drain(r, now);
		break;
	default:
		break;
	}
	if (r->phase == P_MEASURE || r->phase == P_WARMUP)
		open_issue_due(r, now);
	/* Parked slots: libcairn refused to start their request (ELIMIT ...); retry now. */
	struct slot *p = r->parked;
	r->parked = NULL;
	while (p) {
		struct slot *next = p->next;
		if (r->phase < P_DRAIN || p->step == S_REVOKE)
			slot_issue(p);
		else
			slot_idle(p);
		p = next;
	}
	if (r->phase == P_MEASURE) {
		sec_advance(r, now);
		if (now - r->last_progress >= 1000000000u) {
			r->last_progress = now;
			progress_line(r, now);
		}
	}
	if (r->phase == P_DRAIN && (r->busy == 0 || now >= r->drain_deadline))
		begin_closing(r);
}

static void on_signal(uv_signal_t *h, int signum)
{
	(void)h;
	(void)signum;
	if (cb_interrupted()) {
		/* The second one: leave now, members stopped by the emergency cleanup. */
		cl_emergency_cleanup();
		_exit(130);
	}
	cb_set_interrupted();
	fprintf(stderr, "\ncairn-bench: interrupted: stopping the load (again to quit now)\n");
}

/* ---- after the run ---- */

static void fault_figures(struct run *r)
{
	struct cb_result *res = r->res;
	struct cl_event *ev = NULL;
	int n = 0;
	if (!r->cl || !r->sched_started)
		return;
	if (cb_interrupted())
		cl_schedule_cancel(r->cl);
	else
		cl_schedule_wait(r->cl);
	if (cl_schedule_events(r->cl, &ev, &n) < 0 || n == 0)
		return;
	res->faults = calloc((size_t)n, sizeof *res->faults);
	if (!res->faults) {
		free(ev);
		return;
	}
	res->n_faults = n;
	struct hist *h = malloc(sizeof *h);
	for (int i = 0; i < n; i++) {
		struct cb_fault_fig *f = &res->faults[i];
		const struct cl_event *e = &ev[i];
		snprintf(f->text, sizeof f->text, "%s", e->fault.text);
		f->kind = (int)e->fault.kind;
		f->rc = e->rc;
		snprintf(f->err, sizeof f->err, "%s", e->err);
		f->unavail_ms = -1;
		f->new_leader_ms = -1;
		f->leader_changed = e->leader_changed;
		if (e->injected_ns == 0)
			continue;
		uint64_t T = (uint64_t)e->injected_ns;
		f->at_s = ((double)T - (double)r->t0) / 1e9;
		if (e->new_leader_ns > 0)
			f->new_leader_ms = (double)(e->new_leader_ns - e->injected_ns) / 1e6;
		uint64_t first = UINT64_MAX;
		for (size_t j = 0; j < r->n_oplog; j++) {
			const struct oplog_ent *o = &r->oplog[j];
			if (o->write && o->ok && o->call >= T && o->end < first)
				first = o->end;
		}
		if (first != UINT64_MAX)
			f->unavail_ms = (double)(first - T) / 1e6;
		uint64_t win = 5000000000u;
		if (first != UINT64_MAX && first - T + 1000000000u > win)
			win = first - T + 1000000000u;
		f->window_s = (double)win / 1e9;
		if (h)
			hist_init(h);
		for (size_t j = 0; j < r->n_oplog; j++) {
			const struct oplog_ent *o = &r->oplog[j];
			if (!o->ok && o->end >= T && o->end < T + win)
				f->errors++;
			if (o->call >= T && o->call < T + win)
				f->window_ops++;
			if (h && o->ok && o->call >= T && o->call < T + 5000000000u)
				hist_record(h, o->lat);
		}
		f->p99_5s_ns = h ? hist_percentile(h, 99) : 0;
	}
	free(h);
	free(ev);
}

static const char *key_name(uint32_t key, void *data)
{
	static char buf[256];
	struct run *r = data;
	key_write(r, r->key2, key);
	snprintf(buf, sizeof buf, "%.*s", (int)(r->idx_off + (size_t)r->digits),
		 (const char *)r->key2);
	return buf;
}

static void run_check(struct run *r)
{
	struct cb_check_res *c = &r->res->check;
	if (!r->o->check)
		return;
	if (!r->hist) {
		c->verdict = -1;
		return;
	}
	c->ops = lin_history_len(r->hist);
	if (!r->o->quiet)
		fprintf(stderr, "cairn-bench: checking %zu operations for linearizability...\n",
			c->ops);
	struct lin_check_opts lo = { .max_ms = r->o->check_ms, .key_name = key_name, .data = r };
	struct lin_result lr;
	uint64_t t = cb_now_ns();
	if (lin_check(r->hist, &lo, &lr) != 0) {
		c->verdict = LIN_UNKNOWN;
		c->report = strdup("out of memory in the checker");
		return;
	}
	c->check_s = (double)(cb_now_ns() - t) / 1e9;
	c->verdict = lr.verdict;
	c->partitions = lr.n_partitions;
	c->checked_partitions = lr.n_checked_partitions;
	if (lr.report)
		c->report = strdup(lr.report);
	lin_result_free(&lr);
	if (c->bad_values > 0 && c->verdict == LIN_OK)
		c->verdict = LIN_VIOLATION;
}

/* ---- setup ---- */

static int setup_keys(struct run *r)
{
	const struct cb_opts *o = r->o;
	char tag[16];
	snprintf(tag, sizeof tag, "%08" PRIx32 "/", (uint32_t)(r->nonce >> 32));
	char digits[24];
	r->digits = snprintf(digits, sizeof digits, "%" PRIu64, o->key_space - 1);
	size_t plen = strlen(o->key_prefix);
	r->key_len = o->key_size;
	r->base_len = plen + 9;
	r->idx_off = r->base_len;
	r->key = malloc(r->key_len);
	r->key2 = malloc(r->key_len);
	r->range_end = malloc(r->base_len + 1);
	r->val = malloc(o->val_size ? o->val_size : 1);
	r->cmpval = malloc(o->val_size ? o->val_size : 1);
	if (!r->key || !r->key2 || !r->range_end || !r->val || !r->cmpval)
		return -1;
	memset(r->key, 'x', r->key_len);
	memcpy(r->key, o->key_prefix, plen);
	memcpy(r->key + plen, tag, 9);
	memset(r->key + r->idx_off, '0', (size_t)r->digits);
	memcpy(r->key2, r->key, r->key_len);
	r->range_end_len = cairn_prefix_end(r->key, r->base_len, r->range_end);
	/* Values: a fixed filler after the 16 bytes of id (compressible, as most are). */
	for (size_t i = 0; i < o->val_size; i++)
		r->val[i] = (uint8_t)('a' + i % 26);
	memcpy(r->cmpval, r->val, o->val_size);
	return 0;
}

void cb_result_free(struct cb_result *r)
{
	free(r->secs);
	free(r->faults);
	free(r->check.report);
	memset(r, 0, sizeof *r);
}

static void run_free(struct run *r)
{
	lin_history_free(r->hist);
	free(r->slots);
	free(r->key);
	free(r->key2);
	free(r->range_end);
	free(r->val);
	free(r->cmpval);
	free(r->cache);
	free(r->watches);
	free(r->ring);
	free(r->idring);
	free(r->wctx);
	free(r->wlast);
	free(r->oplog);
}

static int fail_run(struct run *r, const char *what)
{
	if (r->res->failure[0] == '\0')
		snprintf(r->res->failure, sizeof r->res->failure, "%s", what);
	return -1;
}

int cb_load_run(const struct cb_opts *o, const char *endpoints, struct cl_cluster *cl,
		struct cb_result *res)
{
	struct run *r = calloc(1, sizeof *r);
	if (!r) {
		snprintf(res->failure, sizeof res->failure, "out of memory");
		return -1;
	}
	int ret = -1;
	bool loop_ok = false;
	memset(res, 0, sizeof *res);
	r->o = o;
	r->res = res;
	r->cl = cl;
	hist_init(&res->all);
	for (int k = 0; k < CB_K_COUNT; k++)
		hist_init(&res->kind[k]);
	hist_init(&r->sec_hist);
	snprintf(res->endpoints, sizeof res->endpoints, "%s", endpoints);
	res->check.enabled = o->check;
	res->check.verdict = -1;
	r->rng = o->seed ? o->seed : 0x2545F4914F6CDD1Du;
	r->nonce = cb_now_ns() * ID_MUL ^ (uint64_t)getpid() << 32;
	r->next_id = 1;
	r->progress = o->progress == 1 || (o->progress == -1 && !o->quiet && isatty(2));
	r->oplog_on = o->n_faults > 0;
	if (o->rate > 0)
		r->period_ns = (uint64_t)(1e9 / o->rate) ? (uint64_t)(1e9 / o->rate) : 1;
	if (setup_keys(r))
		goto out;
	r->cap_secs = (size_t)(o->duration_s > 0 ? o->duration_s : 3600) +
		      (size_t)(o->timeout_ms / 1000) + 8;
	if (r->cap_secs > CB_MAX_SECONDS)
		r->cap_secs = CB_MAX_SECONDS;
	r->last_sec = r->cap_secs - 1;
	if (o->duration_s > 0 && (size_t)ceil(o->duration_s) <= r->cap_secs)
		r->last_sec = (size_t)ceil(o->duration_s) - 1;
	res->secs = calloc(r->cap_secs, sizeof *res->secs);
	r->n_slots = o->clients;
	r->slots = calloc(r->n_slots, sizeof *r->slots);
	if (!res->secs || !r->slots) {
		fail_run(r, "out of memory");
		goto out;
	}
	if (o->workload == CB_W_TXN || o->workload == CB_W_MIX) {
		r->cache = calloc(o->key_space, sizeof *r->cache);
		if (!r->cache) {
			fail_run(r, "out of memory for the key cache (--key-space)");
			goto out;
		}
	}
	if (o->check && lin_history_new(&r->hist) != 0) {
		fail_run(r, "out of memory");
		goto out;
	}
	for (uint32_t i = r->n_slots; i-- > 0;) {
		r->slots[i].r = r;
		r->slots[i].idx = i;
		r->slots[i].next = r->free_list;
		r->free_list = &r->slots[i];
	}

	const char *eps[CB_MAX_ENDPOINTS];
	char epbuf[1024];
	size_t n_eps = 0;
	snprintf(epbuf, sizeof epbuf, "%s", endpoints);
	for (char *save = NULL, *t = strtok_r(epbuf, ",", &save); t && n_eps < CB_MAX_ENDPOINTS;
	     t = strtok_r(NULL, ",", &save))
		eps[n_eps++] = t;
	if (uv_loop_init(&r->loop) != 0) {
		fail_run(r, "uv_loop_init failed");
		goto out;
	}
	loop_ok = true;
	struct cairn_config cfg = {
		.endpoints = eps,
		.n_endpoints = n_eps,
		.connections = o->conns,
		.dial_timeout_ms = o->timeout_ms,
		.request_timeout_ms = o->timeout_ms,
		.keepalive_ms = o->keepalive_ms,
		.keepalive_timeout_ms = o->keepalive_timeout_ms,
		.max_inflight = o->clients + 2u * o->watchers + 1024u,
	};
	int rc = cairn_client_new(&r->loop, &cfg, &r->cli);
	if (rc < 0) {
		snprintf(res->failure, sizeof res->failure, "cairn_client_new: %s",
			 cairn_strerror(rc));
		goto out;
	}
	uv_timer_init(&r->loop, &r->tick);
	r->tick.data = r;
	uv_signal_init(&r->loop, &r->sig_int);
	uv_signal_init(&r->loop, &r->sig_term);
	uv_signal_start(&r->sig_int, on_signal, SIGINT);
	uv_signal_start(&r->sig_term, on_signal, SIGTERM);
	uv_timer_start(&r->tick, on_tick, 1, 1);

	if (watches_start(r) != 0) {
		fail_run(r, "out of memory for the watches");
		begin_closing(r);
	} else {
		bool populate = o->workload == CB_W_RANGE || o->workload == CB_W_K8S;
		if (populate) {
			/* Every key exists before the load: reads find values, lists fill pages. */
			r->phase = P_POPULATE;
			r->pop_total = o->key_space;
			if (!o->quiet)
				fprintf(stderr,
					"cairn-bench: writing the %" PRIu64 " keys of the key "
					"space first (not measured)\n",
					o->key_space);
			for (uint32_t i = 0; i < r->n_slots && i < 256 && may_start(r); i++) {
				struct slot *s = r->free_list;
				r->free_list = s->next;
				slot_start(s, cb_now_ns());
			}
		} else {
			begin_load(r, cb_now_ns());
		}
	}
	uv_run(&r->loop, UV_RUN_DEFAULT);
	if (r->progress)
		fputc('\n', stderr);
	if (r->t_stop == 0)
		r->t_stop = r->t0 ? r->t0 : cb_now_ns();
	if (r->cur_sec < r->cap_secs && (r->sec_ops || r->sec_err))
		sec_flush(r);
	res->elapsed_s = (double)(r->t_stop - r->t0) / 1e9;
	if (res->interrupted == false && cb_interrupted())
		res->interrupted = true;
	fault_figures(r);
	if (res->failure[0] == '\0' && res->ops == res->errors && !res->interrupted)
		snprintf(res->failure, sizeof res->failure,
			 "no operation succeeded in the measured phase (%" PRIu64
			 " failed; is the cluster up at %.800s?)",
			 res->errors, endpoints);
	if (r->hist && (res->check.overflow || !o->check)) {
		lin_history_free(r->hist);
		r->hist = NULL;
	}
	run_check(r);
	ret = res->failure[0] ? -1 : 0;
out:
	if (loop_ok) {
		uv_run(&r->loop, UV_RUN_DEFAULT);
		if (uv_loop_close(&r->loop) != 0)
			fprintf(stderr, "cairn-bench: the loop still had handles at the end\n");
	}
	run_free(r);
	free(r);
	return ret;
}
