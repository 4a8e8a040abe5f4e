/* lincheck.c: the linearizability checker of lincheck.h.
 *
 * Wing & Gong's search ("Testing and verifying concurrent objects", 1993)
 * in the form of Lowe ("Testing for linearizability", 2017): memoised
 * configurations and "just in time" linearization. Per component, the calls
 * and returns are walked in time order; a call makes its op pending; at the
 * return of an op not linearized yet, pending ops are applied to the model
 * (the returning one first, then the others in call order) until the
 * returning one is placed. Each decision is a frame on an explicit stack (the
 * "just linearized" stack, no recursion); backtracking pops frames, restores
 * the model from an undo log and tries the next candidate. A configuration
 * (event index, set of ops linearized, model state) met before is skipped:
 * the memo stores a 128-bit fingerprint of it (Zobrist hashing of the set and
 * of the key/value pairs, both updated in O(1) per change), so one entry is
 * 16 bytes whatever the size of the component.
 *
 * Operations whose outcome is unknown have no return: they stay pending, are
 * linearized only when a return needs them, and may be left out.
 *
 * Three sound cuts keep the search small (docs/architecture.md, "How
 * cairn-bench checks linearizability", has the argument for each): only ops
 * connected to the returning one through keys are candidates (lin__cluster),
 * an op that overwrites a value some op not yet linearized must still read,
 * when nothing can write it again, is refused (lin__doomed), and reads no
 * write can explain are refuted before searching (lin__precheck). */
#include "lincheck.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LIN_DEFAULT_MS 60000u
#define LIN_DEFAULT_STATES (4u * 1024u * 1024u)
/* Search iterations between two looks at the clock. */
#define LIN_CLOCK_EVERY 1024u
/* The report lists at most this many ops (the shrunk sub-history is usually
 * a handful; a shrink cut short by the budget may leave more). */
#define LIN_REPORT_MAX_OPS 200u
/* Prefixes of the reported sub-history tried for the longest linearizable one. */
#define LIN_PREFIX_TRIES 64u

/* --- The history ------------------------------------------------------------------------- */

struct lin__op {
	uint64_t call, ret;
	size_t cmp_off; /* into lin_history.cmps */
	size_t step_off; /* into lin_history.steps: then-steps, then else-steps */
	uint32_t client, n_cmps, n_then, n_els;
	bool succeeded;
};

struct lin_history {
	struct lin__op *ops;
	size_t n_ops, cap_ops;
	struct lin_cmp *cmps;
	size_t n_cmps, cap_cmps;
	struct lin_step *steps;
	size_t n_steps, cap_steps;
};

int lin_history_new(struct lin_history **out)
{
	struct lin_history *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	*out = h;
	return 0;
}

void lin_history_free(struct lin_history *h)
{
	if (!h)
		return;
	free(h->ops);
	free(h->cmps);
	free(h->steps);
	free(h);
}

size_t lin_history_len(const struct lin_history *h)
{
	return h->n_ops;
}

/* Make room for `more` elements of `size` bytes in *arr (length n, capacity *cap). */
static int lin__reserve(void **arr, size_t *cap, size_t n, size_t more, size_t size)
{
	if (n + more <= *cap)
		return 0;
	size_t c = *cap ? *cap : 64;
	while (c < n + more)
		c *= 2;
	void *p = realloc(*arr, c * size);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = c;
	return 0;
}

static bool lin__steps_valid(const struct lin_step *s, uint32_t n)
{
	if (n > LIN_MAX_STEPS || (n && !s))
		return false;
	for (uint32_t i = 0; i < n; i++) {
		if (s[i].kind > LIN_DELETE)
			return false;
		if (s[i].kind == LIN_PUT && s[i].value == 0)
			return false;
	}
	return true;
}

int lin_history_add(struct lin_history *h, const struct lin_op *op)
{
	if (h->n_ops >= LIN_MAX_OPS || op->ret < op->call)
		return -EINVAL;
	if (op->n_cmps > LIN_MAX_STEPS || (op->n_cmps && !op->cmps))
		return -EINVAL;
	if (!lin__steps_valid(op->then, op->n_then) || !lin__steps_valid(op->els, op->n_els))
		return -EINVAL;
	size_t nsteps = (size_t)op->n_then + op->n_els;
	if (lin__reserve((void **)&h->ops, &h->cap_ops, h->n_ops, 1, sizeof(*h->ops)) ||
	    lin__reserve((void **)&h->cmps, &h->cap_cmps, h->n_cmps, op->n_cmps, sizeof(*h->cmps)) ||
	    lin__reserve((void **)&h->steps, &h->cap_steps, h->n_steps, nsteps, sizeof(*h->steps)))
		return -ENOMEM;
	struct lin__op *o = &h->ops[h->n_ops++];
	*o = (struct lin__op){
		.call = op->call,
		.ret = op->ret,
		.cmp_off = h->n_cmps,
		.step_off = h->n_steps,
		.client = op->client,
		.n_cmps = op->n_cmps,
		.n_then = op->n_then,
		.n_els = op->n_els,
		.succeeded = op->succeeded,
	};
	if (op->n_cmps)
		memcpy(h->cmps + h->n_cmps, op->cmps, op->n_cmps * sizeof(*op->cmps));
	h->n_cmps += op->n_cmps;
	if (op->n_then)
		memcpy(h->steps + h->n_steps, op->then, op->n_then * sizeof(*op->then));
	h->n_steps += op->n_then;
	if (op->n_els)
		memcpy(h->steps + h->n_steps, op->els, op->n_els * sizeof(*op->els));
	h->n_steps += op->n_els;
	return 0;
}

static bool lin__known(const struct lin__op *o)
{
	return o->ret != LIN_RETURN_UNKNOWN;
}

/* --- Small helpers ----------------------------------------------------------------------- */

static uint64_t lin__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64's finaliser: a bijection that scatters bits. */
static uint64_t lin__mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15u;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
	return x ^ (x >> 31);
}

/* Zobrist term of "key k holds v": 0 for an absent key, so the empty state
 * hashes to 0 whatever the number of keys. */
static uint64_t lin__kv_term(uint32_t k, uint64_t v, uint64_t seed)
{
	return v == 0 ? 0 : lin__mix(lin__mix(k + seed) ^ v);
}

#define LIN_SEED1 0x6a09e667f3bcc908u
#define LIN_SEED2 0xbb67ae8584caa73bu

/* A growable text buffer for the report; a failed allocation sets `oom`. */
struct lin__buf {
	char *s;
	size_t len, cap;
	bool oom;
};

