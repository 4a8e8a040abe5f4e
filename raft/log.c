/* log.c: the Raft log as the core sees it: the caller's stable storage
 * followed by the unstable tail of entries not yet persisted (thesis §3.5;
 * the split follows etcd-io/raft's raftLog/unstable). */
#include "raft_int.h"

#include <string.h>

int raft__log_init(struct raft__log *l, const struct raft_storage *st, const struct raft_heap *h,
		   uint64_t applied)
{
	memset(l, 0, sizeof(*l));
	l->st = *st;
	l->heap = h;
	uint64_t first = st->first_index(st->ctx);
	uint64_t last = st->last_index(st->ctx);
	if (first == 0 || last + 1 < first) {
		return RAFT_ECORRUPT;
	}
	l->u.offset = last + 1;
	l->committed = first - 1;
	l->applied = first - 1;
	if (applied > l->applied) {
		l->applied = applied;
	}
	l->applying = l->applied;
	return 0;
}

static void free_entry_data(struct raft__log *l, uint32_t i)
{
	raft__block_unref(l->heap, l->u.blk[i]);
	l->u.blk[i] = NULL;
	l->u.ents[i].data = NULL;
}

void raft__log_close(struct raft__log *l)
{
	for (uint32_t i = 0; i < l->u.n; i++) {
		free_entry_data(l, i);
	}
	raft__block_unref(l->heap, l->u.cur);
	raft__free(l->heap, l->u.ents);
	raft__free(l->heap, l->u.blk);
	raft__log_free_garbage(l);
	raft__free(l->heap, l->garbage);
	memset(l, 0, sizeof(*l));
}

uint64_t raft__log_first_index(const struct raft__log *l)
{
	if (l->u.has_snapshot) {
		return l->u.snapshot.index + 1;
	}
	return l->st.first_index(l->st.ctx);
}

uint64_t raft__log_last_index(const struct raft__log *l)
{
	if (l->u.n > 0) {
		return l->u.offset + l->u.n - 1;
	}
	if (l->u.has_snapshot) {
		return l->u.snapshot.index;
	}
	return l->st.last_index(l->st.ctx);
}

int raft__log_term(const struct raft__log *l, uint64_t i, uint64_t *term)
{
	*term = 0;
	/* unstable first */
	if (i >= l->u.offset && i < l->u.offset + l->u.n) {
		*term = l->u.ents[i - l->u.offset].term;
		return 0;
	}
	if (l->u.has_snapshot) {
		if (i == l->u.snapshot.index) {
			*term = l->u.snapshot.term;
			return 0;
		}
		return i < l->u.snapshot.index ? RAFT_ECOMPACTED : RAFT_EUNAVAILABLE;
	}
	if (i > raft__log_last_index(l)) {
		return RAFT_EUNAVAILABLE;
	}
	uint64_t first = l->st.first_index(l->st.ctx);
	if (i + 1 < first) {
		return RAFT_ECOMPACTED;
	}
	return l->st.term(l->st.ctx, i, term);
}

uint64_t raft__log_term_or0(const struct raft__log *l, uint64_t i)
{
	uint64_t t;
	if (raft__log_term(l, i, &t) != 0) {
		return 0;
	}
	return t;
}

uint64_t raft__log_last_term(const struct raft__log *l)
{
	uint64_t t;
	int rv = raft__log_term(l, raft__log_last_index(l), &t);
	RAFT_ASSERT(rv == 0);
	return t;
}

bool raft__log_match_term(const struct raft__log *l, uint64_t i, uint64_t term)
{
	uint64_t t;
	if (raft__log_term(l, i, &t) != 0) {
		return false;
	}
	return t == term;
}

/* §3.6.1: compare last terms, then lengths. */
bool raft__log_up_to_date(const struct raft__log *l, uint64_t last_index, uint64_t last_term)
{
	uint64_t my_term = raft__log_last_term(l);
	return last_term > my_term ||
	       (last_term == my_term && last_index >= raft__log_last_index(l));
}

void raft__log_commit_to(struct raft__log *l, uint64_t index)
{
	if (index > l->committed) {
		RAFT_ASSERT(index <= raft__log_last_index(l));
		l->committed = index;
	}
}

void raft__log_free_garbage(struct raft__log *l)
{
	for (uint32_t i = 0; i < l->n_garbage; i++) {
		raft__block_unref(l->heap, l->garbage[i]);
	}
	l->n_garbage = 0;
}

/* Drop unstable entries from position pos on. Entries handed out for
 * persistence keep their data until the update is advanced. */
