/* mvcc.c: the MVCC store's environment, encodings, key index lookups and
 * write transactions (one per applied batch). Layout: kv_mvcc.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <openssl/evp.h>

#include "mvcc_internal.h"
#include "kv_internal.h"

_Static_assert(MVCC_REC_HDR == 1 + 8 + 8 + 8 + 4, "record header size");
_Static_assert(MVCC_IDX_MAX <= 511, "index key within LMDB's default key size");
_Static_assert(8 + MVCC_UKEY_MAX <= 511, "lease_key key within LMDB's default key size");
_Static_assert(MVCC_UKEY_LONG > MVCC_PREFIX, "the two index forms differ in length");
_Static_assert(KV_MAX_KEY <= UINT32_MAX - MVCC_REC_HDR, "key length fits the record's BE32");

void mvcc__be64_put(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)(v & 0xffu);
		v >>= 8;
	}
}

uint64_t mvcc__be64_get(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static uint32_t be32_get(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int mvcc__lmdb_err(int rc)
{
	switch (rc) {
	case 0:
		return 0;
	case MDB_MAP_FULL:
		return KV_ENOSPACE;
	case MDB_TXN_FULL:
		return KV_ETOOBIG;
	case MDB_NOTFOUND:
		return KV_ENOTFOUND;
	case ENOMEM:
		return KV_ENOMEM;
	case ENOSPC:
		return KV_EDISKFULL;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
		return KV_ECORRUPT;
	case EAGAIN:
	case EBUSY:
		return KV_ELOCKED;
	default:
		return KV_EIO;
	}
}

/* Go's bytes.Compare: lexicographic, a proper prefix sorts first. */
int mvcc__bytes_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	size_t n = al < bl ? al : bl;
	int c = n ? memcmp(a, b, n) : 0;
	if (c != 0)
		return c < 0 ? -1 : 1;
	return al < bl ? -1 : (al > bl ? 1 : 0);
}

/* Index keys: the index-form user key, then the 16-byte revision; user key
 * first. The comparator is plain bytes order on the index forms, which is
 * the order of the full keys except inside a group of long keys sharing
 * their first MVCC_PREFIX bytes (ordered by hash there; mvcc__scan sorts
 * such a group by full key):
 * - short vs short: the keys themselves;
 * - short S vs long L (prefix p): S is at most MVCC_PREFIX bytes, so the
 *   comparison ends inside p; a tie means S is a prefix of p, so of L,
 *   and S sorts first, as it does by full key;
 * - long vs long: the prefixes decide when they differ, as the full keys
 *   do; equal prefixes fall to the hash. */
static int idx_cmp(const MDB_val *a, const MDB_val *b)
{
	assert(a->mv_size >= MVCC_REV_LEN && b->mv_size >= MVCC_REV_LEN);
	size_t al = a->mv_size - MVCC_REV_LEN, bl = b->mv_size - MVCC_REV_LEN;
	const uint8_t *ap = a->mv_data, *bp = b->mv_data;
	int c = mvcc__bytes_cmp(ap, al, bp, bl);
	if (c != 0)
		return c;
	return memcmp(ap + al, bp + bl, MVCC_REV_LEN);
}

int mvcc__ukey(const uint8_t *key, size_t key_len, uint8_t *buf, size_t *ukey_len)
{
	assert(key_len >= 1 && key_len <= KV_MAX_KEY);
	if (key_len <= MVCC_PREFIX) {
		memcpy(buf, key, key_len);
		*ukey_len = key_len;
		return 0;
	}
	unsigned int n = 0;
	memcpy(buf, key, MVCC_PREFIX);
	/* EVP_Digest allocates its context: it fails only without memory */
	if (EVP_Digest(key, key_len, buf + MVCC_PREFIX, &n, EVP_sha256(), NULL) != 1)
		return KV_ENOMEM;
	assert(n == MVCC_HASH_LEN);
	*ukey_len = MVCC_UKEY_LONG;
	return 0;
}

size_t mvcc__idx_key(uint8_t *buf, const uint8_t *ukey, size_t ukey_len, uint64_t main,
		     uint64_t sub)
{
	assert(ukey_len <= MVCC_UKEY_MAX);
	if (ukey_len)
		memcpy(buf, ukey, ukey_len);
	mvcc__be64_put(buf + ukey_len, main);
	mvcc__be64_put(buf + ukey_len + 8, sub);
	return ukey_len + MVCC_REV_LEN;
}

int mvcc__check_key(const uint8_t *key, size_t key_len)
{
	if (key_len == 0)
		return KV_EEMPTYKEY;
	if (key_len > KV_MAX_KEY)
		return KV_ETOOBIG;
	(void)key;
	return 0;
}

int mvcc__meta_get(struct kv_store *s, MDB_txn *txn, const char *name, int64_t *out)
{
	MDB_val k = { strlen(name), (void *)name }, v;
	int rc = mdb_get(txn, s->meta_db, &k, &v);
	if (rc == MDB_NOTFOUND) {
		*out = 0;
		return 0;
	}
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	if (v.mv_size != 8)
		return KV_ECORRUPT;
	*out = (int64_t)mvcc__be64_get(v.mv_data);
	return 0;
}

int mvcc__meta_put(struct kv_store *s, MDB_txn *txn, const char *name, int64_t val)
{
	uint8_t buf[8];
	mvcc__be64_put(buf, (uint64_t)val);
	MDB_val k = { strlen(name), (void *)name }, v = { 8, buf };
	return mvcc__lmdb_err(mdb_put(txn, s->meta_db, &k, &v, 0));
}

