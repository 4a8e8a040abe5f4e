/* memstore.c: the storage contract kept in memory. Tests, the simulator and
 * the benchmark use it; kvstore/ provides the durable implementation. The
 * memstore is the "disk": what was persisted into it survives a simulated
 * crash (raft_memstore_clone), what was not never reached it. */
#include "raft_int.h"

#include <string.h>

struct raft_memstore {
	const struct raft_heap *heap;
	struct raft_hard_state hs;
	/* entries [offset, offset + n); offset - 1 has term prev_term */
	struct raft_entry *ents;
	struct raft__block **blk; /* blk[i] holds ents[i].data (see log.c) */
	uint32_t n, cap, cap_blk;
	struct raft__block *cur;
	uint64_t offset;
	uint64_t prev_term;
	/* latest snapshot */
	struct raft_snapshot_meta snap;
	uint8_t *snap_data;
	/* snapshot being received */
	uint64_t stage_index, stage_term;
	uint8_t *stage;
	uint64_t stage_len, stage_cap;
};

int raft_memstore_new(const struct raft_heap *heap, struct raft_memstore **out)
{
	struct raft_memstore *ms = raft__malloc(heap, sizeof(*ms));
	if (ms == NULL) {
		return RAFT_ENOMEM;
	}
	memset(ms, 0, sizeof(*ms));
	ms->heap = heap;
	ms->offset = 1;
	*out = ms;
	return 0;
}

static void drop_entries(struct raft_memstore *ms, uint32_t from)
{
	for (uint32_t i = from; i < ms->n; i++) {
		raft__block_unref(ms->heap, ms->blk[i]);
	}
	ms->n = from;
}

void raft_memstore_free(struct raft_memstore *ms)
{
	if (ms == NULL) {
		return;
	}
	drop_entries(ms, 0);
	raft__block_unref(ms->heap, ms->cur);
	raft__free(ms->heap, ms->ents);
	raft__free(ms->heap, ms->blk);
	raft__free(ms->heap, ms->snap_data);
	raft__free(ms->heap, ms->stage);
	raft__free(ms->heap, ms);
}

static uint64_t ms_last(const struct raft_memstore *ms)
{
	return ms->offset + ms->n - 1;
}

static int st_initial_state(void *ctx, struct raft_hard_state *hs, struct raft_conf *conf)
{
	struct raft_memstore *ms = ctx;
	*hs = ms->hs;
	*conf = ms->snap.conf;
	return 0;
}

static int st_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_bytes,
		      struct raft_entry *out, uint32_t *n)
{
	struct raft_memstore *ms = ctx;
	*n = 0;
	if (lo < ms->offset) {
		return RAFT_ECOMPACTED;
	}
	if (hi > ms_last(ms) + 1 || lo >= hi) {
		return RAFT_EUNAVAILABLE;
	}
	uint64_t bytes = 0;
	uint32_t k = 0;
	for (uint64_t i = lo; i < hi; i++) {
		const struct raft_entry *e = &ms->ents[i - ms->offset];
		if (k > 0 && bytes + e->len > max_bytes) {
			break;
		}
		out[k++] = *e;
		bytes += e->len;
	}
	*n = k;
	return 0;
}

static int st_term(void *ctx, uint64_t i, uint64_t *term)
{
	struct raft_memstore *ms = ctx;
	*term = 0;
	if (i + 1 == ms->offset) {
		*term = ms->prev_term;
		return 0;
	}
	if (i < ms->offset) {
		return RAFT_ECOMPACTED;
	}
	if (i > ms_last(ms)) {
		return RAFT_EUNAVAILABLE;
	}
	*term = ms->ents[i - ms->offset].term;
	return 0;
}

static uint64_t st_first_index(void *ctx)
{
	struct raft_memstore *ms = ctx;
	return ms->offset;
}

static uint64_t st_last_index(void *ctx)
{
	return ms_last(ctx);
}

static int st_snapshot(void *ctx, struct raft_snapshot_meta *meta)
{
	struct raft_memstore *ms = ctx;
	*meta = ms->snap;
	return 0;
}

static int st_snapshot_read(void *ctx, uint64_t index, uint64_t offset, uint8_t *buf, uint32_t len,
			    uint32_t *n)
{
	struct raft_memstore *ms = ctx;
	*n = 0;
	if (index != ms->snap.index) {
		return RAFT_ESNAPOUTOFDATE;
	}
	if (offset > ms->snap.size) {
		return RAFT_EINVAL;
	}
	uint64_t left = ms->snap.size - offset;
	uint32_t k = left < len ? (uint32_t)left : len;
	if (k > 0) {
		memcpy(buf, ms->snap_data + offset, k);
	}
	*n = k;
	return 0;
}

struct raft_storage raft_memstore_storage(struct raft_memstore *ms)
{
	struct raft_storage st = {
		.ctx = ms,
		.initial_state = st_initial_state,
		.entries = st_entries,
		.term = st_term,
		.first_index = st_first_index,
		.last_index = st_last_index,
		.snapshot = st_snapshot,
		.snapshot_read = st_snapshot_read,
	};
	return st;
}