static int unstable_truncate(struct raft__log *l, uint32_t pos)
{
	struct raft__unstable *u = &l->u;
	/* reserve garbage room first so failure leaves the log untouched */
	uint32_t handed = u->in_progress > pos ? u->in_progress - pos : 0;
	int rv = raft__grow(l->heap, (void **)&l->garbage, &l->cap_garbage, l->n_garbage + handed,
			    sizeof(*l->garbage));
	if (rv != 0) {
		return rv;
	}
	for (uint32_t i = pos; i < u->n; i++) {
		if (i < u->in_progress && u->blk[i] != NULL) {
			l->garbage[l->n_garbage++] = u->blk[i];
			u->blk[i] = NULL;
			u->ents[i].data = NULL;
		} else {
			free_entry_data(l, i);
		}
	}
	u->n = pos;
	if (u->in_progress > pos) {
		u->in_progress = pos;
	}
	return 0;
}

/* Append copies of ents, which must start at last_index+1 or inside the
 * unstable/stable log (then the tail from there is replaced). */
static int truncate_and_append(struct raft__log *l, const struct raft_entry *ents, uint32_t n)
{
	struct raft__unstable *u = &l->u;
	if (n == 0) {
		return 0;
	}
	uint64_t after = ents[0].index; /* first index to write */
	int rv;
	if (after == u->offset + u->n) {
		/* plain append */
	} else if (after <= u->offset) {
		/* replace the whole unstable tail; the stable entries >= after
		 * are overwritten when the caller persists these */
		rv = unstable_truncate(l, 0);
		if (rv != 0) {
			return rv;
		}
		u->offset = after;
		u->in_progress = 0;
	} else {
		rv = unstable_truncate(l, (uint32_t)(after - u->offset));
		if (rv != 0) {
			return rv;
		}
	}
	rv = raft__grow(l->heap, (void **)&u->ents, &u->cap, u->n + n, sizeof(*u->ents));
	if (rv == 0) {
		rv = raft__grow(l->heap, (void **)&u->blk, &u->cap_blk, u->n + n, sizeof(*u->blk));
	}
	if (rv != 0) {
		return rv;
	}
	uint32_t start = u->n;
	for (uint32_t i = 0; i < n; i++) {
		struct raft_entry e = ents[i];
		struct raft__block *b = NULL;
		RAFT_ASSERT(e.index == u->offset + start + i);
		if (e.len > 0) {
			uint8_t *d = raft__block_alloc(l->heap, &u->cur, e.len, &b);
			if (d == NULL) {
				/* undo the part appended so far */
				for (uint32_t j = start; j < start + i; j++) {
					free_entry_data(l, j);
				}
				u->n = start;
				return RAFT_ENOMEM;
			}
			memcpy(d, e.data, e.len);
			e.data = d;
		} else {
			e.data = NULL;
		}
		u->ents[start + i] = e;
		u->blk[start + i] = b;
	}
	u->n = start + n;
	return 0;
}

int raft__log_append(struct raft__log *l, const struct raft_entry *ents, uint32_t n)
{
	if (n == 0) {
		return 0;
	}
	RAFT_ASSERT(ents[0].index == raft__log_last_index(l) + 1);
	return truncate_and_append(l, ents, n);
}

/* §3.5 AppendEntries receiver rules 3 and 4: skip entries already present,
 * delete from the first conflict on, append the rest. The caller has checked
 * that the entry before ents[0] matches. A conflict at or below the commit
 * index means the sender lies: RAFT_ECORRUPT, nothing changed. */
int raft__log_maybe_append(struct raft__log *l, const struct raft_entry *ents, uint32_t n)
{
	uint32_t k = 0;
	uint64_t last = raft__log_last_index(l);
	for (; k < n; k++) {
		const struct raft_entry *e = &ents[k];
		if (e->index > last) {
			break;
		}
		if (!raft__log_match_term(l, e->index, e->term)) {
			break;
		}
	}
	if (k == n) {
		return 0;
	}
	if (ents[k].index <= l->committed) {
		return RAFT_ECORRUPT;
	}
	return truncate_and_append(l, &ents[k], n - k);
}

/* §3.5, end: etcd's findConflictByTerm: the largest index <= index whose term
 * is <= term, so a leader skips a whole conflicting term in one round. */
void raft__log_find_conflict_by_term(const struct raft__log *l, uint64_t index, uint64_t term,
				     uint64_t *out_index, uint64_t *out_term)
{
	uint64_t last = raft__log_last_index(l);
	if (index > last) {
		index = last;
	}
	for (;;) {
		uint64_t t;
		if (raft__log_term(l, index, &t) != 0) {
			/* compacted: the snapshot index is the floor */
			*out_index = index;
			*out_term = 0;
			return;
		}
		if (t <= term || index == 0) {
			*out_index = index;
			*out_term = t;
			return;
		}
		index--;
	}
}