int mvcc__rec_decode(const MDB_val *v, struct mvcc_rec *out)
{
	const uint8_t *p = v->mv_data;
	if (v->mv_size < MVCC_REC_HDR)
		return KV_ECORRUPT;
	out->flags = p[0];
	out->create = (int64_t)mvcc__be64_get(p + 1);
	out->version = (int64_t)mvcc__be64_get(p + 9);
	out->lease = (int64_t)mvcc__be64_get(p + 17);
	out->key_len = be32_get(p + 25);
	if (out->key_len > v->mv_size - MVCC_REC_HDR)
		return KV_ECORRUPT;
	out->key = p + MVCC_REC_HDR;
	out->value = out->key + out->key_len;
	out->value_len = v->mv_size - MVCC_REC_HDR - out->key_len;
	return 0;
}

int mvcc__rec_get(struct kv_store *s, MDB_txn *txn, int64_t main, int64_t sub, struct mvcc_rec *out)
{
	uint8_t rk[MVCC_REV_LEN];
	mvcc__be64_put(rk, (uint64_t)main);
	mvcc__be64_put(rk + 8, (uint64_t)sub);
	MDB_val k = { sizeof rk, rk }, v;
	int rc = mdb_get(txn, s->rev_db, &k, &v);
	if (rc == MDB_NOTFOUND)
		return KV_ECORRUPT; /* the index names a revision that is gone */
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	return mvcc__rec_decode(&v, out);
}

int mvcc__kv_from_rec(const struct mvcc_rec *rec, int64_t mod, bool keys_only, struct kv_kv *out)
{
	size_t vlen = keys_only ? 0 : rec->value_len;
	memset(out, 0, sizeof *out);
	uint8_t *buf = kv__malloc(rec->key_len + vlen + 1);
	if (buf == NULL)
		return KV_ENOMEM;
	memcpy(buf, rec->key, rec->key_len);
	if (vlen)
		memcpy(buf + rec->key_len, rec->value, vlen);
	out->key = buf;
	out->key_len = rec->key_len;
	out->value = keys_only ? NULL : buf + rec->key_len;
	out->value_len = vlen;
	out->create_revision = rec->create;
	out->mod_revision = mod;
	out->version = rec->version;
	out->lease = rec->lease;
	return 0;
}

void mvcc__kv_free(struct kv_kv *kv)
{
	kv__free(kv->key); /* the value lives in the same allocation */
	memset(kv, 0, sizeof *kv);
}

void mvcc__events_truncate(struct kv_events *ev, size_t n)
{
	assert(n <= ev->n);
	for (size_t i = n; i < ev->n; i++) {
		mvcc__kv_free(&ev->events[i].kv);
		mvcc__kv_free(&ev->events[i].prev_kv);
	}
	ev->n = n;
}

void kv_events_free(struct kv_events *ev)
{
	if (ev == NULL)
		return;
	mvcc__events_truncate(ev, 0);
	kv__free(ev->events);
	memset(ev, 0, sizeof *ev);
}

static int idx_entry(const MDB_val *k, const MDB_val *v, struct mvcc_ver *out)
{
	const uint8_t *p = (const uint8_t *)k->mv_data + k->mv_size - MVCC_REV_LEN;
	if (v->mv_size != 1)
		return KV_ECORRUPT;
	out->main = (int64_t)mvcc__be64_get(p);
	out->sub = (int64_t)mvcc__be64_get(p + 8);
	out->tombstone = (((const uint8_t *)v->mv_data)[0] & MVCC_TOMBSTONE) != 0;
	return 0;
}

/* With c anywhere, positions it on the latest entry <= rev of the key whose
 * index form is ukey. */
static int cursor_latest(MDB_cursor *c, const uint8_t *ukey, size_t ukey_len, int64_t rev,
			 struct mvcc_ver *out)
{
	uint8_t buf[MVCC_IDX_MAX];
	MDB_val k = { mvcc__idx_key(buf, ukey, ukey_len, (uint64_t)rev + 1, 0), buf }, v;
	int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if (rc == 0)
		rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
	else if (rc == MDB_NOTFOUND)
		rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == MDB_NOTFOUND)
		return KV_ENOTFOUND;
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	if (k.mv_size != ukey_len + MVCC_REV_LEN ||
	    (ukey_len && memcmp(k.mv_data, ukey, ukey_len) != 0))
		return KV_ENOTFOUND;
	int err = idx_entry(&k, &v, out);
	assert(err != 0 || out->main <= rev);
	return err;
}

int mvcc__lookup(struct kv_store *s, MDB_txn *txn, const uint8_t *key, size_t key_len, int64_t rev,
		 struct mvcc_ver *out)
{
	MDB_cursor *c;
	uint8_t ukey[MVCC_UKEY_MAX];
	size_t ukey_len;
	int err = mvcc__ukey(key, key_len, ukey, &ukey_len);
	if (err != 0)
		return err;
	int rc = mdb_cursor_open(txn, s->key_db, &c);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	err = cursor_latest(c, ukey, ukey_len, rev, out);
	mdb_cursor_close(c);
	if (err == 0 && mvcc__ukey_is_long(ukey_len)) {
		/* The index names the key by prefix and hash: the record says
		 * which key it is. Another key would be a SHA-256 collision (or a
		 * damaged store): refuse rather than answer for the wrong key. */
		struct mvcc_rec rec;
		err = mvcc__rec_get(s, txn, out->main, out->sub, &rec);
		if (err == 0 && mvcc__bytes_cmp(rec.key, rec.key_len, key, key_len) != 0)
			err = KV_ECORRUPT;
	}
	return err;
}

/* A key of a group of long keys sharing their prefix: its full key points
 * into LMDB memory (its record), valid while the scan runs, which writes
 * nothing. */
struct grp_item {
	const uint8_t *key;
	size_t key_len;
	struct mvcc_ver ver;
};

struct grp {
	struct grp_item *v;
	size_t n, cap;
};

static int grp_item_cmp(const void *a, const void *b)
{
	const struct grp_item *x = a, *y = b;
	return mvcc__bytes_cmp(x->key, x->key_len, y->key, y->key_len);
}