static int append(struct raft_memstore *ms, const struct raft_entry *ents, uint32_t n);

int raft_memstore_bootstrap(struct raft_memstore *ms, const struct raft_conf *conf)
{
	if (ms->n > 0 || ms->snap.index > 0 || ms->hs.term > 0 || conf->n == 0 ||
	    conf->n > RAFT_MAX_MEMBERS || raft_conf_voters(conf) == 0) {
		return RAFT_EINVAL;
	}
	uint8_t bufs[RAFT_MAX_MEMBERS][RAFT_CONF_CHANGE_HEADER];
	struct raft_entry ents[RAFT_MAX_MEMBERS];
	uint32_t n = 0;
	for (uint32_t pass = 0; pass < 2; pass++) {
		uint32_t role = pass == 0 ? RAFT_VOTER : RAFT_LEARNER;
		for (uint32_t i = 0; i < conf->n; i++) {
			if (conf->members[i].role != role) {
				continue;
			}
			struct raft_conf_change cc = {
				.type = role == RAFT_VOTER ? RAFT_CC_ADD_VOTER :
							     RAFT_CC_ADD_LEARNER,
				.id = conf->members[i].id,
			};
			int rv = raft_conf_change_encode(&cc, bufs[n], sizeof(bufs[n]));
			if (rv < 0) {
				return rv;
			}
			ents[n] = (struct raft_entry){ .term = 1,
						       .index = n + 1,
						       .type = RAFT_ENTRY_CONF_CHANGE,
						       .len = (uint32_t)rv,
						       .data = bufs[n] };
			n++;
		}
	}
	if (n != conf->n) {
		return RAFT_EINVAL; /* a member with an unknown role */
	}
	int rv = append(ms, ents, n);
	if (rv != 0) {
		drop_entries(ms, 0);
		return rv;
	}
	ms->hs.term = 1;
	ms->hs.commit = n;
	ms->snap.conf = *conf;
	return 0;
}

static int copy_bytes(const struct raft_heap *h, const uint8_t *src, uint64_t len, uint8_t **out)
{
	*out = NULL;
	if (len == 0) {
		return 0;
	}
	uint8_t *p = raft__malloc(h, (size_t)len);
	if (p == NULL) {
		return RAFT_ENOMEM;
	}
	memcpy(p, src, (size_t)len);
	*out = p;
	return 0;
}

static int stage_chunk(struct raft_memstore *ms, const struct raft_snapshot_chunk *c)
{
	if (c->offset == 0 || c->index != ms->stage_index || c->term != ms->stage_term) {
		if (c->offset != 0) {
			return RAFT_ECORRUPT;
		}
		ms->stage_index = c->index;
		ms->stage_term = c->term;
		ms->stage_len = 0;
	}
	if (c->offset > ms->stage_len) {
		return RAFT_ECORRUPT;
	}
	uint64_t need = c->offset + c->len;
	if (need > ms->stage_cap) {
		uint64_t ncap = ms->stage_cap ? ms->stage_cap : 256;
		while (ncap < need) {
			ncap *= 2;
		}
		uint8_t *p = raft__realloc(ms->heap, ms->stage, (size_t)ncap);
		if (p == NULL) {
			return RAFT_ENOMEM;
		}
		ms->stage = p;
		ms->stage_cap = ncap;
	}
	if (c->len > 0) {
		memcpy(ms->stage + c->offset, c->data, c->len);
	}
	ms->stage_len = need;
	return 0;
}

static int install(struct raft_memstore *ms, const struct raft_snapshot_meta *meta)
{
	if (meta->index != ms->stage_index || meta->term != ms->stage_term ||
	    meta->size != ms->stage_len) {
		return RAFT_ECORRUPT;
	}
	uint8_t *data;
	int rv = copy_bytes(ms->heap, ms->stage, ms->stage_len, &data);
	if (rv != 0) {
		return rv;
	}
	raft__free(ms->heap, ms->snap_data);
	ms->snap_data = data;
	ms->snap = *meta;
	drop_entries(ms, 0);
	ms->offset = meta->index + 1;
	ms->prev_term = meta->term;
	if (ms->hs.commit < meta->index) {
		ms->hs.commit = meta->index;
	}
	ms->stage_len = 0;
	return 0;
}

/* Copy one entry to the end (room for it already made). */
static int push_entry(struct raft_memstore *ms, struct raft_entry e)
{
	struct raft__block *b = NULL;
	if (e.len > 0) {
		uint8_t *d = raft__block_alloc(ms->heap, &ms->cur, e.len, &b);
		if (d == NULL) {
			return RAFT_ENOMEM;
		}
		memcpy(d, e.data, e.len);
		e.data = d;
	} else {
		e.data = NULL;
	}
	ms->ents[ms->n] = e;
	ms->blk[ms->n] = b;
	ms->n++;
	return 0;
}