static void lin__printf(struct lin__buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void lin__printf(struct lin__buf *b, const char *fmt, ...)
{
	if (b->oom)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		size_t room = b->cap - b->len;
		int n = vsnprintf(b->s ? b->s + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t c = b->cap ? b->cap * 2 : 1024;
		while (c < b->len + (size_t)n + 1)
			c *= 2;
		char *p = realloc(b->s, c);
		if (!p) {
			b->oom = true;
			return;
		}
		b->s = p;
		b->cap = c;
	}
}

/* --- The memo: a set of 128-bit fingerprints, open addressing ---------------------------- */

struct lin__memo {
	uint64_t *slots; /* 2 words per slot; (0, 0) is empty */
	size_t cap; /* slots, a power of two */
	size_t n;
	size_t max; /* entries kept at most */
	bool full; /* an insert was refused: the search ran unmemoised for a while */
};

static int lin__memo_init(struct lin__memo *m, size_t max, size_t hint)
{
	size_t cap = 64;
	while (cap < hint * 2 && cap / 2 < max)
		cap *= 2;
	m->slots = calloc(cap, 2 * sizeof(uint64_t));
	if (!m->slots)
		return -ENOMEM;
	m->cap = cap;
	m->n = 0;
	m->max = max;
	m->full = false;
	return 0;
}

static void lin__memo_free(struct lin__memo *m)
{
	free(m->slots);
	m->slots = NULL;
}

static void lin__memo_put(uint64_t *slots, size_t cap, uint64_t a, uint64_t b)
{
	size_t i = (size_t)a & (cap - 1);
	while (slots[2 * i] | slots[2 * i + 1])
		i = (i + 1) & (cap - 1);
	slots[2 * i] = a;
	slots[2 * i + 1] = b;
}

/* true when (a, b) was not there (it is now, unless the memo is full). */
static bool lin__memo_insert(struct lin__memo *m, uint64_t a, uint64_t b)
{
	if ((a | b) == 0)
		b = 1;
	size_t i = (size_t)a & (m->cap - 1);
	while (m->slots[2 * i] | m->slots[2 * i + 1]) {
		if (m->slots[2 * i] == a && m->slots[2 * i + 1] == b)
			return false;
		i = (i + 1) & (m->cap - 1);
	}
	if (m->n >= m->max) {
		m->full = true;
		return true;
	}
	if ((m->n + 1) * 4 > m->cap * 3) {
		/* Grow; if memory is short, go on with what fits (the memo only prunes). */
		size_t cap = m->cap * 2;
		uint64_t *s = calloc(cap, 2 * sizeof(uint64_t));
		if (!s) {
			m->max = m->n;
			m->full = true;
			return true;
		}
		for (size_t j = 0; j < m->cap; j++)
			if (m->slots[2 * j] | m->slots[2 * j + 1])
				lin__memo_put(s, cap, m->slots[2 * j], m->slots[2 * j + 1]);
		free(m->slots);
		m->slots = s;
		m->cap = cap;
	}
	lin__memo_put(m->slots, m->cap, a, b);
	m->n++;
	return true;
}

/* --- The search over one component -------------------------------------------------------- */

struct lin__ctx {
	const struct lin_history *h;
	const struct lin_check_opts *opts;
	uint32_t *cmp_key; /* per cmp: its key's index in its component's state */
	uint32_t *step_key; /* per step: likewise */
	uint64_t deadline; /* monotonic ns */
	uint64_t trial_ns; /* time limit of one shrinking trial */
	size_t max_states;
	bool out_of_time;
	bool memo_full;
	uint64_t iterations;
	char namebuf[32];
};

struct lin__undo {
	uint32_t k;
	uint64_t old;
};

/* One decision of the search, undone on backtracking. */
enum lin__frame_kind {
	LIN_F_CALL, /* an op was called: it joined the pending list */
	LIN_F_DONE, /* an op linearized earlier returned: it left the list */
	LIN_F_LIN, /* an op was linearized at a return event */
};

struct lin__frame {
	uint32_t kind; /* enum lin__frame_kind */
	uint32_t i; /* event index where the decision was taken */
	uint32_t op; /* the op called, returned or linearized */
	uint32_t undo; /* LIN_F_LIN: undo log length before it */
	uint64_t st1, st2; /* LIN_F_LIN: state hashes before it */
};

struct lin__event {
	uint64_t t;
	uint32_t op; /* index in the ops array of the search */
	uint32_t is_ret;
};

static int lin__event_cmp(const void *a, const void *b)
{
	const struct lin__event *x = a, *y = b;
	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	/* At equal times a call goes first: the two ops count as concurrent. */
	if (x->is_ret != y->is_ret)
		return x->is_ret < y->is_ret ? -1 : 1;
	return x->op < y->op ? -1 : x->op > y->op;
}

struct lin__search {
	struct lin__ctx *c;
	const uint32_t *ops; /* history indices */
	uint64_t *vals; /* the model: value per key of the component, 0 absent */
	uint64_t st1, st2; /* Zobrist hashes of vals */
	struct lin__undo *undo;
	uint32_t n_undo;
	/* Per (key, value) of the sub-history: ops not linearized yet that
	 * observe it, and that may still write it (see lin__doomed). */
	uint64_t *pk; /* 2 words per slot: key + 1 (0: empty), value */
	uint32_t *pobs, *pwr;
	size_t pcap;
};

/* The slot of (k, v) in the pair counts, or SIZE_MAX when absent. With
 * `insert`, created (the table has room for every pair of the sub-history). */
static size_t lin__pair(struct lin__search *s, uint32_t k, uint64_t v, bool insert)
{
	size_t i = (size_t)lin__mix(lin__mix(k) ^ v) & (s->pcap - 1);
	for (;;) {
		if (s->pk[2 * i] == 0) {
			if (!insert)
				return SIZE_MAX;
			s->pk[2 * i] = (uint64_t)k + 1;
			s->pk[2 * i + 1] = v;
			return i;
		}
		if (s->pk[2 * i] == (uint64_t)k + 1 && s->pk[2 * i + 1] == v)
			return i;
		i = (i + 1) & (s->pcap - 1);
	}
}

/* Count (delta +1) or uncount (-1) op gi in the pair counts: what it observes
 * (known ops: the values its GETs returned and, when its comparisons held,
 * the values compared) and what it may write (known ops: the branch that
 * ran; unknown ops: both). Insertion happens only at setup (delta +1). */
static void lin__pairs_count(struct lin__search *s, size_t gi, int delta)
{
	const struct lin_history *h = s->c->h;
	const struct lin__op *o = &h->ops[gi];
	bool known = lin__known(o);
	bool ins = delta > 0;
	if (known && o->succeeded)
		for (uint32_t i = 0; i < o->n_cmps; i++) {
			size_t ci = o->cmp_off + i;
			size_t p = lin__pair(s, s->c->cmp_key[ci], h->cmps[ci].value, ins);
			s->pobs[p] += (uint32_t)delta;
		}
	size_t off = o->step_off, n = (size_t)o->n_then + o->n_els;
	if (known) {
		off += o->succeeded ? 0 : o->n_then;
		n = o->succeeded ? o->n_then : o->n_els;
	}
	for (size_t i = 0; i < n; i++) {
		const struct lin_step *st = &h->steps[off + i];
		uint32_t k = s->c->step_key[off + i];
		if (st->kind == LIN_GET) {
			if (known)
				s->pobs[lin__pair(s, k, st->value, ins)] += (uint32_t)delta;
		} else {
			uint64_t v = st->kind == LIN_PUT ? st->value : 0;
			s->pwr[lin__pair(s, k, v, ins)] += (uint32_t)delta;
		}
	}
}

/* Quick refutations, before the search. A known op that observed a value
 * other than absent needs a writer w of it such that (1) w was called no later
 * than the op returned, and (2) no op of known outcome that surely writes the
 * key (its branch that ran writes another value there) lies strictly between
 * w and the op in real time (called after w returned, returned before the op
 * was called). When no writer qualifies, no order can work; the search would
 * have to exhaust every order of what came before to find that out, which on
 * a long history of a hot key is beyond any budget. */
struct lin__dw {
	uint32_t k;
	uint64_t call, ret, v; /* v: the value the op leaves in k (0: deleted) */
};

static int lin__dw_cmp(const void *a, const void *b)
{
	const struct lin__dw *x = a, *y = b;
	if (x->k != y->k)
		return x->k < y->k ? -1 : 1;
	return x->call < y->call ? -1 : x->call > y->call;
}

struct lin__pre {
	struct lin__dw *dw; /* sure writes, by key then call */
	size_t n;
	/* Over dw[i..end of its key]: the earliest return, and the earliest
	 * return of a write leaving another value than that one's. */
	uint64_t *r1, *v1, *r2;
	/* Writers per pair slot: lists of entries (op position, next entry). */
	uint32_t *wr_head, *wr_next, *wr_op;
	size_t n_wr;
};

/* Is there a sure write to k, leaving a value other than v, called after t0
 * and returned before t1? */
static bool lin__pre_between(const struct lin__pre *pr, uint32_t k, uint64_t t0, uint64_t t1,
                             uint64_t v)
{
	size_t lo = 0, hi = pr->n; /* first index with (k, call) > (k, t0) */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (pr->dw[mid].k < k || (pr->dw[mid].k == k && pr->dw[mid].call <= t0))
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == pr->n || pr->dw[lo].k != k)
		return false;
	uint64_t r = pr->v1[lo] != v ? pr->r1[lo] : pr->r2[lo];
	return r < t1;
}

/* Can op j's observation (k, v) be explained by some writer? */
static bool lin__pre_explained(struct lin__search *s, const struct lin__pre *pr, uint32_t j,
                               uint32_t k, uint64_t v)
{
	const struct lin_history *h = s->c->h;
	const struct lin__op *o = &h->ops[s->ops[j]];
	size_t p = lin__pair(s, k, v, false);
	if (p == SIZE_MAX)
		return false;
	for (uint32_t e = pr->wr_head[p]; e != UINT32_MAX; e = pr->wr_next[e]) {
		uint32_t w = pr->wr_op[e];
		const struct lin__op *wo = &h->ops[s->ops[w]];
		if (w == j)
			return true;
		if (wo->call > o->ret)
			continue;
		if (!lin__known(wo) || !lin__pre_between(pr, k, wo->ret, o->call, v))
			return true;
	}
	return false;
}