/* The bounds of a scan, on full keys. */
struct scan_span {
	const uint8_t *key, *end;
	size_t key_len, end_len;
	bool unbounded; /* end "\0": every key >= key */
};

static bool span_below_end(const struct scan_span *sp, const uint8_t *k, size_t kl)
{
	return sp->unbounded || mvcc__bytes_cmp(k, kl, sp->end, sp->end_len) < 0;
}

/* With c on the first index entry (k) of a group of long keys sharing the
 * prefix k[0, MVCC_PREFIX): gathers each key's latest live revision at rev
 * and its full key (from its record), sorts them by full key and calls cb for
 * those inside the span, in order. Leaves c, k and *rc on the first entry past
 * the group (*rc MDB_NOTFOUND at the end of the index).
 * Cost: one seek and one record read per distinct key of the group, and
 * memory for one grp_item per live key, whatever the span or the caller's
 * limit: the group's order by full key is known only once all are read. */
static int scan_group(struct kv_store *s, MDB_txn *txn, MDB_cursor *c, MDB_val *k,
		      const struct scan_span *sp, int64_t rev, struct grp *g, int *rc,
		      mvcc_scan_cb cb, void *ctx)
{
	uint8_t prefix[MVCC_PREFIX], cur[MVCC_UKEY_LONG], buf[MVCC_IDX_MAX];
	MDB_val v;
	int err = 0;
	assert(k->mv_size == MVCC_UKEY_LONG + MVCC_REV_LEN);
	memcpy(prefix, k->mv_data, MVCC_PREFIX);
	g->n = 0;
	for (;;) {
		struct mvcc_ver ver;
		memcpy(cur, k->mv_data, MVCC_UKEY_LONG);
		err = cursor_latest(c, cur, MVCC_UKEY_LONG, rev, &ver);
		if (err == 0 && !ver.tombstone) {
			struct mvcc_rec rec;
			if ((err = mvcc__rec_get(s, txn, ver.main, ver.sub, &rec)) != 0)
				return err;
			if (rec.key_len <= MVCC_PREFIX || memcmp(rec.key, prefix, MVCC_PREFIX) != 0)
				return KV_ECORRUPT; /* the record is not a key of the group */
			if (g->n == g->cap) {
				size_t cap = g->cap ? g->cap * 2 : 16;
				struct grp_item *nv = kv__realloc(g->v, cap * sizeof *nv);
				if (nv == NULL)
					return KV_ENOMEM;
				g->v = nv;
				g->cap = cap;
			}
			g->v[g->n++] = (struct grp_item){ rec.key, rec.key_len, ver };
		} else if (err != 0 && err != KV_ENOTFOUND) {
			return err;
		}
		k->mv_size = mvcc__idx_key(buf, cur, MVCC_UKEY_LONG, UINT64_MAX, UINT64_MAX);
		k->mv_data = buf;
		*rc = mdb_cursor_get(c, k, &v, MDB_SET_RANGE);
		if (*rc != 0)
			break;
		if (k->mv_size != MVCC_UKEY_LONG + MVCC_REV_LEN ||
		    memcmp(k->mv_data, prefix, MVCC_PREFIX) != 0)
			break; /* past the group */
	}
	if (*rc != 0 && *rc != MDB_NOTFOUND)
		return mvcc__lmdb_err(*rc);
	if (g->n > 1)
		qsort(g->v, g->n, sizeof *g->v, grp_item_cmp);
	for (size_t i = 0; i < g->n; i++) {
		const struct grp_item *it = &g->v[i];
		if (i > 0 && grp_item_cmp(&g->v[i - 1], it) == 0)
			return KV_ECORRUPT; /* two index forms name one key */
		if (mvcc__bytes_cmp(it->key, it->key_len, sp->key, sp->key_len) < 0)
			continue;
		if (!span_below_end(sp, it->key, it->key_len))
			break; /* sorted: the rest are past the end too */
		if ((err = cb(ctx, it->key, it->key_len, &it->ver)) != 0)
			return err;
	}
	return 0;
}

/* Walks the index in its order. A short key is its own index form, and
 * index order is key order between short keys and groups of long keys (see
 * idx_cmp), so a short entry at or past the end ends the scan, as does a
 * group whose prefix is (each of its keys starts with the prefix). The walk
 * starts at the first MVCC_PREFIX bytes of key, so that a long start key
 * finds the keys of its group that hash below it; what lies below key is
 * skipped by full key.
 * Cost: O(keys in range x log n) cursor seeks, whatever the history length,
 * plus what scan_group says for each group met. */