static int reserve(struct raft_memstore *ms, uint32_t n)
{
	int rv = raft__grow(ms->heap, (void **)&ms->ents, &ms->cap, n, sizeof(*ms->ents));
	if (rv == 0) {
		rv = raft__grow(ms->heap, (void **)&ms->blk, &ms->cap_blk, n, sizeof(*ms->blk));
	}
	return rv;
}

static int append(struct raft_memstore *ms, const struct raft_entry *ents, uint32_t n)
{
	if (n == 0) {
		return 0;
	}
	uint64_t first = ents[0].index;
	if (first < ms->offset || first > ms_last(ms) + 1) {
		return RAFT_EINVAL;
	}
	drop_entries(ms, (uint32_t)(first - ms->offset));
	int rv = reserve(ms, ms->n + n);
	if (rv != 0) {
		return rv;
	}
	for (uint32_t i = 0; i < n; i++) {
		RAFT_ASSERT(ents[i].index == ms->offset + ms->n);
		rv = push_entry(ms, ents[i]);
		if (rv != 0) {
			return rv;
		}
	}
	return 0;
}

int raft_memstore_persist(struct raft_memstore *ms, const struct raft_update *u)
{
	int rv;
	for (uint32_t i = 0; i < u->n_snapshot_chunks; i++) {
		rv = stage_chunk(ms, &u->snapshot_chunks[i]);
		if (rv != 0) {
			return rv;
		}
	}
	if (u->snapshot != NULL) {
		rv = install(ms, u->snapshot);
		if (rv != 0) {
			return rv;
		}
	}
	rv = append(ms, u->entries, u->n_entries);
	if (rv != 0) {
		return rv;
	}
	if (u->has_hard_state) {
		ms->hs = u->hard_state;
	}
	return 0;
}

int raft_memstore_snapshot(struct raft_memstore *ms, uint64_t index, const struct raft_conf *conf,
			   const void *data, size_t len, uint64_t keep)
{
	if (index < ms->snap.index || index > ms_last(ms) || index + 1 < ms->offset) {
		return RAFT_EINVAL;
	}
	uint64_t term;
	int rv = st_term(ms, index, &term);
	if (rv != 0) {
		return rv;
	}
	uint8_t *copy;
	rv = copy_bytes(ms->heap, data, len, &copy);
	if (rv != 0) {
		return rv;
	}
	raft__free(ms->heap, ms->snap_data);
	ms->snap_data = copy;
	ms->snap.index = index;
	ms->snap.term = term;
	ms->snap.size = len;
	ms->snap.conf = *conf;
	/* compact: keep `keep` entries before the snapshot for slow followers */
	if (index > keep) {
		uint64_t upto = index - keep; /* drop entries <= upto */
		if (upto >= ms->offset) {
			uint32_t k = (uint32_t)(upto - ms->offset + 1);
			uint64_t t = ms->ents[k - 1].term;
			for (uint32_t i = 0; i < k; i++) {
				raft__block_unref(ms->heap, ms->blk[i]);
			}
			memmove(ms->ents, ms->ents + k, sizeof(*ms->ents) * (ms->n - k));
			memmove(ms->blk, ms->blk + k, sizeof(*ms->blk) * (ms->n - k));
			ms->n -= k;
			ms->offset = upto + 1;
			ms->prev_term = t;
		}
	}
	return 0;
}

int raft_memstore_snapshot_data(const struct raft_memstore *ms, struct raft_snapshot_meta *meta,
				const uint8_t **data)
{
	*meta = ms->snap;
	*data = ms->snap_data;
	return 0;
}

void raft_memstore_hard_state(const struct raft_memstore *ms, struct raft_hard_state *hs)
{
	*hs = ms->hs;
}

int raft_memstore_clone(const struct raft_memstore *ms, struct raft_memstore **out)
{
	struct raft_memstore *c;
	int rv = raft_memstore_new(ms->heap, &c);
	if (rv != 0) {
		return rv;
	}
	c->hs = ms->hs;
	c->offset = ms->offset;
	c->prev_term = ms->prev_term;
	c->snap = ms->snap;
	c->stage_index = ms->stage_index;
	c->stage_term = ms->stage_term;
	rv = copy_bytes(ms->heap, ms->snap_data, ms->snap.size, &c->snap_data);
	if (rv == 0) {
		rv = copy_bytes(ms->heap, ms->stage, ms->stage_len, &c->stage);
		c->stage_len = c->stage != NULL ? ms->stage_len : 0;
		c->stage_cap = c->stage_len;
	}
	if (rv == 0) {
		rv = reserve(c, ms->n);
	}
	for (uint32_t i = 0; rv == 0 && i < ms->n; i++) {
		rv = push_entry(c, ms->ents[i]);
	}
	if (rv != 0) {
		raft_memstore_free(c);
		return rv;
	}
	*out = c;
	return 0;
}