static bool lin__precheck(struct lin__search *s, uint32_t m)
{
	const struct lin_history *h = s->c->h;
	struct lin__pre pr = {0};
	size_t nw = 0;
	for (uint32_t j = 0; j < m; j++) {
		const struct lin__op *o = &h->ops[s->ops[j]];
		nw += (size_t)o->n_then + o->n_els;
	}
	bool ok = true;
	pr.dw = malloc(nw * sizeof(*pr.dw) + 1);
	pr.r1 = malloc(nw * sizeof(*pr.r1) + 1);
	pr.v1 = malloc(nw * sizeof(*pr.v1) + 1);
	pr.r2 = malloc(nw * sizeof(*pr.r2) + 1);
	pr.wr_head = malloc(s->pcap * sizeof(*pr.wr_head));
	pr.wr_next = malloc(nw * sizeof(*pr.wr_next) + 1);
	pr.wr_op = malloc(nw * sizeof(*pr.wr_op) + 1);
	if (!pr.dw || !pr.r1 || !pr.v1 || !pr.r2 || !pr.wr_head || !pr.wr_next || !pr.wr_op)
		goto out; /* only a shortcut: the search finds the same */
	memset(pr.wr_head, 0xff, s->pcap * sizeof(*pr.wr_head));
	for (uint32_t j = 0; j < m; j++) {
		const struct lin__op *o = &h->ops[s->ops[j]];
		bool known = lin__known(o);
		size_t off = o->step_off, n = (size_t)o->n_then + o->n_els;
		if (known) {
			off += o->succeeded ? 0 : o->n_then;
			n = o->succeeded ? o->n_then : o->n_els;
		}
		for (size_t i = 0; i < n; i++) {
			const struct lin_step *st = &h->steps[off + i];
			if (st->kind == LIN_GET)
				continue;
			uint32_t k = s->c->step_key[off + i];
			uint64_t v = st->kind == LIN_PUT ? st->value : 0;
			size_t p = lin__pair(s, k, v, false);
			if (p != SIZE_MAX) {
				pr.wr_op[pr.n_wr] = j;
				pr.wr_next[pr.n_wr] = pr.wr_head[p];
				pr.wr_head[p] = (uint32_t)pr.n_wr++;
			}
			if (!known)
				continue;
			/* A sure write: the last write to k in the branch that ran. */
			bool last = true;
			for (size_t i2 = i + 1; i2 < n; i2++)
				if (s->c->step_key[off + i2] == k && h->steps[off + i2].kind != LIN_GET)
					last = false;
			if (last)
				pr.dw[pr.n++] = (struct lin__dw){k, o->call, o->ret, v};
		}
	}
	qsort(pr.dw, pr.n, sizeof(*pr.dw), lin__dw_cmp);
	for (size_t i = pr.n; i-- > 0;) {
		bool same = i + 1 < pr.n && pr.dw[i + 1].k == pr.dw[i].k;
		uint64_t r1 = same ? pr.r1[i + 1] : UINT64_MAX, v1 = same ? pr.v1[i + 1] : 0;
		uint64_t r2 = same ? pr.r2[i + 1] : UINT64_MAX;
		uint64_t r = pr.dw[i].ret, v = pr.dw[i].v;
		if (r < r1) {
			if (v != v1)
				r2 = r1;
			r1 = r;
			v1 = v;
		} else if (v != v1 && r < r2) {
			r2 = r;
		}
		pr.r1[i] = r1;
		pr.v1[i] = v1;
		pr.r2[i] = r2;
	}
	for (uint32_t j = 0; j < m && ok; j++) {
		const struct lin__op *o = &h->ops[s->ops[j]];
		if (!lin__known(o))
			continue;
		if (o->succeeded)
			for (uint32_t i = 0; i < o->n_cmps && ok; i++) {
				size_t ci = o->cmp_off + i;
				if (h->cmps[ci].value)
					ok = lin__pre_explained(s, &pr, j, s->c->cmp_key[ci], h->cmps[ci].value);
			}
		size_t off = o->step_off + (o->succeeded ? 0 : o->n_then);
		uint32_t n = o->succeeded ? o->n_then : o->n_els;
		for (uint32_t i = 0; i < n && ok; i++) {
			const struct lin_step *st = &h->steps[off + i];
			if (st->kind == LIN_GET && st->value)
				ok = lin__pre_explained(s, &pr, j, s->c->step_key[off + i], st->value);
		}
	}
out:
	free(pr.dw);
	free(pr.r1);
	free(pr.v1);
	free(pr.r2);
	free(pr.wr_head);
	free(pr.wr_next);
	free(pr.wr_op);
	return ok;
}

/* After op gi was applied and uncounted: did it overwrite a value that an op
 * not linearized yet must still observe, while no op left can write that
 * value again? Then no continuation can succeed: prune now rather than at
 * that observer's return (a sound cut; it is what keeps a hot key with many
 * concurrent writers from exploring every subset of them). */
static bool lin__doomed(struct lin__search *s, uint32_t mark)
{
	for (uint32_t u = mark; u < s->n_undo; u++) {
		uint32_t k = s->undo[u].k;
		uint64_t old = s->undo[u].old;
		if (s->vals[k] == old)
			continue;
		size_t p = lin__pair(s, k, old, false);
		if (p != SIZE_MAX && s->pobs[p] > 0 && s->pwr[p] == 0)
			return true;
	}
	return false;
}

static void lin__set(struct lin__search *s, uint32_t k, uint64_t v)
{
	uint64_t old = s->vals[k];
	s->undo[s->n_undo++] = (struct lin__undo){k, old};
	s->st1 ^= lin__kv_term(k, old, LIN_SEED1) ^ lin__kv_term(k, v, LIN_SEED1);
	s->st2 ^= lin__kv_term(k, old, LIN_SEED2) ^ lin__kv_term(k, v, LIN_SEED2);
	s->vals[k] = v;
}

static void lin__rollback(struct lin__search *s, uint32_t mark)
{
	while (s->n_undo > mark) {
		struct lin__undo u = s->undo[--s->n_undo];
		uint64_t cur = s->vals[u.k];
		s->st1 ^= lin__kv_term(u.k, cur, LIN_SEED1) ^ lin__kv_term(u.k, u.old, LIN_SEED1);
		s->st2 ^= lin__kv_term(u.k, cur, LIN_SEED2) ^ lin__kv_term(u.k, u.old, LIN_SEED2);
		s->vals[u.k] = u.old;
	}
}

/* The model's step: run history op `gi` on the state. For an op with a known
 * outcome, false when the branch taken or a value read differs from what the
 * client saw (the state is then unchanged). Writes go through the undo log. */
static bool lin__apply(struct lin__search *s, size_t gi)
{
	const struct lin_history *h = s->c->h;
	const struct lin__op *o = &h->ops[gi];
	bool known = lin__known(o);
	bool br = true;
	for (uint32_t i = 0; i < o->n_cmps; i++) {
		size_t ci = o->cmp_off + i;
		if (s->vals[s->c->cmp_key[ci]] != h->cmps[ci].value) {
			br = false;
			break;
		}
	}
	if (known && br != o->succeeded)
		return false;
	size_t off = o->step_off + (br ? 0 : o->n_then);
	uint32_t n = br ? o->n_then : o->n_els;
	uint32_t mark = s->n_undo;
	/* Steps run in order: a GET sees the PUTs before it in the same branch. */
	for (uint32_t i = 0; i < n; i++) {
		const struct lin_step *st = &h->steps[off + i];
		uint32_t k = s->c->step_key[off + i];
		switch (st->kind) {
		case LIN_GET:
			if (known && s->vals[k] != st->value) {
				lin__rollback(s, mark);
				return false;
			}
			break;
		case LIN_PUT:
			lin__set(s, k, st->value);
			break;
		default:
			lin__set(s, k, 0);
			break;
		}
	}
	lin__pairs_count(s, gi, -1);
	if (lin__doomed(s, mark)) {
		lin__pairs_count(s, gi, +1);
		lin__rollback(s, mark);
		return false;
	}
	return true;
}

/* Does op gi touch a key marked with `stamp`? With `mark`, mark all of its keys. */
static bool lin__touches(const struct lin__ctx *c, size_t gi, const uint32_t *keymark,
                         uint32_t stamp)
{
	const struct lin__op *o = &c->h->ops[gi];
	for (uint32_t i = 0; i < o->n_cmps; i++)
		if (keymark[c->cmp_key[o->cmp_off + i]] == stamp)
			return true;
	size_t n = (size_t)o->n_then + o->n_els;
	for (size_t i = 0; i < n; i++)
		if (keymark[c->step_key[o->step_off + i]] == stamp)
			return true;
	return false;
}