int mvcc__scan(struct kv_store *s, MDB_txn *txn, const uint8_t *key, size_t key_len,
	       const uint8_t *end, size_t end_len, int64_t rev, mvcc_scan_cb cb, void *ctx)
{
	struct scan_span sp = { key, end, key_len, end_len, end_len == 1 && end[0] == 0 };
	uint8_t cur[MVCC_UKEY_MAX];
	size_t cur_len;
	uint8_t buf[MVCC_IDX_MAX];
	struct grp g = { 0 };
	MDB_cursor *c;
	int err = 0;

	if (end_len == 0) {
		struct mvcc_ver ver;
		err = mvcc__lookup(s, txn, key, key_len, rev, &ver);
		if (err == KV_ENOTFOUND || (err == 0 && ver.tombstone))
			return 0;
		return err ? err : cb(ctx, key, key_len, &ver);
	}
	if (!sp.unbounded && mvcc__bytes_cmp(key, key_len, end, end_len) >= 0)
		return 0;
	int rc = mdb_cursor_open(txn, s->key_db, &c);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	size_t seek_len = key_len < MVCC_PREFIX ? key_len : MVCC_PREFIX;
	MDB_val k = { mvcc__idx_key(buf, key, seek_len, 0, 0), buf }, v;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	while (rc == 0) {
		if (k.mv_size < MVCC_REV_LEN || !mvcc__ukey_len_ok(k.mv_size - MVCC_REV_LEN)) {
			err = KV_ECORRUPT;
			break;
		}
		cur_len = k.mv_size - MVCC_REV_LEN;
		if (mvcc__ukey_is_long(cur_len)) {
			if (!span_below_end(&sp, k.mv_data, MVCC_PREFIX))
				break;
			err = scan_group(s, txn, c, &k, &sp, rev, &g, &rc, cb, ctx);
			if (err != 0)
				break;
			continue;
		}
		if (!span_below_end(&sp, k.mv_data, cur_len))
			break;
		memcpy(cur, k.mv_data, cur_len);
		if (mvcc__bytes_cmp(cur, cur_len, key, key_len) >= 0) {
			struct mvcc_ver ver;
			err = cursor_latest(c, cur, cur_len, rev, &ver);
			if (err == 0 && !ver.tombstone)
				err = cb(ctx, cur, cur_len, &ver);
			else if (err == KV_ENOTFOUND || err == 0)
				err = 0;
			if (err != 0)
				break;
		}
		k.mv_size = mvcc__idx_key(buf, cur, cur_len, UINT64_MAX, UINT64_MAX);
		k.mv_data = buf;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	}
	if (err == 0 && rc != 0 && rc != MDB_NOTFOUND)
		err = mvcc__lmdb_err(rc);
	mdb_cursor_close(c);
	kv__free(g.v);
	return err;
}

/* ---- Environment ------------------------------------------------------- */

/* The LMDB map is the quota plus headroom, so that deletes, compaction and
 * lease revocations still have room once the quota is passed: as much again
 * as the quota (at least 4 MiB). A delete of every key of a full store, in
 * one batch, needs a good part of it (its tombstones, and every page of the
 * index it touches copied); the map is address space, the file only grows
 * as pages are used. */
static size_t map_size(uint64_t quota)
{
	uint64_t head = quota > ((uint64_t)4 << 20) ? quota : ((uint64_t)4 << 20);
	return (size_t)(quota + head);
}

/* The pages in use (the file's high-water mark less the free pages), in
 * bytes. The free list is read only once the high-water mark is past the
 * quota. Cost: O(free-list records) then. */
static int used_pages(struct kv_store *s, bool always, uint64_t *out);

static int used_bytes(struct kv_store *s, uint64_t *out)
{
	return used_pages(s, false, out);
}

int kv_space(struct kv_store *s, bool exact, struct kv_space *out)
{
	MDB_envinfo info;
	MDB_stat st;
	memset(out, 0, sizeof *out);
	out->quota_bytes = s->quota;
	if (s->env == NULL)
		return KV_EIO; /* a failed snapshot install */
	int rc = mdb_env_info(s->env, &info);
	if (rc == 0)
		rc = mdb_env_stat(s->env, &st);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	out->file_bytes = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
	return used_pages(s, exact, &out->used_bytes);
}

/* always: the free list is read whatever the high-water mark (Status). */
static int used_pages(struct kv_store *s, bool always, uint64_t *out)
{
	MDB_envinfo info;
	MDB_stat st;
	int rc = mdb_env_info(s->env, &info);
	if (rc == 0)
		rc = mdb_env_stat(s->env, &st);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	uint64_t pages = (uint64_t)info.me_last_pgno + 1, psize = st.ms_psize;
	*out = pages * psize;
	if (*out <= s->quota && !always)
		return 0;
	MDB_txn *rtx;
	MDB_cursor *c;
	MDB_val k, v;
	uint64_t free_pages = 0;
	/* LMDB opens no cursor on its free DB in a write txn: a read txn */
	if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &rtx)) != 0)
		return mvcc__lmdb_err(rc);
	if ((rc = mdb_cursor_open(rtx, 0 /* LMDB's free-page DB */, &c)) != 0) {
		mdb_txn_abort(rtx);
		return mvcc__lmdb_err(rc);
	}
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		size_t n; /* an MDB_IDL: a count, then the page numbers */
		if (v.mv_size < sizeof n)
			continue;
		memcpy(&n, v.mv_data, sizeof n);
		free_pages += n;
	}
	mdb_cursor_close(c);
	mdb_txn_abort(rtx);
	if (rc != MDB_NOTFOUND)
		return mvcc__lmdb_err(rc);
	*out = (pages > free_pages ? pages - free_pages : 0) * psize;
	return 0;
}

uint64_t mvcc__change_bytes(size_t key_len, size_t value_len)
{
	/* a rev record and an index entry, each with LMDB's node header */
	return 2 * (uint64_t)key_len + value_len + MVCC_REC_HDR + 2 * MVCC_REV_LEN + 1 + 16;
}

/* etcd's NOSPACE: the pages in use when the batch began, plus what the
 * batch's writes may have added, plus `adding`, past the quota. */
int mvcc__quota_check(struct kv_wtx *w, uint64_t adding)
{
	if (!w->have_used) {
		int err = used_bytes(w->s, &w->used_bytes);
		if (err != 0)
			return mvcc__wtx_fail(w, err);
		w->have_used = true;
	}
	return w->used_bytes + w->grown + adding > w->s->quota ? KV_ENOSPACE : 0;
}

/* mdb_txn_commit's error. LMDB reports a write cut short by a full file
 * system as EIO (it writes pages with pwrite/writev and takes a short
 * count for an I/O error): when the file system has less room left than a
 * few pages, say so. */
