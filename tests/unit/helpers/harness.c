/* harness.c: an in-memory cluster for the Raft core's tests (see harness.h).
 * Every step of THE LOOP CONTRACT is done here and nowhere else, so the
 * tests exercise the contract exactly as raft.h states it. */
#include "harness.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void h_fatal(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s:%d: harness: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	fflush(stderr);
	abort();
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	H_CHECK(p != NULL, "out of memory");
	return p;
}

static void *xrealloc(void *p, size_t size)
{
	void *q = realloc(p, size ? size : 1);
	H_CHECK(q != NULL, "out of memory");
	return q;
}

/* Everything rendered goes to h->out (transcripts) and, with CAIRN_TRACE=1,
 * to stderr. Rendering is skipped entirely when neither wants it. */
static bool emitting(const struct harness *h)
{
	return h->out != NULL || h->trace;
}

static void emit_buf(struct harness *h, struct h_buf *b)
{
	if (h->out)
		h_buf_printf(h->out, "%s", h_buf_str(b));
	if (h->trace)
		fprintf(stderr, "%s", h_buf_str(b));
	h_buf_reset(b);
}

static void emit(struct harness *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(struct harness *h, const char *fmt, ...)
{
	if (!emitting(h))
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	struct h_buf b = {0};
	h_buf_printf(&b, "%s", line);
	emit_buf(h, &b);
	h_buf_free(&b);
}

static void emit_msg(struct harness *h, const char *prefix, const struct raft_msg *m,
		     const char *suffix)
{
	if (!emitting(h))
		return;
	struct h_buf b = {0};
	h_buf_printf(&b, "%s", prefix);
	h_render_msg(&b, m);
	h_buf_printf(&b, "%s\n", suffix);
	emit_buf(h, &b);
	h_buf_free(&b);
}

struct harness *h_new(void)
{
	struct harness *h = xcalloc(1, sizeof *h);
	h->seed = 1;
	const char *t = getenv("CAIRN_TRACE");
	h->trace = t != NULL && t[0] == '1';
	for (uint64_t id = 0; id <= H_MAX_ID; id++)
		h->nodes[id].id = id;
	return h;
}

static void msg_free(struct h_msg *hm)
{
	free(hm->ents);
	free(hm->blob);
	memset(hm, 0, sizeof *hm);
}

void h_free(struct harness *h)
{
	if (!h)
		return;
	for (uint64_t id = 1; id <= H_MAX_ID; id++) {
		struct h_node *n = &h->nodes[id];
		if (n->running) {
			/* An update taken but not finished dies with the node. */
			raft_free(n->r);
		}
		if (n->exists)
			raft_memstore_free(n->ms);
		h_buf_free(&n->sm);
		free(n->reads);
	}
	for (size_t i = 0; i < h->nq; i++)
		msg_free(&h->q[i]);
	free(h->q);
	free(h->committed);
	free(h);
}

struct h_node *h_node(struct harness *h, uint64_t id)
{
	H_CHECK(id >= 1 && id <= H_MAX_ID, "node id %" PRIu64 " out of range", id);
	return &h->nodes[id];
}

static struct h_node *running_node(struct harness *h, uint64_t id)
{
	struct h_node *n = h_node(h, id);
	H_CHECK(n->running, "node %" PRIu64 " is not running", id);
	return n;
}

struct raft *h_raft(struct harness *h, uint64_t id)
{
	return running_node(h, id)->r;
}

void h_node_init(struct harness *h, uint64_t id, const struct raft_conf *conf)
{
	struct h_node *n = h_node(h, id);
	H_CHECK(!n->exists, "node %" PRIu64 " already exists", id);
	int rc = raft_memstore_new(NULL, &n->ms);
	H_CHECK(rc == 0, "raft_memstore_new: %s", raft_strerror(rc));
	if (conf) {
		rc = raft_memstore_bootstrap(n->ms, conf);
		H_CHECK(rc == 0, "raft_memstore_bootstrap: %s", raft_strerror(rc));
	}
	struct raft_storage s = raft_memstore_storage(n->ms);
	n->base = s.last_index(s.ctx);
	n->exists = true;
	n->rng = h->seed * 0x100000001b3ULL + id;
}

void h_node_preload(struct harness *h, uint64_t id, const uint64_t *terms, size_t n_terms,
		    uint64_t term, uint64_t vote)
{
	struct h_node *n = h_node(h, id);
	H_CHECK(n->exists && !n->running, "preload node %" PRIu64 " before start", id);
	struct raft_storage s = raft_memstore_storage(n->ms);
	uint64_t base = s.last_index(s.ctx);
	struct raft_entry *ents = xcalloc(n_terms, sizeof *ents);
	char(*data)[32] = xcalloc(n_terms, sizeof *data);
	for (size_t i = 0; i < n_terms; i++) {
		ents[i].term = terms[i];
		ents[i].index = base + 1 + i;
		ents[i].type = RAFT_ENTRY_NORMAL;
		int len = snprintf(data[i], sizeof data[i], "t%" PRIu64 "i%" PRIu64, ents[i].term,
				   ents[i].index);
		ents[i].len = (uint32_t)len;
		ents[i].data = (const uint8_t *)data[i];
	}
	struct raft_update u;
	memset(&u, 0, sizeof u);
	u.entries = ents;
	u.n_entries = (uint32_t)n_terms;
	u.has_hard_state = true;
	raft_memstore_hard_state(n->ms, &u.hard_state);
	if (term >= u.hard_state.term) {
		u.hard_state.term = term;
		u.hard_state.vote = vote;
	}
	int rc = raft_memstore_persist(n->ms, &u);
	H_CHECK(rc == 0, "preload persist: %s", raft_strerror(rc));
	free(data);
	free(ents);
}

static uint64_t h_rand(void *ctx)
{
	struct h_node *n = ctx;
	if (n->rand_fixed)
		return n->rand_value;
	/* splitmix64 */
	uint64_t z = (n->rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void fill_config(struct h_node *n, struct raft_config *cfg)
{
	raft_config_init(cfg);
	cfg->id = n->id;
	cfg->storage = raft_memstore_storage(n->ms);
	cfg->rand = h_rand;
	cfg->rand_ctx = n;
	cfg->applied = n->applied;
	const struct h_opts *o = &n->opts;
	cfg->heap = o->heap;
	cfg->pre_vote = o->pre_vote;
	cfg->check_quorum = o->check_quorum;
#define H__OPT(f)                                                                \
	if (o->f)                                                                \
		cfg->f = o->f;
	H__OPT(election_ticks)
	H__OPT(heartbeat_ticks)
	H__OPT(max_entry_bytes)
	H__OPT(max_msg_bytes)
	H__OPT(max_inflight_msgs)
	H__OPT(max_uncommitted_bytes)
	H__OPT(max_committed_bytes)
	H__OPT(max_pending_reads)
	H__OPT(snapshot_chunk_bytes)
	H__OPT(max_snapshot_inflight)
#undef H__OPT
}

int h_node_start(struct harness *h, uint64_t id, const struct h_opts *opts)
{
	struct h_node *n = h_node(h, id);
	H_CHECK(n->exists && !n->running, "start node %" PRIu64 ": not created or running", id);
	if (opts)
		n->opts = *opts;
	struct raft_config cfg;
	fill_config(n, &cfg);
	int rc = raft_new(&cfg, &n->r);
	if (rc != 0)
		return rc;
	n->running = true;
	struct raft_status st;
	raft_status(n->r, &st);
	n->last_term = st.term;
	return 0;
}

void h_conf_add(struct raft_conf *c, uint64_t id, uint32_t role)
{
	H_CHECK(c->n < RAFT_MAX_MEMBERS, "too many members");
	c->members[c->n].id = id;
	c->members[c->n].role = role;
	c->n++;
}

struct raft_conf h_conf_voters(uint32_t n)
{
	struct raft_conf c;
	memset(&c, 0, sizeof c);
	for (uint32_t i = 1; i <= n; i++)
		h_conf_add(&c, i, RAFT_VOTER);
	return c;
}

const struct raft_msg *h_umsg(const struct raft_msg *msgs, uint32_t n, uint64_t to,
			      uint32_t type)
{
	for (uint32_t i = 0; i < n; i++)
		if ((!to || msgs[i].to == to) && msgs[i].type == type)
			return &msgs[i];
	return NULL;
}

uint32_t h_ucount(const struct raft_msg *msgs, uint32_t n, uint32_t type)
{
	uint32_t c = 0;
	for (uint32_t i = 0; i < n; i++)
		c += msgs[i].type == type;
	return c;
}

void h_cluster_learners(struct harness *h, uint32_t nv, uint32_t nl, const struct h_opts *opts)
{
	struct raft_conf conf;
	memset(&conf, 0, sizeof conf);
	for (uint32_t i = 1; i <= nv + nl; i++)
		h_conf_add(&conf, i, i <= nv ? RAFT_VOTER : RAFT_LEARNER);
	for (uint32_t i = 1; i <= nv + nl; i++) {
		h_node_init(h, i, &conf);
		int rc = h_node_start(h, i, opts);
		H_CHECK(rc == 0, "start node %" PRIu32 ": %s", i, raft_strerror(rc));
	}
}

void h_cluster(struct harness *h, uint32_t n, const struct h_opts *opts)
{
	h_cluster_learners(h, n, 0, opts);
}

void h_start_alone(struct harness *h, uint64_t id, uint32_t nvoters, const uint64_t *terms,
		   size_t n, uint64_t term, uint64_t vote, const struct h_opts *opts)
{
	struct raft_conf c = h_conf_voters(nvoters);
	h_node_init(h, id, &c);
	h_node_preload(h, id, terms, n, term, vote);
	int rc = h_node_start(h, id, opts);
	H_CHECK(rc == 0, "start node %" PRIu64 ": %s", id, raft_strerror(rc));
}

void h_cluster_preset(struct harness *h, uint32_t n, const struct h_preset *p,
		      const struct h_opts *opts)
{
	struct raft_conf c = h_conf_voters(n);
	for (uint32_t i = 0; i < n; i++) {
		h_node_init(h, i + 1, &c);
		h_node_preload(h, i + 1, p[i].terms, p[i].n, p[i].term, 0);
		int rc = h_node_start(h, i + 1, opts);
		H_CHECK(rc == 0, "start node %" PRIu32 ": %s", i + 1, raft_strerror(rc));
	}
}

static void sm_load_snapshot(struct h_node *n)
{
	struct raft_snapshot_meta meta;
	const uint8_t *data = NULL;
	memset(&meta, 0, sizeof meta);
	int rc = raft_memstore_snapshot_data(n->ms, &meta, &data);
	H_CHECK(rc == 0, "node %" PRIu64 ": snapshot_data: %s", n->id, raft_strerror(rc));
	h_buf_reset(&n->sm);
	if (meta.size)
		h_buf_printf(&n->sm, "%.*s", (int)meta.size, (const char *)data);
	n->applied = meta.index;
}

void h_crash(struct harness *h, uint64_t id)
{
	struct h_node *n = running_node(h, id);
	raft_free(n->r);
	n->r = NULL;
	n->running = false;
	n->pending = false;
	memset(&n->u, 0, sizeof n->u);
	emit(h, "> %" PRIu64 " crashed\n", id);
}

int h_restart(struct harness *h, uint64_t id)
{
	struct h_node *n = h_node(h, id);
	H_CHECK(!n->running, "restart node %" PRIu64 ": still running", id);
	sm_load_snapshot(n);
	int rc = h_node_start(h, id, NULL);
	if (rc == 0)
		emit(h, "> %" PRIu64 " restarted at applied=%" PRIu64 "\n", id, n->applied);
	return rc;
}

void h_status(struct harness *h, uint64_t id, struct raft_status *st)
{
	raft_status(h_raft(h, id), st);
}

uint32_t h_state(struct harness *h, uint64_t id)
{
	struct raft_status st;
	h_status(h, id, &st);
	return st.state;
}

uint64_t h_term(struct harness *h, uint64_t id)
{
	struct raft_status st;
	h_status(h, id, &st);
	return st.term;
}

uint64_t h_commit(struct harness *h, uint64_t id)
{
	struct raft_status st;
	h_status(h, id, &st);
	return st.commit;
}

uint64_t h_last_index(struct harness *h, uint64_t id)
{
	struct raft_status st;
	h_status(h, id, &st);
	return st.last_index;
}

uint64_t h_leader(struct harness *h, uint64_t id)
{
	struct raft_status st;
	h_status(h, id, &st);
	return st.leader;
}

uint64_t h_log_term(struct harness *h, uint64_t id, uint64_t i)
{
	struct h_node *n = h_node(h, id);
	H_CHECK(n->exists, "node %" PRIu64 " does not exist", id);
	struct raft_storage s = raft_memstore_storage(n->ms);
	if (i < s.first_index(s.ctx) || i > s.last_index(s.ctx))
		return 0;
	uint64_t t = 0;
	if (s.term(s.ctx, i, &t) != 0)
		return 0;
	return t;
}

bool h_log_entry(struct harness *h, uint64_t id, uint64_t i, struct raft_entry *e)
{
	struct h_node *n = h_node(h, id);
	H_CHECK(n->exists, "node %" PRIu64 " does not exist", id);
	struct raft_storage s = raft_memstore_storage(n->ms);
	if (i < s.first_index(s.ctx) || i > s.last_index(s.ctx))
		return false;
	uint32_t got = 0;
	return s.entries(s.ctx, i, i + 1, UINT64_MAX, e, &got) == 0 && got == 1;
}

uint64_t h_base(struct harness *h, uint64_t id)
{
	struct h_node *n = h_node(h, id);
	H_CHECK(n->exists, "node %" PRIu64 " does not exist", id);
	return n->base;
}

const struct raft_stats *h_stats(struct harness *h, uint64_t id)
{
	return raft_stats(h_raft(h, id));
}

bool h_progress(struct harness *h, uint64_t id, uint64_t peer, struct raft_progress_info *pi)
{
	struct raft_progress_info all[RAFT_MAX_MEMBERS];
	uint32_t n = raft_progress(h_raft(h, id), all, RAFT_MAX_MEMBERS);
	for (uint32_t i = 0; i < n; i++) {
		if (all[i].id == peer) {
			*pi = all[i];
			return true;
		}
	}
	return false;
}

/* ---- Invariants. ---------------------------------------------------------- */

static uint64_t fnv(const uint8_t *d, uint32_t len)
{
	uint64_t x = 0xcbf29ce484222325ULL;
	for (uint32_t i = 0; i < len; i++) {
		x ^= d[i];
		x *= 0x100000001b3ULL;
	}
	return x;
}

/* One leader per term (Figure 3.2 Election Safety) and terms that never go
 * back (currentTerm only increases). */
static void check_node(struct harness *h, struct h_node *n)
{
	struct raft_status st;
	raft_status(n->r, &st);
	H_CHECK(st.term >= n->last_term,
		"node %" PRIu64 ": term went back from %" PRIu64 " to %" PRIu64, n->id,
		n->last_term, st.term);
	n->last_term = st.term;
	H_CHECK(st.commit <= st.last_index,
		"node %" PRIu64 ": commit %" PRIu64 " beyond last index %" PRIu64, n->id,
		st.commit, st.last_index);
	if (st.state == RAFT_LEADER && st.term < 256) {
		uint64_t *l = &h->leader_of_term[st.term];
		H_CHECK(*l == 0 || *l == n->id,
			"two leaders in term %" PRIu64 ": %" PRIu64 " and %" PRIu64, st.term, *l,
			n->id);
		*l = n->id;
	}
}

/* State Machine Safety (Figure 3.2): an index is applied with one entry. */
static void check_committed(struct harness *h, struct h_node *n, const struct raft_entry *e)
{
	if (e->index >= h->cap_committed) {
		size_t cap = h->cap_committed ? h->cap_committed : 64;
		while (cap <= e->index)
			cap *= 2;
		h->committed = xrealloc(h->committed, cap * sizeof *h->committed);
		memset(h->committed + h->cap_committed, 0,
		       (cap - h->cap_committed) * sizeof *h->committed);
		h->cap_committed = cap;
	}
	struct h_committed *c = &h->committed[e->index];
	uint64_t hash = fnv(e->data, e->len);
	if (!c->set) {
		c->set = true;
		c->term = e->term;
		c->type = e->type;
		c->hash = hash;
		return;
	}
	H_CHECK(c->term == e->term && c->type == e->type && c->hash == hash,
		"node %" PRIu64 " applied %" PRIu64 "/%" PRIu64 " type %" PRIu32
		" where another node applied %" PRIu64 "/%" PRIu64 " type %" PRIu32,
		n->id, e->term, e->index, e->type, c->term, e->index, c->type);
}

/* ---- The network. --------------------------------------------------------- */

static void msg_copy(struct h_msg *dst, const struct raft_msg *m)
{
	memset(dst, 0, sizeof *dst);
	dst->m = *m;
	uint32_t n_entries = m->entries ? m->n_entries : 0;
	size_t total = m->data ? m->len : 0;
	for (uint32_t i = 0; i < n_entries; i++)
		total += m->entries[i].data ? m->entries[i].len : 0;
	dst->blob = xcalloc(1, total);
	dst->ents = n_entries ? xcalloc(n_entries, sizeof *dst->ents) : NULL;
	size_t off = 0;
	for (uint32_t i = 0; i < n_entries; i++) {
		dst->ents[i] = m->entries[i];
		if (m->entries[i].data && m->entries[i].len) {
			memcpy(dst->blob + off, m->entries[i].data, m->entries[i].len);
			dst->ents[i].data = dst->blob + off;
			off += m->entries[i].len;
		} else {
			dst->ents[i].data = NULL;
			dst->ents[i].len = m->entries[i].data ? m->entries[i].len : 0;
		}
	}
	dst->m.entries = dst->ents;
	dst->m.n_entries = n_entries;
	if (m->data && m->len) {
		memcpy(dst->blob + off, m->data, m->len);
		dst->m.data = dst->blob + off;
	} else {
		dst->m.data = NULL;
		dst->m.len = 0;
	}
}

static void enqueue(struct harness *h, const struct raft_msg *m)
{
	if (h->nq == h->capq) {
		h->capq = h->capq ? h->capq * 2 : 64;
		h->q = xrealloc(h->q, h->capq * sizeof *h->q);
	}
	msg_copy(&h->q[h->nq++], m);
}

static bool link_cut(const struct harness *h, uint64_t from, uint64_t to)
{
	return from <= H_MAX_ID && to <= H_MAX_ID && h->cut[from][to];
}

/* A node sends m: counted, then queued unless the link is cut. */
static void send_msg(struct harness *h, const struct raft_msg *m)
{
	if (m->from <= H_MAX_ID && m->type <= RAFT_MSG_TYPE_MAX)
		h->sent[m->from][m->type]++;
	if (m->type == RAFT_MSG_VOTE_RESP && !m->reject && m->from <= H_MAX_ID)
		h->granted_votes[m->from]++;
	if (link_cut(h, m->from, m->to)) {
		emit_msg(h, "  ", m, " (dropped: partition)");
		return;
	}
	emit_msg(h, "  ", m, "");
	enqueue(h, m);
}

void h_inject(struct harness *h, const struct raft_msg *m)
{
	enqueue(h, m);
}

static bool matches(const struct raft_msg *m, uint64_t from, uint64_t to, uint32_t type)
{
	return (!from || m->from == from) && (!to || m->to == to) && (!type || m->type == type);
}

size_t h_count(const struct harness *h, uint64_t from, uint64_t to, uint32_t type)
{
	size_t c = 0;
	for (size_t i = 0; i < h->nq; i++)
		c += matches(&h->q[i].m, from, to, type);
	return c;
}

const struct raft_msg *h_find(const struct harness *h, uint64_t from, uint64_t to,
			      uint32_t type, size_t nth)
{
	for (size_t i = 0; i < h->nq; i++) {
		if (matches(&h->q[i].m, from, to, type)) {
			if (nth == 0)
				return &h->q[i].m;
			nth--;
		}
	}
	return NULL;
}

int h_step(struct harness *h, const struct raft_msg *m)
{
	struct h_node *n = running_node(h, m->to);
	int rc = raft_step(n->r, m);
	check_node(h, n);
	return rc;
}

/* Take the matching messages out of the queue, keeping the others in order. */
static size_t take(struct harness *h, uint64_t from, uint64_t to, uint32_t type,
		   struct h_msg **out)
{
	size_t n = 0, keep = 0;
	struct h_msg *taken = xcalloc(h->nq, sizeof *taken);
	for (size_t i = 0; i < h->nq; i++) {
		if (matches(&h->q[i].m, from, to, type))
			taken[n++] = h->q[i];
		else
			h->q[keep++] = h->q[i];
	}
	h->nq = keep;
	*out = taken;
	return n;
}

size_t h_deliver(struct harness *h, uint64_t from, uint64_t to, uint32_t type)
{
	struct h_msg *ms;
	size_t n = take(h, from, to, type, &ms);
	for (size_t i = 0; i < n; i++) {
		const struct raft_msg *m = &ms[i].m;
		if (m->to > H_MAX_ID || m->to == 0 || !h->nodes[m->to].running) {
			emit_msg(h, "  ", m, " (dropped: node down)");
		} else if (link_cut(h, m->from, m->to)) {
			emit_msg(h, "  ", m, " (dropped: partition)");
		} else {
			emit_msg(h, "  ", m, "");
			int rc = h_step(h, m);
			if (rc != 0)
				emit(h, "  raft_step: %s\n", h_errname(rc));
		}
		msg_free(&ms[i]);
	}
	free(ms);
	return n;
}

size_t h_deliver_all(struct harness *h)
{
	return h_deliver(h, 0, 0, 0);
}

size_t h_drop(struct harness *h, uint64_t from, uint64_t to, uint32_t type)
{
	struct h_msg *ms;
	size_t n = take(h, from, to, type, &ms);
	for (size_t i = 0; i < n; i++) {
		emit_msg(h, "  ", &ms[i].m, " (dropped)");
		msg_free(&ms[i]);
	}
	free(ms);
	return n;
}

bool h_drop_nth(struct harness *h, uint64_t from, uint64_t to, uint32_t type, size_t nth)
{
	for (size_t i = 0; i < h->nq; i++) {
		if (!matches(&h->q[i].m, from, to, type))
			continue;
		if (nth-- > 0)
			continue;
		emit_msg(h, "  ", &h->q[i].m, " (dropped)");
		msg_free(&h->q[i]);
		memmove(&h->q[i], &h->q[i + 1], (h->nq - i - 1) * sizeof *h->q);
		h->nq--;
		return true;
	}
	return false;
}

void h_cut(struct harness *h, uint64_t a, uint64_t b)
{
	h_node(h, a);
	h_node(h, b);
	h->cut[a][b] = true;
	h->cut[b][a] = true;
}

void h_isolate(struct harness *h, uint64_t id)
{
	for (uint64_t o = 1; o <= H_MAX_ID; o++)
		if (o != id)
			h_cut(h, id, o);
}

void h_recover(struct harness *h)
{
	memset(h->cut, 0, sizeof h->cut);
}

/* ---- Time. ---------------------------------------------------------------- */

uint32_t h_election_ticks(struct harness *h, uint64_t id)
{
	struct h_node *n = h_node(h, id);
	if (n->opts.election_ticks)
		return n->opts.election_ticks;
	struct raft_config cfg;
	raft_config_init(&cfg);
	return cfg.election_ticks;
}

void h_tick(struct harness *h, uint64_t id, uint32_t count)
{
	struct h_node *n = running_node(h, id);
	for (uint32_t i = 0; i < count; i++) {
		raft_tick(n->r);
		check_node(h, n);
	}
}

void h_tick_election(struct harness *h, uint64_t id)
{
	h_tick(h, id, 2 * h_election_ticks(h, id));
}

void h_tick_heartbeat(struct harness *h, uint64_t id)
{
	struct h_node *n = h_node(h, id);
	uint32_t hb = n->opts.heartbeat_ticks;
	if (!hb) {
		struct raft_config cfg;
		raft_config_init(&cfg);
		hb = cfg.heartbeat_ticks;
	}
	h_tick(h, id, hb);
}

/* ---- The loop contract. --------------------------------------------------- */

static void render_update_head(struct harness *h, struct h_node *n)
{
	if (!emitting(h))
		return;
	const struct raft_update *u = &n->u;
	struct h_buf b = {0};
	h_buf_printf(&b, "> %" PRIu64 " ready %s leader=%" PRIu64 "\n", n->id,
		     h_state_name(u->state), u->leader);
	if (u->has_hard_state)
		h_buf_printf(&b, "  hard-state term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64 "\n",
			     u->hard_state.term, u->hard_state.vote, u->hard_state.commit);
	for (uint32_t i = 0; i < u->n_snapshot_chunks; i++) {
		const struct raft_snapshot_chunk *c = &u->snapshot_chunks[i];
		h_buf_printf(&b,
			     "  stage-chunk snap=%" PRIu64 "/%" PRIu64 " offset=%" PRIu64
			     " len=%" PRIu32 "\n",
			     c->term, c->index, c->offset, c->len);
	}
	if (u->snapshot) {
		h_buf_printf(&b, "  install-snapshot index=%" PRIu64 " term=%" PRIu64 " size=%" PRIu64 " ",
			     u->snapshot->index, u->snapshot->term, u->snapshot->size);
		h_render_conf(&b, &u->snapshot->conf);
		h_buf_printf(&b, "\n");
	}
	if (u->n_entries) {
		h_buf_printf(&b, "  entries:\n");
		for (uint32_t i = 0; i < u->n_entries; i++) {
			h_buf_printf(&b, "  ");
			h_render_entry(&b, &u->entries[i]);
			h_buf_printf(&b, "\n");
		}
	}
	if (u->n_msgs)
		h_buf_printf(&b, "  msgs:\n");
	emit_buf(h, &b);
	h_buf_free(&b);
}

bool h_ready_begin(struct harness *h, uint64_t id)
{
	struct h_node *n = running_node(h, id);
	H_CHECK(!n->pending, "node %" PRIu64 ": update already taken", id);
	if (!raft_has_update(n->r))
		return false;
	memset(&n->u, 0, sizeof n->u);
	int rc = raft_ready(n->r, &n->u);
	if (rc == RAFT_ENOMEM && h->tolerate_nomem) {
		h->n_nomem++;
		return false;
	}
	H_CHECK(rc == 0, "node %" PRIu64 ": raft_ready: %s", id, raft_strerror(rc));
	n->pending = true;
	render_update_head(h, n);
	/* Step 1: u.msgs go out at once. */
	for (uint32_t i = 0; i < n->u.n_msgs; i++) {
		H_CHECK(n->u.msgs[i].from == id, "node %" PRIu64 " sent a message from %" PRIu64,
			id, n->u.msgs[i].from);
		send_msg(h, &n->u.msgs[i]);
	}
	return true;
}

static void add_read(struct h_node *n, const struct raft_read_state *rs)
{
	if (n->n_reads == n->cap_reads) {
		n->cap_reads = n->cap_reads ? n->cap_reads * 2 : 16;
		n->reads = xrealloc(n->reads, n->cap_reads * sizeof *n->reads);
	}
	n->reads[n->n_reads].id = rs->id;
	n->reads[n->n_reads].index = rs->index;
	n->reads[n->n_reads].status = rs->status;
	n->n_reads++;
}

static void apply_entry(struct harness *h, struct h_node *n, const struct raft_entry *e)
{
	H_CHECK(e->index == n->applied + 1,
		"node %" PRIu64 ": applying index %" PRIu64 " after %" PRIu64, n->id, e->index,
		n->applied);
	check_committed(h, n, e);
	switch (e->type) {
	case RAFT_ENTRY_NORMAL:
		h_buf_printf(&n->sm, "%s%.*s", n->sm.len ? "," : "", (int)e->len,
			     e->data ? (const char *)e->data : "");
		n->n_applied_normal++;
		break;
	case RAFT_ENTRY_CONF_CHANGE: {
		/* An undecodable change (bad input replicated by a faulty
		 * leader) changes nothing; the core ignores it too. */
		struct raft_conf_change cc;
		if (raft_conf_change_decode(e->data, e->len, &cc) == 0)
			n->n_applied_conf++;
		else
			n->n_applied_bad_conf++;
		break;
	}
	default:
		break;
	}
	n->applied = e->index;
}

void h_ready_finish(struct harness *h, uint64_t id)
{
	struct h_node *n = running_node(h, id);
	H_CHECK(n->pending, "node %" PRIu64 ": no update taken", id);
	const struct raft_update *u = &n->u;
	struct h_buf b = {0};

	/* Step 2: persist, in the contract's order (the memstore does it). */
	int rc = raft_memstore_persist(n->ms, u);
	H_CHECK(rc == 0, "node %" PRIu64 ": persist: %s", id, raft_strerror(rc));
	if (u->snapshot) {
		/* The staged data became the state machine. */
		sm_load_snapshot(n);
		H_CHECK(n->applied == u->snapshot->index,
			"node %" PRIu64 ": installed snapshot %" PRIu64 " but store has %" PRIu64,
			id, u->snapshot->index, n->applied);
	}
	/* Step 3. */
	if (u->n_msgs_after_persist)
		emit(h, "  msgs-after-persist:\n");
	for (uint32_t i = 0; i < u->n_msgs_after_persist; i++) {
		H_CHECK(u->msgs_after_persist[i].from == id,
			"node %" PRIu64 " sent a message from %" PRIu64, id,
			u->msgs_after_persist[i].from);
		send_msg(h, &u->msgs_after_persist[i]);
	}
	/* Step 4. */
	if (u->n_committed && emitting(h)) {
		h_buf_printf(&b, "  committed:\n");
		for (uint32_t i = 0; i < u->n_committed; i++) {
			h_buf_printf(&b, "  ");
			h_render_entry(&b, &u->committed[i]);
			h_buf_printf(&b, "\n");
		}
		emit_buf(h, &b);
	}
	for (uint32_t i = 0; i < u->n_committed; i++)
		apply_entry(h, n, &u->committed[i]);
	/* Step 5: reads are released only once covered by what is applied. */
	if (u->n_reads)
		emit(h, "  reads:\n");
	for (uint32_t i = 0; i < u->n_reads; i++) {
		const struct raft_read_state *rs = &u->reads[i];
		emit(h, "  id=%" PRIu64 " index=%" PRIu64 " status=%s\n", rs->id, rs->index,
		     h_errname(rs->status));
		H_CHECK(rs->status != 0 || rs->index <= n->applied,
			"node %" PRIu64 ": read %" PRIu64 " released at index %" PRIu64
			" with only %" PRIu64 " applied",
			id, rs->id, rs->index, n->applied);
		add_read(n, rs);
	}
	h_buf_free(&b);
	/* Step 6. */
	n->pending = false;
	memset(&n->u, 0, sizeof n->u);
	raft_advance(n->r);
	check_node(h, n);
	struct raft_status st;
	raft_status(n->r, &st);
	H_CHECK(st.applied == n->applied,
		"node %" PRIu64 ": core says applied=%" PRIu64 ", state machine has %" PRIu64, id,
		st.applied, n->applied);
}

bool h_process_ready(struct harness *h, uint64_t id)
{
	if (!h_ready_begin(h, id))
		return false;
	h_ready_finish(h, id);
	return true;
}

void h_stabilize(struct harness *h)
{
	/* Under allocation failures a cluster may exchange messages forever
	 * without progress (e.g. a snapshot chunk that can never be staged is
	 * re-requested at once): there, give up quietly after a bound. */
	int bound = h->tolerate_nomem ? 500 : 10000;
	for (int round = 0; round < bound; round++) {
		bool progress = false;
		for (uint64_t id = 1; id <= H_MAX_ID; id++) {
			struct h_node *n = &h->nodes[id];
			if (!n->running)
				continue;
			if (n->pending) {
				h_ready_finish(h, id);
				progress = true;
			}
			while (h_process_ready(h, id))
				progress = true;
		}
		if (h->nq) {
			emit(h, "> delivering\n");
			h_deliver_all(h);
			progress = true;
		}
		if (!progress)
			return;
	}
	if (h->tolerate_nomem) {
		h->n_unstable++;
		h_drop(h, 0, 0, 0);
		return;
	}
	H_FATAL("cluster did not stabilize in %d rounds", bound);
}

/* ---- Helpers for tests. --------------------------------------------------- */

bool h_elect(struct harness *h, uint64_t id)
{
	int rc = raft_campaign(h_raft(h, id));
	H_CHECK(rc == 0, "node %" PRIu64 ": raft_campaign: %s", id, raft_strerror(rc));
	h_stabilize(h);
	return h_state(h, id) == RAFT_LEADER;
}

int h_propose(struct harness *h, uint64_t id, const char *s, uint64_t *index)
{
	return raft_propose(h_raft(h, id), s, strlen(s), index);
}

int h_compact(struct harness *h, uint64_t id, uint64_t keep)
{
	struct h_node *n = running_node(h, id);
	H_CHECK(!n->pending, "node %" PRIu64 ": compact inside an update", id);
	struct raft_status st;
	raft_status(n->r, &st);
	return raft_memstore_snapshot(n->ms, n->applied, &st.conf, n->sm.s, n->sm.len, keep);
}

const struct h_read *h_find_read(const struct harness *h, uint64_t id, uint64_t read_id)
{
	const struct h_node *n = &h->nodes[id];
	for (size_t i = 0; i < n->n_reads; i++)
		if (n->reads[i].id == read_id)
			return &n->reads[i];
	return NULL;
}