static void lin__mark_keys(const struct lin__ctx *c, size_t gi, uint32_t *keymark, uint32_t stamp)
{
	const struct lin__op *o = &c->h->ops[gi];
	for (uint32_t i = 0; i < o->n_cmps; i++)
		keymark[c->cmp_key[o->cmp_off + i]] = stamp;
	size_t n = (size_t)o->n_then + o->n_els;
	for (size_t i = 0; i < n; i++)
		keymark[c->step_key[o->step_off + i]] = stamp;
}

/* The pending ops connected to o through shared keys (via other pending
 * ops): inc[p] = 1. Only they may be linearized before o at its return. An
 * op outside commutes with o and with every op of the cluster, so putting it
 * before o gives nothing that putting it after o does not (it is still
 * pending, so it may be linearized at a later return): leaving it out
 * prunes the orders of unrelated keys without losing a linearization. */
static void lin__cluster(const struct lin__ctx *c, const uint32_t *ops, const uint32_t *next,
                         uint32_t m, uint32_t o, uint8_t *inc, uint32_t *keymark, uint32_t stamp)
{
	for (uint32_t p = next[m]; p != m; p = next[p])
		inc[p] = 0;
	inc[o] = 1;
	lin__mark_keys(c, ops[o], keymark, stamp);
	for (bool changed = true; changed;) {
		changed = false;
		for (uint32_t p = next[m]; p != m; p = next[p])
			if (!inc[p] && lin__touches(c, ops[p], keymark, stamp)) {
				inc[p] = 1;
				lin__mark_keys(c, ops[p], keymark, stamp);
				changed = true;
			}
	}
}

/* The candidate after `after` at the return of op o: o comes first, then the
 * pending list from its head without o; m when there is none left. */
static uint32_t lin__next_cand(const uint32_t *next, uint32_t m, uint32_t o, uint32_t after)
{
	uint32_t c = after == o ? next[m] : next[after];
	if (c == o)
		c = next[o];
	return c;
}

/* Is the sub-history ops[0..m) (history indices, any order) linearizable,
 * over a state of nk keys? LIN_OK, LIN_VIOLATION, LIN_UNKNOWN (deadline), or
 * -ENOMEM. On LIN_OK and order != NULL, order[0..*n_order) receives the
 * positions in ops[] of the ops linearized, in their linearization order.
 *
 * The search walks the calls and returns in time order and linearizes an op
 * only when it must: at the return of an op not linearized yet, it picks a
 * pending op (called, not linearized), applies it to the model and repeats
 * until the returning op itself is linearized (Lowe's "just in time"
 * linearization, 2017 §4: the same configurations as Wing & Gong's search,
 * without exploring orders of ops that nothing has forced yet). Candidates:
 * the returning op first, then the pending ops in call order. Each decision
 * is a frame on an explicit stack; backtracking pops frames, restores the
 * model from the undo log and resumes with the next candidate. A
 * configuration (event index, linearized ops, model state) seen before is
 * not explored again (the memo). */
static int lin__search_run(struct lin__ctx *c, const uint32_t *ops, uint32_t m, uint32_t nk,
                           uint32_t *order, uint32_t *n_order)
{
	const struct lin_history *h = c->h;
	int rc = -ENOMEM;
	size_t undo_cap = 0, n_cmps = 0;
	uint32_t ne = 0;
	for (uint32_t i = 0; i < m; i++) {
		const struct lin__op *o = &h->ops[ops[i]];
		undo_cap += (size_t)o->n_then + o->n_els;
		n_cmps += o->n_cmps;
		ne += lin__known(o) ? 2 : 1;
	}
	struct lin__event *ev = malloc((size_t)ne * sizeof(*ev) + 1);
	/* The pending list: ops called, not returned, in call order; m is its head. */
	uint32_t *next = malloc(((size_t)m + 1) * sizeof(*next));
	uint32_t *prev = malloc(((size_t)m + 1) * sizeof(*prev));
	uint64_t *z = malloc((size_t)m * 2 * sizeof(*z) + 1);
	uint8_t *lin = calloc((size_t)m + 1, 1);
	uint8_t *inc = calloc((size_t)m + 1, 1);
	uint32_t *keymark = calloc((size_t)nk + 1, sizeof(*keymark));
	uint32_t stamp = 0;
	/* Frames: one per event passed plus one per op linearized. */
	struct lin__frame *stack = malloc(((size_t)ne + m) * sizeof(*stack) + 1);
	struct lin__search s = {.c = c, .ops = ops};
	s.vals = calloc((size_t)nk + 1, sizeof(*s.vals));
	s.undo = malloc(undo_cap * sizeof(*s.undo) + 1);
	struct lin__memo memo = {0};
	if (!ev || !next || !prev || !z || !lin || !inc || !keymark || !stack || !s.vals ||
	    !s.undo)
		goto out;
	if (lin__memo_init(&memo, c->max_states, (size_t)m * 4))
		goto out;
	s.pcap = 64;
	while (s.pcap < 2 * (undo_cap + n_cmps))
		s.pcap *= 2;
	s.pk = calloc(s.pcap, 2 * sizeof(uint64_t));
	s.pobs = calloc(s.pcap, sizeof(uint32_t));
	s.pwr = calloc(s.pcap, sizeof(uint32_t));
	if (!s.pk || !s.pobs || !s.pwr)
		goto out;
	for (uint32_t i = 0; i < m; i++)
		lin__pairs_count(&s, ops[i], +1);
	if (!lin__precheck(&s, m)) {
		/* Some op read a value no write can explain. */
		rc = LIN_VIOLATION;
		goto out;
	}

	uint32_t k = 0;
	for (uint32_t i = 0; i < m; i++) {
		const struct lin__op *o = &h->ops[ops[i]];
		ev[k++] = (struct lin__event){o->call, i, 0};
		/* An op of unknown outcome never returns: it stays pending to the end,
		 * may be linearized whenever a return needs it, and may be left out. */
		if (lin__known(o))
			ev[k++] = (struct lin__event){o->ret, i, 1};
		z[2 * i] = lin__mix(LIN_SEED1 ^ (uint64_t)ops[i]);
		z[2 * i + 1] = lin__mix(LIN_SEED2 + lin__mix((uint64_t)ops[i]));
	}
	assert(k == ne);
	qsort(ev, ne, sizeof(*ev), lin__event_cmp);
	next[m] = prev[m] = m;

	uint64_t sh1 = 0, sh2 = 0; /* Zobrist hashes of the linearized set */
	uint32_t depth = 0;
	uint32_t i = 0; /* next event */
	uint32_t tick = 0;
	/* When backtracking into a LIN_F_LIN frame, the candidate to resume after. */
	bool resume = false;
	uint32_t resume_after = 0;
	for (;;) {
		if (++tick == LIN_CLOCK_EVERY) {
			tick = 0;
			if (lin__now_ns() >= c->deadline) {
				c->out_of_time = true;
				rc = LIN_UNKNOWN;
				goto out;
			}
		}
		c->iterations++;
		if (!resume) {
			if (i == ne)
				break; /* every known op returned, hence was linearized */
			const struct lin__event *e = &ev[i];
			uint32_t o = e->op;
			if (!e->is_ret) {
				/* Append to the pending list (calls come in time order). */
				next[o] = m;
				prev[o] = prev[m];
				next[prev[m]] = o;
				prev[m] = o;
				stack[depth++] = (struct lin__frame){.kind = LIN_F_CALL, .i = i, .op = o};
				i++;
				continue;
			}
			if (lin[o]) {
				next[prev[o]] = next[o];
				prev[next[o]] = prev[o];
				stack[depth++] = (struct lin__frame){.kind = LIN_F_DONE, .i = i, .op = o};
				i++;
				continue;
			}
		}
		/* At the return of op o, not linearized: linearize a candidate. The
		 * order of candidates: o, then the pending list from its head. */
		uint32_t o = ev[i].op;
		uint32_t cand = resume ? lin__next_cand(next, m, o, resume_after) : o;
		resume = false;
		bool moved = false;
		if (++stamp == 0) {
			memset(keymark, 0, ((size_t)nk + 1) * sizeof(*keymark));
			stamp = 1;
		}
		lin__cluster(c, ops, next, m, o, inc, keymark, stamp);
		for (; cand != m; cand = lin__next_cand(next, m, o, cand)) {
			if (lin[cand] || !inc[cand])
				continue;
			uint32_t mark = s.n_undo;
			uint64_t o1 = s.st1, o2 = s.st2;
			if (!lin__apply(&s, ops[cand]))
				continue;
			uint64_t n1 = sh1 ^ z[2 * cand], n2 = sh2 ^ z[2 * cand + 1];
			uint64_t im = lin__mix(cand == o ? i + 1 : i);
			if (!lin__memo_insert(&memo, n1 ^ s.st1 ^ im, n2 ^ s.st2 ^ (im << 1))) {
				lin__rollback(&s, mark);
				lin__pairs_count(&s, ops[cand], +1);
				assert(s.st1 == o1 && s.st2 == o2);
				continue;
			}
			stack[depth++] = (struct lin__frame){
				.kind = LIN_F_LIN, .i = i, .op = cand, .undo = mark, .st1 = o1, .st2 = o2};
			sh1 = n1;
			sh2 = n2;
			lin[cand] = 1;
			/* The returning op leaves the pending list; so does an op of
			 * unknown outcome, which has no return to take it out. */
			if (cand == o || !lin__known(&h->ops[ops[cand]])) {
				next[prev[cand]] = next[cand];
				prev[next[cand]] = prev[cand];
			}
			if (cand == o)
				i++;
			moved = true;
			break;
		}
		if (moved)
			continue;
		/* No candidate: undo decisions back to the last linearization. */
		for (;;) {
			if (depth == 0) {
				rc = LIN_VIOLATION;
				goto out;
			}
			struct lin__frame f = stack[--depth];
			if (f.kind == LIN_F_CALL) {
				next[prev[f.op]] = next[f.op];
				prev[next[f.op]] = prev[f.op];
				i = f.i;
				continue;
			}
			if (f.kind == LIN_F_DONE) {
				next[prev[f.op]] = f.op;
				prev[next[f.op]] = f.op;
				i = f.i;
				continue;
			}
			lin__rollback(&s, f.undo);
			lin__pairs_count(&s, ops[f.op], +1);
			s.st1 = f.st1;
			s.st2 = f.st2;
			sh1 ^= z[2 * f.op];
			sh2 ^= z[2 * f.op + 1];
			lin[f.op] = 0;
			if (f.op == ev[f.i].op || !lin__known(&h->ops[ops[f.op]])) {
				/* Back into the pending list (the reverse of the unlink). */
				next[prev[f.op]] = f.op;
				prev[next[f.op]] = f.op;
			}
			i = f.i;
			resume = true;
			resume_after = f.op;
			break;
		}
	}
	rc = LIN_OK;
	if (order) {
		uint32_t n = 0;
		for (uint32_t d = 0; d < depth; d++)
			if (stack[d].kind == LIN_F_LIN)
				order[n++] = stack[d].op;
		*n_order = n;
	}
out:
	if (memo.full)
		c->memo_full = true;
	lin__memo_free(&memo);
	free(ev);
	free(next);
	free(prev);
	free(z);
	free(lin);
	free(inc);
	free(keymark);
	free(stack);
	free(s.vals);
	free(s.undo);
	free(s.pk);
	free(s.pobs);
	free(s.pwr);
	return rc;
}