int mvcc__commit_err(struct kv_store *s, int rc)
{
	int err = mvcc__lmdb_err(rc);
	int fd;
	struct statvfs sv;
	if (err == KV_EIO && mdb_env_get_fd(s->env, &fd) == 0 && fstatvfs(fd, &sv) == 0 &&
	    (uint64_t)sv.f_bavail * sv.f_frsize < ((uint64_t)1 << 20))
		err = KV_EDISKFULL;
	return err;
}

bool mvcc__store_err(int err)
{
	return err == KV_ENOMEM || err == KV_EIO || err == KV_ECORRUPT || err == KV_EDISKFULL;
}

int mvcc__wtx_fail(struct kv_wtx *w, int err)
{
	if (err != 0 && w->err == 0)
		w->err = err;
	return err;
}

/* The index layout of kv_mvcc.h, recorded in "meta" as "key_layout". A
 * store without it was written when keys of up to 495 bytes were stored
 * whole in the index: should it hold a key of 448..495 bytes, this layout
 * would take that entry for a long key's index form and answer wrongly for
 * it, so such a store is refused (KV_EINVAL: it must be rebuilt by this
 * version, from the log or a member's snapshot). Any other store gets the
 * mark. Cost: one walk of the index, once per store. */
#define KEY_LAYOUT 1

static int layout_check(struct kv_store *s, MDB_txn *txn)
{
	int64_t layout;
	MDB_cursor *c;
	MDB_val k, v;
	int err = mvcc__meta_get(s, txn, "key_layout", &layout);
	if (err != 0 || layout == KEY_LAYOUT)
		return err;
	if (layout != 0)
		return KV_EINVAL; /* a layout this version does not know */
	int rc = mdb_cursor_open(txn, s->key_db, &c);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
		if (k.mv_size > MVCC_PREFIX + MVCC_REV_LEN) {
			err = KV_EINVAL;
			break;
		}
	mdb_cursor_close(c);
	if (err == 0 && rc != MDB_NOTFOUND)
		err = mvcc__lmdb_err(rc);
	return err ? err : mvcc__meta_put(s, txn, "key_layout", KEY_LAYOUT);
}

/* Opens s->env on s->dir and its sub-databases. */
static int env_open(struct kv_store *s)
{
	MDB_txn *txn = NULL;
	int rc = mdb_env_create(&s->env);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	if ((rc = mdb_env_set_maxdbs(s->env, 16)) != 0 ||
	    (rc = mdb_env_set_mapsize(s->env, map_size(s->quota))) != 0)
		goto err_env;
	unsigned flags = MDB_NOTLS | MDB_NOMETASYNC | (s->no_sync ? MDB_NOSYNC : 0u);
	rc = mdb_env_open(s->env, s->dir, flags, 0600);
	if (rc != 0)
		goto err_env;
	if (mdb_env_get_maxkeysize(s->env) < MVCC_IDX_MAX) { /* an LMDB built otherwise */
		mdb_env_close(s->env);
		s->env = NULL;
		return KV_EINVAL;
	}
	rc = mdb_txn_begin(s->env, NULL, 0, &txn);
	if (rc != 0)
		goto err_env;
	if ((rc = mdb_dbi_open(txn, "rev", MDB_CREATE, &s->rev_db)) != 0 ||
	    (rc = mdb_dbi_open(txn, "key", MDB_CREATE, &s->key_db)) != 0 ||
	    (rc = mdb_set_compare(txn, s->key_db, idx_cmp)) != 0 ||
	    (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta_db)) != 0 ||
	    (rc = mdb_dbi_open(txn, "lease", MDB_CREATE, &s->lease_db)) != 0 ||
	    (rc = mdb_dbi_open(txn, "lease_key", MDB_CREATE, &s->lease_key_db)) != 0 ||
	    /* added later: a store made before them gets them empty here */
	    (rc = mdb_dbi_open(txn, "member", MDB_CREATE, &s->member_db)) != 0 ||
	    (rc = mdb_dbi_open(txn, "member_removed", MDB_CREATE, &s->removed_db)) != 0 ||
	    (rc = mdb_dbi_open(txn, "alarm", MDB_CREATE, &s->alarm_db)) != 0)
		goto err_txn;
	int64_t rev;
	int err = mvcc__meta_get(s, txn, "rev", &rev);
	if (err == 0 && rev == 0)
		err = mvcc__meta_put(s, txn, "rev", 1); /* an empty etcd is at revision 1 */
	if (err == 0)
		err = layout_check(s, txn);
	if (err != 0) {
		mdb_txn_abort(txn);
		mdb_env_close(s->env);
		s->env = NULL;
		return err;
	}
	rc = mdb_txn_commit(txn);
	if (rc != 0)
		goto err_env;
	return 0;

err_txn:
	mdb_txn_abort(txn);
err_env:
	mdb_env_close(s->env);
	s->env = NULL;
	return mvcc__lmdb_err(rc);
}

static char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + 1 + strlen(name) + 1;
	char *p = kv__malloc(n);
	if (p != NULL)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

/* A new store is made whole in <dir>/create.tmp, synced, then renamed into
 * place: LMDB writes a new file's meta pages without a sync, so a power loss
 * before the first sync could leave a data.mdb that never opens again,
 * though nothing was ever acknowledged. After this, data.mdb exists only
 * complete. A leftover create.tmp (a crash mid-way) is discarded. */
static int env_create(struct kv_store *s)
{
	char *dir = s->dir, *tmp = path_join(dir, "create.tmp");
	char *tmp_data = tmp ? path_join(tmp, "data.mdb") : NULL;
	char *tmp_lock = tmp ? path_join(tmp, "lock.mdb") : NULL;
	char *data = path_join(dir, "data.mdb");
	int err = tmp && tmp_data && tmp_lock && data ? 0 : KV_ENOMEM;
	if (err == 0) {
		(void)unlink(tmp_data);
		(void)unlink(tmp_lock);
		if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
			err = KV_EIO;
	}
	if (err == 0) {
		s->dir = tmp;
		err = env_open(s);
		s->dir = dir;
	}
	if (err == 0) {
		err = mvcc__lmdb_err(mdb_env_sync(s->env, 1));
		mdb_env_close(s->env);
		s->env = NULL;
	}
	if (err == 0 && rename(tmp_data, data) != 0)
		err = errno == ENOSPC ? KV_EDISKFULL : KV_EIO;
	if (err == 0)
		fsync_dir(dir);
	(void)unlink(tmp_lock);
	(void)rmdir(tmp);
	kv__free(tmp);
	kv__free(tmp_data);
	kv__free(tmp_lock);
	kv__free(data);
	return err;
}