/* Entries one slice may return (its descriptor array is at most 512 KiB).
 * Only entries under 64 bytes can hit it with the default max_msg_bytes. */
#define RAFT__SLICE_MAX_ENTRIES 16384u
_Static_assert(RAFT__SLICE_MAX_ENTRIES <= UINT32_MAX / 2, "slice count fits in uint32_t");

int raft__log_slice(const struct raft__log *l, struct raft__arena *a, uint64_t lo, uint64_t hi,
		    uint64_t max_bytes, struct raft_entry **out, uint32_t *n)
{
	*out = NULL;
	*n = 0;
	if (lo >= hi) {
		return 0;
	}
	if (lo < raft__log_first_index(l)) {
		return RAFT_ECOMPACTED;
	}
	RAFT_ASSERT(hi <= raft__log_last_index(l) + 1);
	/* The descriptor array is allocated before max_bytes is applied, so
	 * the range is capped first: a leader far ahead of a follower slices
	 * once per APPEND of its window, and an array sized for the whole
	 * backlog each time (32 bytes an entry) reached gigabytes. Returning
	 * fewer entries is always valid for both callers. */
	uint64_t cnt = hi - lo;
	if (cnt > RAFT__SLICE_MAX_ENTRIES) {
		cnt = RAFT__SLICE_MAX_ENTRIES;
		hi = lo + cnt;
	}
	struct raft_entry *ents = raft__arena_alloc(a, sizeof(*ents) * cnt);
	if (ents == NULL) {
		return RAFT_ENOMEM;
	}
	uint32_t got = 0;
	uint64_t bytes = 0;
	/* stable part */
	if (lo < l->u.offset) {
		uint64_t shi = RAFT_MIN(hi, l->u.offset);
		uint32_t sn = 0;
		int rv = l->st.entries(l->st.ctx, lo, shi, max_bytes, ents, &sn);
		if (rv != 0) {
			return rv;
		}
		RAFT_ASSERT(sn >= 1 && sn <= shi - lo);
		for (uint32_t i = 0; i < sn; i++) {
			RAFT_ASSERT(ents[i].index == lo + i);
			bytes += ents[i].len;
		}
		got = sn;
		if (lo + sn < shi || bytes > max_bytes) {
			goto copy;
		}
	}
	for (uint64_t i = RAFT_MAX(lo, l->u.offset); i < hi; i++) {
		const struct raft_entry *e = &l->u.ents[i - l->u.offset];
		if (got > 0 && bytes + e->len > max_bytes) {
			break;
		}
		ents[got++] = *e;
		bytes += e->len;
	}
copy:
	for (uint32_t i = 0; i < got; i++) {
		if (ents[i].len > 0) {
			uint8_t *d = raft__arena_alloc(a, ents[i].len);
			if (d == NULL) {
				return RAFT_ENOMEM;
			}
			memcpy(d, ents[i].data, ents[i].len);
			ents[i].data = d;
		} else {
			ents[i].data = NULL;
		}
	}
	*out = ents;
	*n = got;
	return 0;
}

void raft__log_restore(struct raft__log *l, const struct raft_snapshot_meta *meta)
{
	int rv = unstable_truncate(l, 0);
	RAFT_ASSERT(rv == 0 || rv == RAFT_ENOMEM);
	if (rv != 0) {
		/* no room to defer releasing the handed-out entries: keep their
		 * blocks alive (a bounded leak until close beats freeing data
		 * the caller is still reading); the rest goes now */
		for (uint32_t i = l->u.in_progress; i < l->u.n; i++) {
			free_entry_data(l, i);
		}
		for (uint32_t i = 0; i < l->u.in_progress; i++) {
			l->u.blk[i] = NULL;
		}
		l->u.n = 0;
		l->u.in_progress = 0;
	}
	l->u.has_snapshot = true;
	l->u.snapshot_in_progress = false;
	l->u.snapshot = *meta;
	l->u.offset = meta->index + 1;
	l->committed = meta->index;
}

void raft__log_stable_to(struct raft__log *l, uint64_t index, uint64_t term)
{
	struct raft__unstable *u = &l->u;
	if (index < u->offset || index >= u->offset + u->n) {
		return;
	}
	if (u->ents[index - u->offset].term != term) {
		return; /* replaced meanwhile by a new leader's entries */
	}
	uint32_t k = (uint32_t)(index - u->offset + 1);
	RAFT_ASSERT(k <= u->in_progress);
	for (uint32_t i = 0; i < k; i++) {
		free_entry_data(l, i);
	}
	memmove(u->ents, u->ents + k, sizeof(*u->ents) * (u->n - k));
	memmove(u->blk, u->blk + k, sizeof(*u->blk) * (u->n - k));
	u->n -= k;
	u->in_progress -= k;
	u->offset = index + 1;
}