/* --- Partitioning: union-find over keys -------------------------------------------------- */

/* key -> dense id, open addressing; UINT32_MAX marks an empty slot's id. */
struct lin__keymap {
	uint32_t *keys, *ids;
	size_t cap, n;
};

static int lin__keymap_init(struct lin__keymap *km, size_t hint)
{
	size_t cap = 64;
	while (cap < hint * 2)
		cap *= 2;
	km->keys = malloc(cap * sizeof(*km->keys));
	km->ids = malloc(cap * sizeof(*km->ids));
	if (!km->keys || !km->ids)
		return -ENOMEM;
	memset(km->ids, 0xff, cap * sizeof(*km->ids));
	km->cap = cap;
	km->n = 0;
	return 0;
}

static uint32_t lin__keymap_get(struct lin__keymap *km, uint32_t key)
{
	size_t i = (size_t)lin__mix(key) & (km->cap - 1);
	while (km->ids[i] != UINT32_MAX) {
		if (km->keys[i] == key)
			return km->ids[i];
		i = (i + 1) & (km->cap - 1);
	}
	/* The map was sized for every key of the history: there is room. */
	assert(km->n * 2 <= km->cap);
	km->keys[i] = key;
	km->ids[i] = (uint32_t)km->n++;
	return km->ids[i];
}

static uint32_t lin__find(uint32_t *parent, uint32_t x)
{
	while (parent[x] != x) {
		parent[x] = parent[parent[x]];
		x = parent[x];
	}
	return x;
}

static void lin__union(uint32_t *parent, uint32_t a, uint32_t b)
{
	a = lin__find(parent, a);
	b = lin__find(parent, b);
	if (a != b)
		parent[a < b ? b : a] = a < b ? a : b;
}

/* --- The report ------------------------------------------------------------------------- */

static const char *lin__key(struct lin__ctx *c, uint32_t key)
{
	if (c->opts && c->opts->key_name) {
		const char *n = c->opts->key_name(key, c->opts->data);
		if (n)
			return n;
	}
	snprintf(c->namebuf, sizeof(c->namebuf), "k%" PRIu32, key);
	return c->namebuf;
}

static void lin__value(struct lin__buf *b, uint64_t v)
{
	if (v == 0)
		lin__printf(b, "absent");
	else
		lin__printf(b, "%" PRIu64, v);
}

static void lin__steps_text(struct lin__ctx *c, struct lin__buf *b, size_t off, uint32_t n,
                            bool outputs)
{
	for (uint32_t i = 0; i < n; i++) {
		const struct lin_step *st = &c->h->steps[off + i];
		if (i)
			lin__printf(b, ", ");
		switch (st->kind) {
		case LIN_GET:
			lin__printf(b, "get %s -> ", lin__key(c, st->key));
			if (outputs)
				lin__value(b, st->value);
			else
				lin__printf(b, "?");
			break;
		case LIN_PUT:
			lin__printf(b, "put %s = %" PRIu64, lin__key(c, st->key), st->value);
			break;
		default:
			lin__printf(b, "delete %s", lin__key(c, st->key));
			break;
		}
	}
}

/* One op on one line: "#3 client 7 [+0.001200ms, +0.004500ms] put k1 = 5". */
static void lin__op_text(struct lin__ctx *c, struct lin__buf *b, size_t gi, uint32_t label,
                         uint64_t t0)
{
	const struct lin__op *o = &c->h->ops[gi];
	bool known = lin__known(o);
	lin__printf(b, "  #%-3" PRIu32 " client %-4" PRIu32 " [+%.6fms, ", label, o->client,
	            (double)(o->call - t0) / 1e6);
	if (known)
		lin__printf(b, "+%.6fms] ", (double)(o->ret - t0) / 1e6);
	else
		lin__printf(b, "unknown]   ");
	if (o->n_cmps == 0 && o->n_els == 0) {
		/* A plain get/put/delete, or a txn without comparisons. */
		if (o->n_then != 1)
			lin__printf(b, "txn [");
		lin__steps_text(c, b, o->step_off, o->n_then, known);
		if (o->n_then != 1)
			lin__printf(b, "]");
		if (known && !o->succeeded)
			lin__printf(b, " (reported the else-branch, which has no comparison to fail)");
	} else {
		lin__printf(b, "txn if (");
		for (uint32_t i = 0; i < o->n_cmps; i++) {
			const struct lin_cmp *cm = &c->h->cmps[o->cmp_off + i];
			lin__printf(b, "%s%s == ", i ? ", " : "", lin__key(c, cm->key));
			lin__value(b, cm->value);
		}
		lin__printf(b, ") then [");
		lin__steps_text(c, b, o->step_off, o->n_then, known && o->succeeded);
		lin__printf(b, "] else [");
		lin__steps_text(c, b, o->step_off + o->n_then, o->n_els, known && !o->succeeded);
		lin__printf(b, "]");
		if (known)
			lin__printf(b, " => %s", o->succeeded ? "then" : "else");
	}
	if (!known)
		lin__printf(b, " (outcome unknown)");
	lin__printf(b, "\n");
}

static int lin__op_by_call(const struct lin_history *h, uint32_t a, uint32_t b)
{
	const struct lin__op *x = &h->ops[a], *y = &h->ops[b];
	if (x->call != y->call)
		return x->call < y->call ? -1 : 1;
	return a < b ? -1 : a > b;
}

static void lin__sort_by_call(const struct lin_history *h, uint32_t *ops, uint32_t n)
{
	/* Insertion sort over an almost sorted array (ops come in call order). */
	for (uint32_t i = 1; i < n; i++) {
		uint32_t x = ops[i];
		uint32_t j = i;
		while (j > 0 && lin__op_by_call(h, ops[j - 1], x) > 0) {
			ops[j] = ops[j - 1];
			j--;
		}
		ops[j] = x;
	}
}

/* --- Observations: which writes the outputs of the history depend on -------------------- */