int kv_open(const char *dir, const struct kv_options *opts, struct kv_store **out)
{
	*out = NULL;
	if (dir == NULL)
		return KV_EINVAL;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return KV_EIO;
	struct kv_store *s = kv__calloc(1, sizeof *s);
	if (s == NULL)
		return KV_ENOMEM;
	s->dir = kv__strdup(dir);
	if (s->dir == NULL || pthread_rwlock_init(&s->copy_lock, NULL) != 0) {
		kv__free(s->dir);
		kv__free(s);
		return KV_ENOMEM;
	}
	s->quota = opts && opts->quota_bytes ? opts->quota_bytes : KV_DEFAULT_QUOTA;
	s->no_sync = opts && opts->no_sync;
	struct stat st;
	char *data = path_join(dir, "data.mdb");
	int err = data == NULL ? KV_ENOMEM : 0;
	if (err == 0 && stat(data, &st) != 0)
		err = errno == ENOENT ? env_create(s) : KV_EIO;
	kv__free(data);
	if (err == 0)
		err = env_open(s);
	if (err != 0) {
		pthread_rwlock_destroy(&s->copy_lock);
		kv__free(s->dir);
		kv__free(s);
		return err;
	}
	*out = s;
	return 0;
}

/* ---- Snapshots ------------------------------------------------------------ */

int kv_reader_hold(struct kv_store *s)
{
	return pthread_rwlock_rdlock(&s->copy_lock) == 0 ? 0 : KV_EIO;
}

void kv_reader_release(struct kv_store *s)
{
	pthread_rwlock_unlock(&s->copy_lock);
}

int kv_snapshot_copy_fd(struct kv_store *s, int fd)
{
	if (kv_reader_hold(s) != 0)
		return KV_EIO;
	int err = s->env == NULL ? KV_EIO :
				   mvcc__lmdb_err(mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT));
	kv_reader_release(s);
	return err;
}

/* Checks that file is an LMDB environment with our sub-databases, without
 * writing to it (MDB_NOLOCK: no lock file beside it); *applied (if not NULL)
 * gets the Raft index it records as applied. */
static int snapshot_check(const char *file, uint64_t *applied)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi = 0;
	int rc = mdb_env_create(&env);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	int corrupt = 0;
	if ((rc = mdb_env_set_maxdbs(env, 8)) == 0 &&
	    (rc = mdb_env_open(env, file, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0600)) == 0 &&
	    (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) == 0) {
		const char *names[] = { "rev", "key", "lease", "lease_key", "meta" };
		for (size_t i = 0; rc == 0 && i < sizeof names / sizeof names[0]; i++)
			rc = mdb_dbi_open(txn, names[i], 0, &dbi);
		if (rc == 0 && applied != NULL) {
			/* dbi is "meta" */
			MDB_val k = { strlen("applied"), (void *)"applied" }, v;
			int grc = mdb_get(txn, dbi, &k, &v);
			*applied = 0;
			if (grc == 0 && v.mv_size == 8)
				*applied = mvcc__be64_get(v.mv_data);
			else if (grc != MDB_NOTFOUND)
				corrupt = 1;
		}
		mdb_txn_abort(txn);
	}
	mdb_env_close(env);
	if (rc == ENOENT)
		return KV_ENOTFOUND;
	return rc == 0 && !corrupt ? 0 : KV_ECORRUPT;
}

int kv_snapshot_file_applied(const char *file, uint64_t *applied)
{
	return snapshot_check(file, applied);
}

int kv_snapshot_install(struct kv_store *s, const char *file)
{
	char *path;
	if (s->wtx != NULL)
		return KV_EINVAL;
	int err = snapshot_check(file, NULL);
	if (err != 0)
		return err;
	size_t n = strlen(s->dir) + sizeof "/data.mdb";
	path = kv__malloc(n);
	if (path == NULL)
		return KV_ENOMEM;
	snprintf(path, n, "%s/data.mdb", s->dir);
	/* a copy running on another thread finishes first, and none starts
	 * until the new environment is open */
	if (pthread_rwlock_wrlock(&s->copy_lock) != 0) {
		kv__free(path);
		return KV_EIO;
	}
	mdb_env_close(s->env);
	s->env = NULL;
	/* rename is atomic: a crash leaves the old or the new file whole */
	if (rename(file, path) != 0) {
		kv__free(path);
		err = env_open(s); /* back to the old environment */
		pthread_rwlock_unlock(&s->copy_lock);
		return err ? err : KV_EIO;
	}
	kv__free(path);
	int dfd = open(s->dir, O_RDONLY);
	if (dfd >= 0) {
		if (!s->no_sync)
			(void)fsync(dfd);
		close(dfd);
	}
	err = env_open(s);
	pthread_rwlock_unlock(&s->copy_lock);
	return err;
}

void kv_close(struct kv_store *s)
{
	if (s == NULL)
		return;
	kv_txn_abort(s->wtx); /* an open batch is discarded */
	if (s->env != NULL)
		mdb_env_close(s->env);
	pthread_rwlock_destroy(&s->copy_lock);
	kv__free(s->dir);
	kv__free(s);
}

int kv_status(struct kv_store *s, struct kv_status *out)
{
	MDB_txn *txn;
	int64_t applied = 0;
	if (s->env == NULL)
		return KV_EIO; /* a failed snapshot install */
	int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	int err = mvcc__meta_get(s, txn, "rev", &out->revision);
	if (err == 0)
		err = mvcc__meta_get(s, txn, "compacted", &out->compacted);
	if (err == 0)
		err = mvcc__meta_get(s, txn, "applied", &applied);
	if (err == 0)
		err = mvcc__meta_get(s, txn, "compact_target", &out->compact_target);
	int64_t cid = 0, mid = 0;
	if (err == 0)
		err = mvcc__meta_get(s, txn, "cluster_id", &cid);
	if (err == 0)
		err = mvcc__meta_get(s, txn, "member_id", &mid);
	out->cluster_id = (uint64_t)cid;
	out->member_id = (uint64_t)mid;
	out->applied_index = (uint64_t)applied;
	mdb_txn_abort(txn);
	return err;
}

int kv_set_ids(struct kv_wtx *w, uint64_t cluster_id, uint64_t member_id)
{
	if (w->err != 0)
		return w->err;
	int err = mvcc__meta_put(w->s, w->txn, "cluster_id", (int64_t)cluster_id);
	if (err == 0)
		err = mvcc__meta_put(w->s, w->txn, "member_id", (int64_t)member_id);
	return mvcc__wtx_fail(w, err);
}

/* ---- Write transactions -------------------------------------------------- */

int kv_txn_begin_write(struct kv_store *s, struct kv_wtx **out)
{
	*out = NULL;
	if (s->wtx != NULL)
		return KV_EINVAL;
	if (s->env == NULL)
		return KV_EIO; /* a failed snapshot install */
	struct kv_wtx *w = kv__calloc(1, sizeof *w);
	if (w == NULL)
		return KV_ENOMEM;
	int rc = mdb_txn_begin(s->env, NULL, 0, &w->txn);
	if (rc != 0) {
		kv__free(w);
		return mvcc__lmdb_err(rc);
	}
	w->s = s;
	int err = mvcc__meta_get(s, w->txn, "rev", &w->rev);
	if (err == 0)
		err = mvcc__meta_get(s, w->txn, "compacted", &w->compacted);
	if (err != 0) {
		mdb_txn_abort(w->txn);
		kv__free(w);
		return err;
	}
	s->wtx = w;
	*out = w;
	return 0;
}

int kv_txn_failed(const struct kv_wtx *w)
{
	return w->err;
}

int kv_txn_commit(struct kv_wtx *w, uint64_t applied_index)
{
	return kv_txn_commit_events(w, applied_index, NULL);
}

int kv_txn_commit_events(struct kv_wtx *w, uint64_t applied_index, struct kv_events *out)
{
	struct kv_store *s = w->s;
	int err = w->err;
	if (err == 0)
		err = mvcc__meta_put(s, w->txn, "rev", w->rev);
	if (err == 0)
		err = mvcc__meta_put(s, w->txn, "applied", (int64_t)applied_index);
	if (err == 0)
		err = mvcc__commit_err(s, mdb_txn_commit(w->txn));
	else
		mdb_txn_abort(w->txn);
	if (err == 0 && out != NULL) {
		*out = w->ev;
		w->ev = (struct kv_events){ 0 };
	}
	kv_events_free(&w->ev);
	s->wtx = NULL;
	kv__free(w);
	return err;
}

void kv_txn_abort(struct kv_wtx *w)
{
	if (w == NULL)
		return;
	mdb_txn_abort(w->txn);
	kv_events_free(&w->ev);
	w->s->wtx = NULL;
	kv__free(w);
}

/* ---- Range ---------------------------------------------------------------- */

struct range_ctx {
	struct kv_store *s;
	MDB_txn *txn;
	const struct kv_range_req *req;
	struct kv_range_resp *resp;
	size_t fetch;   /* how many kvs to load; SIZE_MAX: all */
	bool keys_only; /* leave values out while loading */
	size_t cap;
};

static int range_cb(void *arg, const uint8_t *key, size_t key_len, const struct mvcc_ver *ver)
{
	struct range_ctx *c = arg;
	(void)key;
	(void)key_len;
	c->resp->count++;
	if (c->req->count_only || c->resp->n_kvs >= c->fetch)
		return 0;
	if (c->resp->n_kvs == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		struct kv_kv *kvs = kv__realloc(c->resp->kvs, cap * sizeof *kvs);
		if (kvs == NULL)
			return KV_ENOMEM;
		c->resp->kvs = kvs;
		c->cap = cap;
	}
	struct mvcc_rec rec;
	int err = mvcc__rec_get(c->s, c->txn, ver->main, ver->sub, &rec);
	if (err == 0)
		err = mvcc__kv_from_rec(&rec, ver->main, c->keys_only,
					&c->resp->kvs[c->resp->n_kvs]);
	if (err == 0)
		c->resp->n_kvs++;
	return err;
}

struct sort_key {
	enum kv_sort_target target;
	bool desc;
};

static int64_t sort_num(const struct sort_key *sk, const struct kv_kv *kv)
{
	switch (sk->target) {
	case KV_SORT_VERSION:
		return kv->version;
	case KV_SORT_CREATE:
		return kv->create_revision;
	case KV_SORT_MOD:
		return kv->mod_revision;
	default:
		return 0;
	}
}

static int sort_cmp(const struct sort_key *sk, const struct kv_kv *a, const struct kv_kv *b)
{
	int c;
	if (sk->target == KV_SORT_KEY) {
		c = mvcc__bytes_cmp(a->key, a->key_len, b->key, b->key_len);
	} else if (sk->target == KV_SORT_VALUE) {
		c = mvcc__bytes_cmp(a->value, a->value_len, b->value, b->value_len);
	} else {
		int64_t x = sort_num(sk, a), y = sort_num(sk, b);
		c = x < y ? -1 : (x > y ? 1 : 0);
	}
	return sk->desc ? -c : c;
}