/* What the ops with a known outcome observed, counted per (key, value):
 *   - a GET's value, and the value of every comparison of a then-branch
 *     (value 0 included: absent is what a DELETE writes, or the start);
 *   - "any write to key k" for a comparison on k in a failed op, unless its
 *     else-branch reads k first (then that read pins the value).
 * A write w is needed by an observation of op r only if w was called no later
 * than r returned (else w comes after r in every order). A write that no op
 * needs in this sense can be taken out of any linearization without changing
 * an output: the last write each observation depends on is still there. So (1) an op of unknown outcome whose writes
 * are all unobserved never needs to be linearized and is set aside before
 * the search, and (2) shrinking may drop such an op and still prove the whole
 * history wrong: a sub-history made only of such drops has a linearization
 * whenever the whole history does. */
struct lin__obs {
	uint64_t *kv; /* 2 words per slot: tag (0: empty), value */
	uint32_t *count; /* observers alive, per slot */
	size_t cap;
	/* Observers per slot (lists of history indices), built by the first
	 * lin__obs_add of each op, while `indexing`. */
	uint32_t *head, *enext, *eop;
	size_t nent;
	bool indexing;
	uint8_t *alive; /* per history op: counted in (added, not removed) */
};

#define LIN_OBS_ANY ((uint64_t)1 << 32) /* tag bit: "any write to the key" */

/* entries: observations to index (one per cmp and step is enough). */
static int lin__obs_init(struct lin__obs *ob, size_t entries, size_t n_ops)
{
	ob->cap = 64;
	while (ob->cap < entries * 4)
		ob->cap *= 2;
	ob->kv = calloc(ob->cap, 2 * sizeof(uint64_t));
	ob->count = calloc(ob->cap, sizeof(uint32_t));
	ob->head = malloc(ob->cap * sizeof(uint32_t));
	ob->enext = malloc((entries + 1) * sizeof(uint32_t));
	ob->eop = malloc((entries + 1) * sizeof(uint32_t));
	ob->alive = calloc(n_ops + 1, 1);
	ob->nent = 0;
	ob->indexing = true;
	if (!ob->kv || !ob->count || !ob->head || !ob->enext || !ob->eop || !ob->alive)
		return -ENOMEM;
	memset(ob->head, 0xff, ob->cap * sizeof(uint32_t));
	return 0;
}

static void lin__obs_free(struct lin__obs *ob)
{
	free(ob->kv);
	free(ob->count);
	free(ob->head);
	free(ob->enext);
	free(ob->eop);
	free(ob->alive);
	memset(ob, 0, sizeof(*ob));
}

/* The slot of (tag, v); created if new. The table has four slots per cmp and
 * step of the ops it was sized for, so it never fills. */
static size_t lin__obs_slot(struct lin__obs *ob, uint64_t tag, uint64_t v)
{
	size_t i = (size_t)lin__mix(lin__mix(tag) ^ v) & (ob->cap - 1);
	for (;;) {
		if (ob->kv[2 * i] == 0) {
			ob->kv[2 * i] = tag;
			ob->kv[2 * i + 1] = v;
			return i;
		}
		if (ob->kv[2 * i] == tag && ob->kv[2 * i + 1] == v)
			return i;
		i = (i + 1) & (ob->cap - 1);
	}
}

static void lin__obs_note(struct lin__obs *ob, uint64_t tag, uint64_t v, size_t gi, int delta)
{
	size_t i = lin__obs_slot(ob, tag, v);
	ob->count[i] += (uint32_t)delta;
	if (ob->indexing) {
		ob->eop[ob->nent] = (uint32_t)gi;
		ob->enext[ob->nent] = ob->head[i];
		ob->head[i] = (uint32_t)ob->nent++;
	}
}

/* Does the executed else-branch of op o read key k before writing it? */
static bool lin__els_reads_first(const struct lin_history *h, const struct lin__op *o, uint32_t k)
{
	for (uint32_t i = 0; i < o->n_els; i++) {
		const struct lin_step *st = &h->steps[o->step_off + o->n_then + i];
		if (st->key == k)
			return st->kind == LIN_GET;
	}
	return false;
}

/* Add (delta = +1) or remove (-1) what op gi observed. */
static void lin__obs_add(const struct lin_history *h, struct lin__obs *ob, size_t gi, int delta)
{
	const struct lin__op *o = &h->ops[gi];
	ob->alive[gi] = delta > 0;
	if (!lin__known(o))
		return;
	for (uint32_t i = 0; i < o->n_cmps; i++) {
		const struct lin_cmp *cm = &h->cmps[o->cmp_off + i];
		if (o->succeeded)
			lin__obs_note(ob, (uint64_t)cm->key + 1, cm->value, gi, delta);
		else if (!lin__els_reads_first(h, o, cm->key))
			lin__obs_note(ob, (uint64_t)cm->key + 1 + LIN_OBS_ANY, 0, gi, delta);
	}
	size_t off = o->step_off + (o->succeeded ? 0 : o->n_then);
	uint32_t n = o->succeeded ? o->n_then : o->n_els;
	for (uint32_t i = 0; i < n; i++) {
		const struct lin_step *st = &h->steps[off + i];
		if (st->kind == LIN_GET)
			lin__obs_note(ob, (uint64_t)st->key + 1, st->value, gi, delta);
	}
}

/* Is slot i observed by an op alive, other than w, that returned no earlier
 * than w was called (a write called after an op returned comes after it in
 * every order, so it cannot be what that op saw)? */
static bool lin__obs_slot_needs(const struct lin_history *h, const struct lin__obs *ob, size_t i,
                                size_t w)
{
	if (ob->count[i] == 0)
		return false;
	for (uint32_t e = ob->head[i]; e != UINT32_MAX; e = ob->enext[e]) {
		uint32_t r = ob->eop[e];
		if (r != w && ob->alive[r] && h->ops[r].ret >= h->ops[w].call)
			return true;
	}
	return false;
}

/* Does some op alive observe a write op gi may make (either branch)? */
static bool lin__obs_needed(const struct lin_history *h, struct lin__obs *ob, size_t gi)
{
	const struct lin__op *o = &h->ops[gi];
	size_t n = (size_t)o->n_then + o->n_els;
	for (size_t i = 0; i < n; i++) {
		const struct lin_step *st = &h->steps[o->step_off + i];
		if (st->kind == LIN_GET)
			continue;
		uint64_t v = st->kind == LIN_PUT ? st->value : 0;
		if (lin__obs_slot_needs(h, ob, lin__obs_slot(ob, (uint64_t)st->key + 1, v), gi) ||
		    lin__obs_slot_needs(h, ob,
		                        lin__obs_slot(ob, (uint64_t)st->key + 1 + LIN_OBS_ANY, 0), gi))
			return true;
	}
	return false;
}

static size_t lin__op_items(const struct lin_history *h, size_t gi)
{
	const struct lin__op *o = &h->ops[gi];
	return (size_t)o->n_cmps + o->n_then + o->n_els;
}

/* --- Shrinking a failing component -------------------------------------------------------- */

static bool lin__writes(const struct lin_history *h, size_t gi)
{
	const struct lin__op *o = &h->ops[gi];
	size_t n = (size_t)o->n_then + o->n_els;
	for (size_t i = 0; i < n; i++)
		if (h->steps[o->step_off + i].kind != LIN_GET)
			return true;
	return false;
}

/* Drop order: ops with an unknown outcome, then reads, then writes. */
static int lin__drop_class(const struct lin_history *h, size_t gi)
{
	if (!lin__known(&h->ops[gi]))
		return 0;
	return lin__writes(h, gi) ? 2 : 1;
}

/* Greedy shrinking of the failing sub-history cur[0..*n): try dropping
 * chunks of candidates, halving the chunk size down to one op, keeping a drop
 * when what is left still fails. Stops at the deadline; cur stays failing. */