/* Stable bottom-up merge sort (ties keep the scan's key order); no global
 * state, since reads may run on several threads. O(n log n), n extra. */
static int sort_kvs(struct kv_kv *v, size_t n, const struct sort_key *sk)
{
	struct kv_kv *tmp = kv__malloc(n * sizeof *tmp);
	if (tmp == NULL)
		return KV_ENOMEM;
	for (size_t w = 1; w < n; w *= 2) {
		for (size_t lo = 0; lo < n; lo += 2 * w) {
			size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
			size_t i = lo, j = mid, o = lo;
			while (i < mid && j < hi)
				tmp[o++] = sort_cmp(sk, &v[j], &v[i]) < 0 ? v[j++] : v[i++];
			while (i < mid)
				tmp[o++] = v[i++];
			while (j < hi)
				tmp[o++] = v[j++];
		}
		memcpy(v, tmp, n * sizeof *v);
	}
	kv__free(tmp);
	return 0;
}

static bool pruned(const struct kv_range_req *r, const struct kv_kv *kv)
{
	return (r->max_mod_revision && kv->mod_revision > r->max_mod_revision) ||
	       (r->min_mod_revision && kv->mod_revision < r->min_mod_revision) ||
	       (r->max_create_revision && kv->create_revision > r->max_create_revision) ||
	       (r->min_create_revision && kv->create_revision < r->min_create_revision);
}

int mvcc__range_check(const struct kv_range_req *req, int64_t max_rev, int64_t compacted)
{
	int err = mvcc__check_key(req->key, req->key_len);
	if (err != 0)
		return err;
	/* a negative limit means none, as in etcd */
	if ((unsigned)req->sort_order > KV_SORT_DESCEND ||
	    (unsigned)req->sort_target > KV_SORT_VALUE)
		return KV_EINVAL;
	if (req->revision > max_rev)
		return KV_EFUTUREREV;
	if (req->revision > 0 && req->revision < compacted)
		return KV_ECOMPACTED;
	return 0;
}

/* etcd's v3 server Range (apply.go) over mvcc's rangeKeys. */
int mvcc__range(struct kv_store *s, MDB_txn *txn, int64_t view, int64_t max_rev, int64_t compacted,
		const struct kv_range_req *req, struct kv_range_resp *resp)
{
	memset(resp, 0, sizeof *resp);
	int err = mvcc__range_check(req, max_rev, compacted);
	if (err != 0)
		return err;
	int64_t rev = req->revision > 0 ? req->revision : view;
	if (rev < compacted)
		return KV_ECOMPACTED;

	struct range_ctx c = { .s = s, .txn = txn, .req = req, .resp = resp, .fetch = SIZE_MAX };
	bool fetch_all = req->sort_order != KV_SORT_NONE || req->min_mod_revision ||
			 req->max_mod_revision || req->min_create_revision ||
			 req->max_create_revision;
	if (!fetch_all && req->limit > 0)
		c.fetch = (size_t)req->limit + 1;
	/* etcd sorts by value first and drops values after */
	c.keys_only = req->keys_only && req->sort_target != KV_SORT_VALUE;
	err = mvcc__scan(s, txn, req->key, req->key_len, req->range_end, req->range_end_len, rev,
			 range_cb, &c);
	if (err != 0) {
		kv_range_resp_free(resp);
		return err;
	}
	size_t n = 0;
	for (size_t i = 0; i < resp->n_kvs; i++) {
		if (pruned(req, &resp->kvs[i]))
			mvcc__kv_free(&resp->kvs[i]);
		else
			resp->kvs[n++] = resp->kvs[i];
	}
	resp->n_kvs = n;
	enum kv_sort_order order = req->sort_order;
	if (req->sort_target != KV_SORT_KEY && order == KV_SORT_NONE)
		order = KV_SORT_ASCEND;
	if (order != KV_SORT_NONE &&
	    !(req->sort_target == KV_SORT_KEY && order == KV_SORT_ASCEND) && n > 1) {
		struct sort_key sk = { req->sort_target, order == KV_SORT_DESCEND };
		err = sort_kvs(resp->kvs, n, &sk);
		if (err != 0) {
			kv_range_resp_free(resp);
			return err;
		}
	}
	if (req->limit > 0 && n > (size_t)req->limit) {
		for (size_t i = (size_t)req->limit; i < n; i++)
			mvcc__kv_free(&resp->kvs[i]);
		resp->n_kvs = (size_t)req->limit;
		resp->more = true;
	}
	for (size_t i = 0; req->keys_only && i < resp->n_kvs; i++) {
		resp->kvs[i].value = NULL;
		resp->kvs[i].value_len = 0;
	}
	resp->revision = view;
	return 0;
}

int kv_range(struct kv_store *s, const struct kv_range_req *req, struct kv_range_resp *resp)
{
	MDB_txn *txn;
	int64_t rev, compacted;
	memset(resp, 0, sizeof *resp);
	if (s->env == NULL)
		return KV_EIO; /* a failed snapshot install */
	int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	int err = mvcc__meta_get(s, txn, "rev", &rev);
	if (err == 0)
		err = mvcc__meta_get(s, txn, "compacted", &compacted);
	if (err == 0)
		err = mvcc__range(s, txn, rev, rev, compacted, req, resp);
	mdb_txn_abort(txn);
	return err;
}

void kv_range_resp_free(struct kv_range_resp *resp)
{
	if (resp == NULL)
		return;
	for (size_t i = 0; i < resp->n_kvs; i++)
		mvcc__kv_free(&resp->kvs[i]);
	kv__free(resp->kvs);
	memset(resp, 0, sizeof *resp);
}