static int lin__shrink(struct lin__ctx *c, uint32_t *cur, uint32_t *n, uint32_t nk)
{
	const struct lin_history *h = c->h;
	uint32_t m = *n;
	int rc = -ENOMEM;
	uint32_t *cand = malloc((size_t)m * sizeof(*cand) + 1);
	uint32_t *trial = malloc((size_t)m * sizeof(*trial) + 1);
	uint8_t *in_d = calloc(h->n_ops ? h->n_ops : 1, 1); /* 1: in the drop set */
	struct lin__obs ob = {0};
	size_t nobs = 0;
	for (uint32_t i = 0; i < m; i++)
		nobs += lin__op_items(h, cur[i]);
	if (!cand || !trial || !in_d || lin__obs_init(&ob, nobs, h->n_ops))
		goto out;
	for (uint32_t i = 0; i < m; i++)
		lin__obs_add(h, &ob, cur[i], +1);
	ob.indexing = false;

	for (int pass = 0; pass < 3; pass++) {
		bool changed = false;
		/* Candidates: the current ops, by class then call time. */
		uint32_t nc = 0;
		for (int cls = 0; cls < 3; cls++)
			for (uint32_t i = 0; i < m; i++)
				if (lin__drop_class(h, cur[i]) == cls)
					cand[nc++] = cur[i];
		uint32_t chunk = nc / 2 ? nc / 2 : 1;
		for (;;) {
			for (uint32_t start = 0; start < nc; start += chunk) {
				if (lin__now_ns() >= c->deadline) {
					c->out_of_time = true;
					rc = 0;
					goto out;
				}
				uint32_t end = start + chunk < nc ? start + chunk : nc;
				uint32_t nd = 0;
				for (uint32_t j = start; j < end; j++)
					if (cand[j] != UINT32_MAX) {
						in_d[cand[j]] = 1;
						lin__obs_add(h, &ob, cand[j], -1);
						nd++;
					}
				/* Keep back the writes someone left still reads, to a fixpoint.
				 * A few passes settle it in practice; when they do not (long
				 * chains of writes read by writes), the chunk is left alone. */
				bool again = true;
				for (int fp = 0; fp < 4 && again && nd; fp++) {
					again = false;
					for (uint32_t j = start; j < end; j++) {
						uint32_t g = cand[j];
						if (g != UINT32_MAX && in_d[g] && lin__obs_needed(h, &ob, g)) {
							in_d[g] = 0;
							lin__obs_add(h, &ob, g, +1);
							nd--;
							again = true;
						}
					}
				}
				if (again && nd) {
					for (uint32_t j = start; j < end; j++) {
						uint32_t g = cand[j];
						if (g != UINT32_MAX && in_d[g]) {
							in_d[g] = 0;
							lin__obs_add(h, &ob, g, +1);
						}
					}
					nd = 0;
				}
				int v = LIN_OK;
				uint32_t nt = 0;
				if (nd) {
					for (uint32_t i = 0; i < m; i++)
						if (!in_d[cur[i]])
							trial[nt++] = cur[i];
					/* One trial may not eat the whole budget: past its own
					 * limit it counts as passing (the drop is not kept). */
					uint64_t budget_end = c->deadline, t = lin__now_ns();
					uint64_t lim = t + c->trial_ns;
					bool late = c->out_of_time;
					if (lim > t && lim < budget_end)
						c->deadline = lim;
					v = lin__search_run(c, trial, nt, nk, NULL, NULL);
					c->deadline = budget_end;
					if (v == LIN_UNKNOWN && lin__now_ns() < budget_end) {
						v = LIN_OK;
						c->out_of_time = late;
					}
					if (v < 0) {
						rc = v;
						goto out;
					}
				}
				for (uint32_t j = start; j < end; j++) {
					uint32_t g = cand[j];
					if (g == UINT32_MAX || !in_d[g])
						continue;
					in_d[g] = 0;
					if (v == LIN_VIOLATION)
						cand[j] = UINT32_MAX; /* dropped for good */
					else
						lin__obs_add(h, &ob, g, +1);
				}
				if (v == LIN_VIOLATION) {
					memcpy(cur, trial, (size_t)nt * sizeof(*cur));
					m = nt;
					changed = true;
				}
				if (v == LIN_UNKNOWN) {
					rc = 0;
					goto out;
				}
			}
			if (chunk == 1)
				break;
			chunk /= 2;
		}
		if (!changed)
			break;
	}
	rc = 0;
out:
	*n = m;
	free(cand);
	free(trial);
	free(in_d);
	lin__obs_free(&ob);
	return rc;
}

/* Report for a failing sub-history sub[0..n) (sorted by call) of a component
 * of comp_n ops. */
static int lin__report(struct lin__ctx *c, uint32_t *sub, uint32_t n, uint32_t nk,
                       size_t comp_n, struct lin_result *out)
{
	const struct lin_history *h = c->h;
	struct lin__buf b = {0};
	uint32_t *order = malloc((size_t)n * sizeof(*order) + 1);
	if (!order)
		return -ENOMEM;
	uint64_t t0 = n ? h->ops[sub[0]].call : 0;
	lin__printf(&b,
	            "linearizability violation: a component of %zu ops (ops linked by the "
	            "keys they share) has no linearization.\n"
	            "Smallest failing sub-history found: %" PRIu32 " ops%s; times relative to "
	            "its first call; it keeps every write that could explain what its ops "
	            "read.\n",
	            comp_n, n, c->out_of_time ? " (shrinking cut short by the time budget)" : "");
	uint32_t shown = n < LIN_REPORT_MAX_OPS ? n : LIN_REPORT_MAX_OPS;
	for (uint32_t i = 0; i < shown; i++)
		lin__op_text(c, &b, sub[i], i + 1, t0);
	if (shown < n)
		lin__printf(&b, "  ... %" PRIu32 " more ops\n", n - shown);

	/* The longest prefix (in call order) that has a linearization, and one. */
	uint32_t k = n;
	uint32_t n_order = 0;
	int v = LIN_VIOLATION;
	/* Tried from the longest down, for at most LIN_PREFIX_TRIES prefixes (a
	 * shrink cut short can leave a long sub-history). */
	for (uint32_t tries = 0; k > 0 && v != LIN_OK; tries++) {
		if (tries == LIN_PREFIX_TRIES || lin__now_ns() >= c->deadline) {
			v = LIN_UNKNOWN;
			break;
		}
		k--;
		v = lin__search_run(c, sub, k, nk, order, &n_order);
		if (v < 0) {
			free(order);
			free(b.s);
			return v;
		}
		if (v == LIN_UNKNOWN)
			break;
	}
	if (v == LIN_OK) {
		lin__printf(&b,
		            "Longest linearizable prefix: #1..#%" PRIu32 ", e.g. in the order:", k);
		for (uint32_t i = 0; i < n_order; i++)
			lin__printf(&b, " #%" PRIu32, order[i] + 1);
		if (n_order < k)
			lin__printf(&b, " (the other ops of unknown outcome left out)");
		lin__printf(&b, "\nAdding #%" PRIu32 " leaves no order that gives every op its "
		                "outputs.\n",
		            k + 1);
	} else {
		lin__printf(&b, "Longest linearizable prefix: not determined (time budget, or "
		                "more than %u prefixes to try).\n",
		            LIN_PREFIX_TRIES);
	}
	free(order);
	if (b.oom) {
		free(b.s);
		return -ENOMEM;
	}
	out->report = b.s;
	out->report_ops = n;
	return 0;
}

/* --- The check --------------------------------------------------------------------------- */

const char *lin_verdict_name(int verdict)
{
	switch (verdict) {
	case LIN_OK:
		return "ok";
	case LIN_VIOLATION:
		return "violation";
	case LIN_UNKNOWN:
		return "unknown";
	default:
		return "?";
	}
}

void lin_result_free(struct lin_result *r)
{
	free(r->report);
	memset(r, 0, sizeof(*r));
}

#define LIN_SKIPPED (UINT32_MAX - 1) /* op_comp of an op set aside */

struct lin__comp {
	uint32_t first; /* into the ops-by-component array */
	uint32_t n; /* ops */
	uint32_t nk; /* keys */
};

static int lin__comp_by_size(const void *a, const void *b)
{
	const struct lin__comp *x = a, *y = b;
	if (x->n != y->n)
		return x->n < y->n ? -1 : 1;
	return x->first < y->first ? -1 : x->first > y->first;
}

int lin_check(const struct lin_history *h, const struct lin_check_opts *opts,
              struct lin_result *out)
{
	memset(out, 0, sizeof(*out));
	int rc = -ENOMEM;
	uint64_t start = lin__now_ns();
	uint64_t max_ms = opts && opts->max_ms ? opts->max_ms : LIN_DEFAULT_MS;
	struct lin__ctx c = {
		.h = h,
		.opts = opts,
		.deadline = max_ms > UINT64_MAX / 4000000u ? UINT64_MAX : start + max_ms * 1000000u,
		.max_states = opts && opts->max_states ? opts->max_states : LIN_DEFAULT_STATES,
	};
	size_t n = h->n_ops;
	out->n_ops = n;
	struct lin__keymap km = {0};
	uint32_t *cmp_dense = NULL, *step_dense = NULL, *parent = NULL, *local = NULL;
	uint32_t *comp_of_root = NULL, *op_comp = NULL, *byc = NULL;
	uint32_t *fill = NULL, *work = NULL;
	struct lin__comp *comps = NULL;
	struct lin__buf ub = {0};
	struct lin__obs obs = {0};
	uint8_t *skip = NULL;

	c.cmp_key = malloc(h->n_cmps * sizeof(*c.cmp_key) + 1);
	c.step_key = malloc(h->n_steps * sizeof(*c.step_key) + 1);
	cmp_dense = c.cmp_key; /* dense ids first, made local below */
	step_dense = c.step_key;
	if (!c.cmp_key || !c.step_key || lin__keymap_init(&km, h->n_cmps + h->n_steps))
		goto fail;
	for (size_t i = 0; i < h->n_cmps; i++)
		cmp_dense[i] = lin__keymap_get(&km, h->cmps[i].key);
	for (size_t i = 0; i < h->n_steps; i++)
		step_dense[i] = lin__keymap_get(&km, h->steps[i].key);
	size_t nk = km.n;

	/* Union the keys of each op: both branches, since which one runs is what
	 * the comparisons decide. */
	parent = malloc(nk * sizeof(*parent) + 1);
	if (!parent)
		goto fail;
	for (size_t k = 0; k < nk; k++)
		parent[k] = (uint32_t)k;
	op_comp = malloc(n * sizeof(*op_comp) + 1);
	if (!op_comp)
		goto fail;
	/* Ops of unknown outcome that change nothing anyone observed never need
	 * a place in the order: set them aside (see struct lin__obs). */
	skip = calloc(n + 1, 1);
	size_t items = 0;
	for (size_t i = 0; i < n; i++)
		items += lin__op_items(h, i);
	if (!skip || lin__obs_init(&obs, items, n))
		goto fail;
	for (size_t i = 0; i < n; i++)
		lin__obs_add(h, &obs, i, +1);
	obs.indexing = false;
	for (size_t i = 0; i < n; i++)
		if (!lin__known(&h->ops[i]) && !lin__obs_needed(h, &obs, i))
			skip[i] = 1;
	lin__obs_free(&obs);

	for (size_t i = 0; i < n; i++) {
		const struct lin__op *o = &h->ops[i];
		uint32_t first = UINT32_MAX;
		if (skip[i]) {
			op_comp[i] = LIN_SKIPPED;
			continue;
		}
		for (uint32_t j = 0; j < o->n_cmps; j++) {
			uint32_t k = cmp_dense[o->cmp_off + j];
			if (first == UINT32_MAX)
				first = k;
			else
				lin__union(parent, first, k);
		}
		for (uint32_t j = 0; j < o->n_then + o->n_els; j++) {
			uint32_t k = step_dense[o->step_off + j];
			if (first == UINT32_MAX)
				first = k;
			else
				lin__union(parent, first, k);
		}
		op_comp[i] = first; /* a key for now; UINT32_MAX: touches none */
	}

	/* Number the components: one per key root, one per key-less op. */
	comp_of_root = malloc(nk * sizeof(*comp_of_root) + 1);
	local = malloc(nk * sizeof(*local) + 1);
	if (!comp_of_root || !local)
		goto fail;
	memset(comp_of_root, 0xff, nk * sizeof(*comp_of_root));
	size_t ncomp = 0;
	for (size_t k = 0; k < nk; k++) {
		uint32_t r = lin__find(parent, (uint32_t)k);
		if (comp_of_root[r] == UINT32_MAX)
			comp_of_root[r] = (uint32_t)ncomp++;
	}
	size_t nkeyless = 0;
	for (size_t i = 0; i < n; i++)
		if (op_comp[i] == UINT32_MAX)
			nkeyless++;
		else if (op_comp[i] == LIN_SKIPPED)
			out->n_set_aside++;
	comps = calloc(ncomp + nkeyless + 1, sizeof(*comps));
	if (!comps)
		goto fail;
	for (size_t k = 0; k < nk; k++) {
		struct lin__comp *cp = &comps[comp_of_root[lin__find(parent, (uint32_t)k)]];
		local[k] = cp->nk++;
	}
	for (size_t i = 0; i < n; i++) {
		if (op_comp[i] == LIN_SKIPPED)
			continue;
		if (op_comp[i] == UINT32_MAX)
			op_comp[i] = (uint32_t)ncomp++;
		else
			op_comp[i] = comp_of_root[lin__find(parent, op_comp[i])];
		comps[op_comp[i]].n++;
	}
	for (size_t i = 0; i < h->n_cmps; i++)
		c.cmp_key[i] = local[cmp_dense[i]];
	for (size_t i = 0; i < h->n_steps; i++)
		c.step_key[i] = local[step_dense[i]];

	/* Ops grouped by component (counting sort), each group in call order. */
	byc = malloc(n * sizeof(*byc) + 1);
	fill = calloc(ncomp + 1, sizeof(*fill));
	if (!byc || !fill)
		goto fail;
	uint32_t acc = 0;
	for (size_t p = 0; p < ncomp; p++) {
		comps[p].first = acc;
		fill[p] = acc;
		acc += comps[p].n;
	}
	for (size_t i = 0; i < n; i++)
		if (op_comp[i] != LIN_SKIPPED)
			byc[fill[op_comp[i]]++] = (uint32_t)i;
	for (size_t p = 0; p < ncomp; p++)
		lin__sort_by_call(h, byc + comps[p].first, comps[p].n);

	/* Smallest components first: a violation found there is cheap to shrink. */
	qsort(comps, ncomp, sizeof(*comps), lin__comp_by_size);
	/* Keys touched only by ops set aside make empty components: not counted. */
	size_t first_comp = 0;
	while (first_comp < ncomp && comps[first_comp].n == 0)
		first_comp++;
	out->n_partitions = ncomp - first_comp;
	out->verdict = LIN_OK;
	size_t unknown_at = SIZE_MAX;
	for (size_t p = first_comp; p < ncomp; p++) {
		struct lin__comp *cp = &comps[p];
		if (lin__now_ns() >= c.deadline) {
			c.out_of_time = true;
			unknown_at = p;
			out->verdict = LIN_UNKNOWN;
			break;
		}
		uint64_t t_search = lin__now_ns();
		int v = lin__search_run(&c, byc + cp->first, cp->n, cp->nk, NULL, NULL);
		/* A shrinking trial may take a few times what the whole took. */
		c.trial_ns = 4 * (lin__now_ns() - t_search);
		if (c.trial_ns < 100000000u)
			c.trial_ns = 100000000u;
		if (v < 0)
			goto fail;
		if (v == LIN_UNKNOWN) {
			unknown_at = p;
			out->verdict = LIN_UNKNOWN;
			break;
		}
		out->n_checked_partitions++;
		if (v == LIN_VIOLATION) {
			out->verdict = LIN_VIOLATION;
			out->failing_partition_ops = cp->n;
			work = malloc((size_t)cp->n * sizeof(*work) + 1);
			if (!work)
				goto fail;
			memcpy(work, byc + cp->first, (size_t)cp->n * sizeof(*work));
			uint32_t wn = cp->n;
			/* Shrinking gets at most a quarter of the budget: the verdict is
			 * known, and a report cut short beats a long wait. */
			uint64_t shrink_end = max_ms > UINT64_MAX / 4000000u
			                              ? UINT64_MAX
			                              : lin__now_ns() + max_ms * 250000u;
			if (shrink_end < c.deadline)
				c.deadline = shrink_end;
			rc = lin__shrink(&c, work, &wn, cp->nk);
			if (rc < 0)
				goto fail;
			rc = lin__report(&c, work, wn, cp->nk, cp->n, out);
			if (rc < 0)
				goto fail;
			break;
		}
	}
	if (out->verdict == LIN_UNKNOWN) {
		const struct lin__comp *cp = &comps[unknown_at];
		lin__printf(&ub,
		            "linearizability unknown: the time budget (%" PRIu64 " ms) ran out "
		            "checking a component of %" PRIu32 " ops over %" PRIu32 " keys "
		            "(%zu of %zu components decided, smallest first)%s.\n",
		            max_ms, cp->n, cp->nk, out->n_checked_partitions, out->n_partitions,
		            c.memo_full ? "; the memo was full (max_states) for part of it" : "");
		if (ub.oom)
			goto fail;
		out->report = ub.s;
		ub.s = NULL;
	}
	rc = 0;
	goto done;
fail:
	rc = -ENOMEM;
	lin_result_free(out);
done:
	free(ub.s);
	free(km.keys);
	free(km.ids);
	free(c.cmp_key);
	free(c.step_key);
	free(parent);
	free(local);
	free(comp_of_root);
	free(op_comp);
	free(comps);
	free(byc);
	free(fill);
	free(work);
	free(skip);
	lin__obs_free(&obs);
	return rc;
}
