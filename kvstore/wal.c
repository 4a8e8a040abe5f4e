/* wal.c: the Raft log's write-ahead log (format, recovery rules, ownership
 * and threads: kv_wal.h). Writes go through pwrite on the active segment and
 * one fdatasync per batch; reads come from a read-only shared mapping of each
 * segment and an in-memory index of entry metadata rebuilt at open.
 *
 * Locking: w->mu guards what readers look at (the entry index, first/last,
 * the snapshot marker and its conf blob, the hard state, the segment array
 * and its mappings, the published stats, the reader count and the retired
 * list). The one writer thread reads its own fields without the lock (no
 * other thread changes them) and takes it only to change them, never across
 * a write, fdatasync, preallocation or file creation. */
#define _DEFAULT_SOURCE /* flock */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv_wal.h"
#include "crc32c.h"
#include "kv_internal.h"

enum {
	REC_ENTRY = 1,
	REC_HARD_STATE = 2,
	REC_SNAPSHOT = 3,
	REC_TRUNCATE = 4,
};

#define REC_HDR 12u      /* crc, len, type */
#define ENTRY_HDR 20u    /* term, index, entry type */
#define HS_LEN 24u       /* term, vote, commit */
#define SNAP_HDR 20u     /* index, term, flags */
#define TRUNC_LEN 8u     /* index */
#define SNAP_KEEP_LOG 1u /* flags: entries after the index are kept */
#define REC_TYPE_MASK 0xffu
#define REC_BATCH_START 0x100u /* on the first record of each write */
#define REC_BATCH_END 0x200u   /* on the last record of each write */
#define REC_FLAGS (REC_BATCH_START | REC_BATCH_END)
#define ERRLEN 256

_Static_assert(KV_WAL_MIN_SEGMENT_BYTES > REC_HDR + ENTRY_HDR, "segment too small");
_Static_assert(KV_WAL_MAX_SEGMENT_BYTES <= UINT32_MAX, "offsets are u32");

struct seg {
	uint64_t seq;
	int fd;
	uint8_t *map; /* PROT_READ, MAP_SHARED; NULL if size 0 */
	uint64_t size;
	uint64_t max_index; /* largest entry index recorded here, 0 if none */
};

/* Where an entry lives; data is at segs[seq - segs[0].seq].map + off. */
struct meta {
	uint64_t term;
	uint64_t seq;
	uint32_t off;
	uint32_t len;
	uint32_t type;
};

/* A mapping or conf blob taken out of the index while readers may still
 * hold pointers into it: released once no read section is open. */
struct retired {
	void *p;
	size_t len; /* mapping length; 0 for a kv__malloc'ed blob */
};

struct kv_wal {
	pthread_mutex_t mu; /* see "Locking" above */
	char *dir;
	int dirfd;
	int lockfd;
	uint64_t seg_bytes;
	struct seg *segs; /* by seq, oldest first; the last one is written */
	size_t nsegs, capsegs;
	uint64_t wpos; /* end of the last whole record in the last segment */
	/* Entries first .. first+count-1 are ents[head .. head+count). */
	struct meta *ents;
	size_t head, count, cap;
	uint64_t first;
	struct kv_wal_hard_state hs;
	uint64_t hs_seq; /* segment holding the latest hard state, 0: none */
	uint64_t snap_index, snap_term, snap_seq;
	bool replay_keep; /* at open: the last marker replayed kept the log */
	uint8_t *snap_conf;
	uint32_t snap_conf_len;
	uint8_t *buf; /* records of the batch being written */
	size_t buf_cap;
	bool failed;
	struct kv_wal_stats stats; /* the writer's; readers see pub */
	struct kv_wal_stats pub;   /* under mu: stats as of the last write call */
	uint32_t readers;          /* under mu: open read sections */
	struct retired *ret;       /* under mu: released when readers is 0 */
	size_t nret, capret;
	char err[ERRLEN]; /* the writer's (kv_wal_last_error) */
};

/* ------------------------------------------------------------------------ */
/* Little helpers.                                                          */

/* Readers take const pointers; the mutex is the one mutable part. */
static void wal_lock(const struct kv_wal *w)
{
	int rv = pthread_mutex_lock((pthread_mutex_t *)&w->mu);
	assert(rv == 0);
	(void)rv;
}

static void wal_unlock(const struct kv_wal *w)
{
	int rv = pthread_mutex_unlock((pthread_mutex_t *)&w->mu);
	assert(rv == 0);
	(void)rv;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void wal_err(struct kv_wal *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wal_err(struct kv_wal *w, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->err, sizeof w->err, fmt, ap);
	va_end(ap);
}

static int errno_code(int e)
{
	if (e == ENOSPC || e == EDQUOT) {
		return KV_EDISKFULL;
	}
	if (e == ENOMEM) {
		return KV_ENOMEM;
	}
	return KV_EIO;
}

static void seg_name(char *out, size_t len, uint64_t seq, const char *ext)
{
	snprintf(out, len, "%016llx.%s", (unsigned long long)seq, ext);
}

static struct seg *seg_of(struct kv_wal *w, uint64_t seq)
{
	assert(w->nsegs > 0 && seq >= w->segs[0].seq && seq - w->segs[0].seq < w->nsegs);
	return &w->segs[seq - w->segs[0].seq];
}

static uint64_t wal_last(const struct kv_wal *w)
{
	return w->first + w->count - 1;
}

static bool all_zero(const uint8_t *p, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		if (p[i] != 0) {
			return false;
		}
	}
	return true;
}

static int full_pwrite(int fd, const uint8_t *p, size_t n, uint64_t off)
{
	while (n > 0) {
		ssize_t k = pwrite(fd, p, n, (off_t)off);
		if (k < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -1;
		}
		p += k;
		n -= (size_t)k;
		off += (uint64_t)k;
	}
	return 0;
}

/* Preallocate [0, size): blocks are reserved now, so later writes inside
 * the segment cannot meet ENOSPC. ftruncate where fallocate is unsupported. */
static int prealloc(int fd, uint64_t size)
{
	int e = posix_fallocate(fd, 0, (off_t)size);
	if (e == EINVAL || e == EOPNOTSUPP) {
		if (ftruncate(fd, (off_t)size) != 0) {
			return errno;
		}
		return 0;
	}
	return e;
}

/* ------------------------------------------------------------------------ */
/* The in-memory index.                                                     */

static int ents_reserve(struct kv_wal *w, size_t more)
{
	if (w->head + w->count + more <= w->cap) {
		return 0;
	}
	if (w->head > 0) {
		memmove(w->ents, w->ents + w->head, w->count * sizeof *w->ents);
		w->head = 0;
		if (w->count + more <= w->cap) {
			return 0;
		}
	}
	size_t cap = w->cap ? w->cap : 1024;
	while (cap < w->count + more) {
		cap *= 2;
	}
	struct meta *m = kv__realloc(w->ents, cap * sizeof *m);
	if (m == NULL) {
		return KV_ENOMEM;
	}
	w->ents = m;
	w->cap = cap;
	return 0;
}

/* Entries >= index are gone (index may be below first: all gone). */
static void ents_truncate(struct kv_wal *w, uint64_t index)
{
	if (w->count == 0) {
		return;
	}
	if (index <= w->first) {
		w->count = 0;
		w->head = 0;
		w->first = index;
	} else if (index <= wal_last(w)) {
		w->count = (size_t)(index - w->first);
	}
}

/* Apply a snapshot marker to the index (kv_wal.h, kv_wal_save_snapshot). */
static void ents_snapshot(struct kv_wal *w, uint64_t index, bool keep)
{
	if (keep && w->count > 0 && wal_last(w) >= index) {
		if (index >= w->first) {
			size_t drop = (size_t)(index - w->first + 1);
			w->head += drop;
			w->count -= drop;
			w->first = index + 1;
		}
		return;
	}
	w->count = 0;
	w->head = 0;
	w->first = index + 1;
}

static const struct meta *ent(const struct kv_wal *w, uint64_t i)
{
	assert(w->count > 0 && i >= w->first && i <= wal_last(w));
	return &w->ents[w->head + (size_t)(i - w->first)];
}

/* ------------------------------------------------------------------------ */
/* Retired mappings and blobs (kv_wal.h, THREADS).                          */

static int ret_reserve_locked(struct kv_wal *w, size_t more)
{
	if (w->nret + more <= w->capret) {
		return 0;
	}
	size_t cap = w->capret ? w->capret : 8;
	while (cap < w->nret + more) {
		cap *= 2;
	}
	struct retired *r = kv__realloc(w->ret, cap * sizeof *r);
	if (r == NULL) {
		return KV_ENOMEM;
	}
	w->ret = r;
	w->capret = cap;
	return 0;
}

static void ret_free(struct retired *r)
{
	if (r->len > 0) {
		munmap(r->p, r->len);
	} else {
		kv__free(r->p);
	}
}

/* Release everything retired if no read section is open. munmap of a
 * read-only mapping and free do no disk I/O, so this runs under mu. */
static void ret_collect_locked(struct kv_wal *w)
{
	if (w->readers > 0) {
		return;
	}
	for (size_t i = 0; i < w->nret; i++) {
		ret_free(&w->ret[i]);
	}
	w->nret = 0;
}

/* Take p out of readers' reach: released now if no read section is open,
 * else when the last one ends. Room was made with ret_reserve_locked(). */
static void ret_push_locked(struct kv_wal *w, void *p, size_t len)
{
	if (p == NULL) {
		return;
	}
	assert(w->nret < w->capret);
	w->ret[w->nret++] = (struct retired){ .p = p, .len = len };
	ret_collect_locked(w);
}

/* Make the writer's stats visible to kv_wal_stats(). */
static void publish(struct kv_wal *w)
{
	wal_lock(w);
	w->pub = w->stats;
	w->pub.tail_segment = w->nsegs > 0 ? w->segs[w->nsegs - 1].seq : 0;
	w->pub.tail_offset = w->wpos;
	wal_unlock(w);
}

static int set_snap_conf(struct kv_wal *w, const uint8_t *conf, uint32_t len)
{
	uint8_t *c = NULL;
	if (len > 0) {
		c = kv__malloc(len);
		if (c == NULL) {
			return KV_ENOMEM;
		}
		memcpy(c, conf, len);
	}
	kv__free(w->snap_conf);
	w->snap_conf = c;
	w->snap_conf_len = len;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Segments.                                                                */

static int segs_push(struct kv_wal *w, struct seg s)
{
	if (w->nsegs == w->capsegs) {
		size_t cap = w->capsegs ? 2 * w->capsegs : 16;
		struct seg *n = kv__realloc(w->segs, cap * sizeof *n);
		if (n == NULL) {
			return KV_ENOMEM;
		}
		w->segs = n;
		w->capsegs = cap;
	}
	w->segs[w->nsegs++] = s;
	return 0;
}

static void seg_close(struct seg *s)
{
	if (s->map != NULL) {
		munmap(s->map, (size_t)s->size);
		s->map = NULL;
	}
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
}

static int seg_map(struct kv_wal *w, struct seg *s)
{
	s->map = NULL;
	if (s->size == 0) {
		return 0;
	}
	void *p = mmap(NULL, (size_t)s->size, PROT_READ, MAP_SHARED, s->fd, 0);
	if (p == MAP_FAILED) {
		wal_err(w, "%s: mmap segment %016llx: %s", w->dir, (unsigned long long)s->seq,
			strerror(errno));
		return errno_code(errno);
	}
	s->map = p;
	return 0;
}

/* Create the next segment: <seq>.tmp, preallocated and synced, renamed to
 * <seq>.wal, directory synced. On failure nothing is left behind. */
static int seg_create(struct kv_wal *w)
{
	uint64_t seq = w->nsegs > 0 ? w->segs[w->nsegs - 1].seq + 1 : 1;
	char tmp[64], name[64];
	seg_name(tmp, sizeof tmp, seq, "tmp");
	seg_name(name, sizeof name, seq, "wal");
	struct seg s = { .seq = seq, .fd = -1, .size = w->seg_bytes };
	int rv;
	s.fd = openat(w->dirfd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (s.fd < 0) {
		rv = errno_code(errno);
		wal_err(w, "%s/%s: create: %s", w->dir, tmp, strerror(errno));
		return rv;
	}
	int e = prealloc(s.fd, s.size);
	if (e != 0) {
		rv = errno_code(e);
		wal_err(w, "%s/%s: preallocate %llu bytes: %s", w->dir, tmp,
			(unsigned long long)s.size, strerror(e));
		goto err_unlink;
	}
	if (fsync(s.fd) != 0) {
		rv = errno_code(errno);
		wal_err(w, "%s/%s: fsync: %s", w->dir, tmp, strerror(errno));
		goto err_unlink;
	}
	w->stats.fdatasyncs++;
	if (renameat(w->dirfd, tmp, w->dirfd, name) != 0) {
		rv = errno_code(errno);
		wal_err(w, "%s/%s: rename: %s", w->dir, tmp, strerror(errno));
		goto err_unlink;
	}
	if (fsync(w->dirfd) != 0) {
		rv = errno_code(errno);
		wal_err(w, "%s: fsync directory: %s", w->dir, strerror(errno));
		unlinkat(w->dirfd, name, 0);
		goto err_close;
	}
	rv = seg_map(w, &s);
	if (rv != 0) {
		unlinkat(w->dirfd, name, 0);
		goto err_close;
	}
	wal_lock(w);
	rv = segs_push(w, s);
	wal_unlock(w);
	if (rv != 0) {
		unlinkat(w->dirfd, name, 0);
		goto err_unmap;
	}
	w->wpos = 0;
	w->stats.segments_created++;
	return 0;

err_unmap:
	munmap(s.map, (size_t)s.size);
	goto err_close;
err_unlink:
	unlinkat(w->dirfd, tmp, 0);
err_close:
	close(s.fd);
	return rv;
}

/* ------------------------------------------------------------------------ */
/* Encoding.                                                                */

static int buf_reserve(struct kv_wal *w, size_t n)
{
	if (n <= w->buf_cap) {
		return 0;
	}
	size_t cap = w->buf_cap ? w->buf_cap : 64 * 1024;
	while (cap < n) {
		cap *= 2;
	}
	uint8_t *b = kv__realloc(w->buf, cap);
	if (b == NULL) {
		return KV_ENOMEM;
	}
	w->buf = b;
	w->buf_cap = cap;
	return 0;
}

/* Header of a record whose payload (len bytes) follows at p + REC_HDR. */
static void rec_seal(uint8_t *p, uint32_t type, uint32_t len)
{
	put32(p + 4, len);
	put32(p + 8, type);
	put32(p, cairn_crc32c(0, p + 4, (size_t)len + 8));
}

/* ------------------------------------------------------------------------ */
/* Writing a batch of records.                                              */

/* One record to write: a header and payload prefix encoded in hdr, then an
 * optional borrowed tail (entry data, conf blob). */
struct rec {
	uint32_t type;
	uint32_t fixed; /* bytes of payload in hdr */
	uint8_t hdr[REC_HDR + 24];
	const uint8_t *tail;
	uint32_t tail_len;
	uint64_t seq; /* out: segment written to */
	uint32_t off; /* out: offset of the record */
};

static uint64_t rec_size(const struct rec *r)
{
	return (uint64_t)REC_HDR + r->fixed + r->tail_len;
}

/* Write records [0, n) and sync. Rolls to a new segment before writing
 * anything if the batch does not fit in what is left but fits in a fresh
 * one (so ENOSPC from the roll leaves the WAL untouched); otherwise rolls
 * as records fill segments, syncing each finished one. Any failure after a
 * byte reached a file marks the WAL failed. */
static int write_recs(struct kv_wal *w, struct rec *r, size_t n)
{
	uint64_t total = 0;
	for (size_t i = 0; i < n; i++) {
		if (rec_size(&r[i]) > w->seg_bytes) {
			wal_err(w, "%s: record of %llu bytes does not fit a segment of %llu",
				w->dir, (unsigned long long)rec_size(&r[i]),
				(unsigned long long)w->seg_bytes);
			return KV_ETOOBIG;
		}
		total += rec_size(&r[i]);
	}
	struct seg *s = &w->segs[w->nsegs - 1];
	if (w->wpos + total > s->size && total <= w->seg_bytes) {
		int rv = seg_create(w);
		if (rv != 0) {
			return rv;
		}
	}
	size_t i = 0;
	int rv = 0;
	while (i < n) {
		s = &w->segs[w->nsegs - 1];
		/* Encode the records that fit in this segment, then write them at once. */
		size_t used = 0;
		uint64_t pos = w->wpos;
		size_t j = i;
		while (j < n && pos + rec_size(&r[j]) <= s->size) {
			size_t sz = (size_t)rec_size(&r[j]);
			rv = buf_reserve(w, used + sz);
			if (rv != 0) {
				goto failed;
			}
			uint8_t *p = w->buf + used;
			memcpy(p, r[j].hdr, REC_HDR + r[j].fixed);
			if (r[j].tail_len > 0) {
				memcpy(p + REC_HDR + r[j].fixed, r[j].tail, r[j].tail_len);
			}
			rec_seal(p,
				 r[j].type | (j == 0 ? REC_BATCH_START : 0) |
					 (j + 1 == n ? REC_BATCH_END : 0),
				 r[j].fixed + r[j].tail_len);
			r[j].seq = s->seq;
			r[j].off = (uint32_t)pos;
			used += sz;
			pos += sz;
			j++;
		}
		if (used > 0) {
			if (full_pwrite(s->fd, w->buf, used, w->wpos) != 0) {
				rv = errno_code(errno);
				wal_err(w, "%s/%016llx.wal: write at %llu: %s", w->dir,
					(unsigned long long)s->seq, (unsigned long long)w->wpos,
					strerror(errno));
				goto failed;
			}
			w->stats.bytes_written += used;
			if (fdatasync(s->fd) != 0) {
				rv = errno_code(errno);
				wal_err(w, "%s/%016llx.wal: fdatasync: %s", w->dir,
					(unsigned long long)s->seq, strerror(errno));
				goto failed;
			}
			w->stats.fdatasyncs++;
			w->wpos = pos;
		}
		i = j;
		if (i < n) {
			rv = seg_create(w);
			if (rv != 0) {
				goto failed;
			}
		}
	}
	return 0;

failed:
	/* Bytes of this batch may be in a file but its effect is not in memory:
	 * refuse further appends rather than write after them. Reopen recovers. */
	w->failed = true;
	return rv;
}

static void rec_entry(struct rec *r, const struct kv_wal_entry *e)
{
	memset(r, 0, sizeof *r);
	r->type = REC_ENTRY;
	r->fixed = ENTRY_HDR;
	put64(r->hdr + REC_HDR, e->term);
	put64(r->hdr + REC_HDR + 8, e->index);
	put32(r->hdr + REC_HDR + 16, e->type);
	r->tail = e->data;
	r->tail_len = e->len;
}

static void rec_hs(struct rec *r, const struct kv_wal_hard_state *hs)
{
	memset(r, 0, sizeof *r);
	r->type = REC_HARD_STATE;
	r->fixed = HS_LEN;
	put64(r->hdr + REC_HDR, hs->term);
	put64(r->hdr + REC_HDR + 8, hs->vote);
	put64(r->hdr + REC_HDR + 16, hs->commit);
}

static void rec_trunc(struct rec *r, uint64_t index)
{
	memset(r, 0, sizeof *r);
	r->type = REC_TRUNCATE;
	r->fixed = TRUNC_LEN;
	put64(r->hdr + REC_HDR, index);
}

static void rec_snap(struct rec *r, uint64_t index, uint64_t term, uint32_t flags,
		     const uint8_t *conf, uint32_t conf_len)
{
	memset(r, 0, sizeof *r);
	r->type = REC_SNAPSHOT;
	r->fixed = SNAP_HDR;
	put64(r->hdr + REC_HDR, index);
	put64(r->hdr + REC_HDR + 8, term);
	put32(r->hdr + REC_HDR + 16, flags);
	r->tail = conf;
	r->tail_len = conf_len;
}

/* ------------------------------------------------------------------------ */
/* Public: writes.                                                          */

static int wal_append(struct kv_wal *w, const struct kv_wal_entry *entries, size_t n,
		      const struct kv_wal_hard_state *hs)
{
	if (w->failed) {
		wal_err(w, "%s: an earlier write failed; reopen the WAL", w->dir);
		return KV_EIO;
	}
	if (n == 0 && hs == NULL) {
		return 0;
	}
	bool trunc = false;
	if (n > 0) {
		uint64_t i0 = entries[0].index;
		bool ok =
			w->count == 0 ? i0 == w->first : (i0 >= w->first && i0 <= wal_last(w) + 1);
		if (!ok) {
			wal_err(w, "%s: append at index %llu, log holds [%llu, %llu]", w->dir,
				(unsigned long long)i0, (unsigned long long)w->first,
				(unsigned long long)(w->first + w->count - 1));
			return KV_EINVAL;
		}
		for (size_t k = 0; k < n; k++) {
			if (entries[k].index != i0 + k ||
			    (entries[k].len > 0 && entries[k].data == NULL)) {
				wal_err(w, "%s: entry %zu of the batch: index %llu, expected %llu",
					w->dir, k, (unsigned long long)entries[k].index,
					(unsigned long long)(i0 + k));
				return KV_EINVAL;
			}
		}
		trunc = w->count > 0 && i0 <= wal_last(w);
	}
	size_t nrec = n + (trunc ? 1 : 0) + (hs != NULL ? 1 : 0);
	struct rec *r = kv__calloc(nrec, sizeof *r);
	if (r == NULL) {
		return KV_ENOMEM;
	}
	size_t k = 0;
	if (trunc) {
		rec_trunc(&r[k++], entries[0].index);
	}
	for (size_t i = 0; i < n; i++) {
		rec_entry(&r[k++], &entries[i]);
	}
	if (hs != NULL) {
		rec_hs(&r[k++], hs);
	}
	assert(k == nrec);
	wal_lock(w);
	int rv = ents_reserve(w, n);
	wal_unlock(w);
	if (rv == 0) {
		rv = write_recs(w, r, nrec);
	}
	if (rv != 0) {
		kv__free(r);
		return rv;
	}
	/* Synced: now the index follows (no allocation can fail from here), in
	 * one locked step, so readers see the whole batch or none of it. */
	wal_lock(w);
	k = 0;
	if (trunc) {
		ents_truncate(w, entries[0].index);
		k++;
	}
	for (size_t i = 0; i < n; i++, k++) {
		struct seg *s = seg_of(w, r[k].seq);
		if (w->count == 0) {
			w->head = 0;
			w->first = entries[i].index;
		}
		w->ents[w->head + w->count++] = (struct meta){
			.term = entries[i].term,
			.seq = r[k].seq,
			.off = r[k].off + REC_HDR + ENTRY_HDR,
			.len = entries[i].len,
			.type = entries[i].type,
		};
		if (entries[i].index > s->max_index) {
			s->max_index = entries[i].index;
		}
	}
	if (hs != NULL) {
		w->hs = *hs;
		w->hs_seq = r[k].seq;
	}
	wal_unlock(w);
	w->stats.appends++;
	w->stats.entries_written += n;
	kv__free(r);
	return 0;
}

int kv_wal_append(struct kv_wal *w, const struct kv_wal_entry *entries, size_t n,
		  const struct kv_wal_hard_state *hs)
{
	int rv = wal_append(w, entries, n, hs);
	publish(w);
	return rv;
}

static int wal_save_snapshot(struct kv_wal *w, const struct kv_wal_snapshot *snap)
{
	if (w->failed) {
		wal_err(w, "%s: an earlier write failed; reopen the WAL", w->dir);
		return KV_EIO;
	}
	/* Index 0 is accepted once, on a log that holds nothing yet: a base
	 * marker (e.g. a new cluster's founding configuration). */
	bool base = snap->index == 0 && w->snap_seq == 0 && w->count == 0 && w->first == 1;
	if ((snap->index <= w->snap_index && !base) || (snap->conf_len > 0 && snap->conf == NULL)) {
		wal_err(w, "%s: snapshot at %llu, current one at %llu", w->dir,
			(unsigned long long)snap->index, (unsigned long long)w->snap_index);
		return KV_EINVAL;
	}
	bool keep = w->count > 0 && snap->index >= w->first && snap->index <= wal_last(w) &&
		    ent(w, snap->index)->term == snap->term;
	struct rec r;
	rec_snap(&r, snap->index, snap->term, keep ? SNAP_KEEP_LOG : 0, snap->conf, snap->conf_len);
	uint8_t *conf = NULL;
	if (snap->conf_len > 0) {
		conf = kv__malloc(snap->conf_len);
		if (conf == NULL) {
			return KV_ENOMEM;
		}
		memcpy(conf, snap->conf, snap->conf_len);
	}
	/* Room to retire the old blob, made before anything is written. */
	wal_lock(w);
	int rv = ret_reserve_locked(w, 1);
	wal_unlock(w);
	if (rv == 0) {
		rv = write_recs(w, &r, 1);
	}
	if (rv != 0) {
		kv__free(conf);
		return rv;
	}
	wal_lock(w);
	ret_push_locked(w, w->snap_conf, 0);
	w->snap_conf = conf;
	w->snap_conf_len = snap->conf_len;
	ents_snapshot(w, snap->index, keep);
	w->snap_index = snap->index;
	w->snap_term = snap->term;
	wal_unlock(w);
	w->snap_seq = r.seq;
	return 0;
}

int kv_wal_save_snapshot(struct kv_wal *w, const struct kv_wal_snapshot *snap)
{
	int rv = wal_save_snapshot(w, snap);
	publish(w);
	return rv;
}

static int wal_compact(struct kv_wal *w, uint64_t index)
{
	if (index > w->snap_index) {
		wal_err(w, "%s: compact to %llu beyond the snapshot at %llu", w->dir,
			(unsigned long long)index, (unsigned long long)w->snap_index);
		return KV_EINVAL;
	}
	size_t del = 0;
	while (del + 1 < w->nsegs && w->segs[del].max_index <= index) {
		del++;
	}
	if (del == 0) {
		return 0;
	}
	uint64_t below = w->segs[del].seq; /* segments with seq < below go */
	if ((w->hs_seq != 0 && w->hs_seq < below) || (w->snap_seq != 0 && w->snap_seq < below)) {
		if (w->failed) {
			wal_err(w, "%s: an earlier write failed; reopen the WAL", w->dir);
			return KV_EIO;
		}
		/* Re-record them after everything that stays, in one synced write. */
		struct rec r[2];
		size_t nr = 0;
		if (w->snap_seq != 0) {
			rec_snap(&r[nr++], w->snap_index, w->snap_term, SNAP_KEEP_LOG, w->snap_conf,
				 w->snap_conf_len);
		}
		if (w->hs_seq != 0) {
			rec_hs(&r[nr++], &w->hs);
		}
		int rv = write_recs(w, r, nr);
		if (rv != 0) {
			return rv;
		}
		for (size_t i = 0; i < nr; i++) {
			if (r[i].type == REC_SNAPSHOT) {
				w->snap_seq = r[i].seq;
			} else {
				w->hs_seq = r[i].seq;
			}
		}
		/* A roll may have happened; segments to delete are still those below. */
	}
	size_t k = 0;
	while (k < w->nsegs && w->segs[k].seq < below) {
		k++;
	}
	/* No indexed entry lives in these segments (all their entries are at or
	 * below the snapshot), but a reader in a read section may still hold
	 * data from them: their mappings are retired, not unmapped at once. */
	wal_lock(w);
	int rv = ret_reserve_locked(w, k);
	if (rv == 0) {
		for (size_t i = 0; i < k; i++) {
			ret_push_locked(w, w->segs[i].map, (size_t)w->segs[i].size);
			w->segs[i].map = NULL;
		}
	}
	wal_unlock(w);
	if (rv != 0) {
		return rv;
	}
	/* Unlink oldest first, outside the lock. A segment that cannot be
	 * unlinked stays in the array (unmapped) with every later one, so the
	 * files on disk remain a run without gaps and a later call retries. */
	size_t done = 0;
	for (; done < k; done++) {
		struct seg *s = &w->segs[done];
		char name[64];
		seg_name(name, sizeof name, s->seq, "wal");
		seg_close(s);
		if (unlinkat(w->dirfd, name, 0) != 0) {
			rv = errno_code(errno);
			wal_err(w, "%s/%s: unlink: %s", w->dir, name, strerror(errno));
			break;
		}
		w->stats.segments_deleted++;
	}
	wal_lock(w);
	memmove(w->segs, w->segs + done, (w->nsegs - done) * sizeof *w->segs);
	w->nsegs -= done;
	wal_unlock(w);
	if (rv != 0) {
		return rv;
	}
	if (fsync(w->dirfd) != 0) {
		wal_err(w, "%s: fsync directory: %s", w->dir, strerror(errno));
		return errno_code(errno);
	}
	return 0;
}

int kv_wal_compact(struct kv_wal *w, uint64_t index)
{
	int rv = wal_compact(w, index);
	publish(w);
	return rv;
}

/* ------------------------------------------------------------------------ */
/* Public: reads.                                                           */

void kv_wal_read_begin(struct kv_wal *w)
{
	wal_lock(w);
	w->readers++;
	wal_unlock(w);
}

void kv_wal_read_end(struct kv_wal *w)
{
	wal_lock(w);
	assert(w->readers > 0);
	w->readers--;
	ret_collect_locked(w);
	wal_unlock(w);
}

int kv_wal_entries(struct kv_wal *w, uint64_t lo, uint64_t hi, uint64_t max_bytes,
		   struct kv_wal_entry *out, uint32_t *n)
{
	*n = 0;
	int rv = 0;
	wal_lock(w);
	if (lo < w->first) {
		rv = KV_ECOMPACTED;
	} else if (lo >= hi || w->count == 0 || hi - 1 > wal_last(w)) {
		rv = KV_EUNAVAILABLE;
	} else {
		uint64_t bytes = 0;
		uint32_t k = 0;
		for (uint64_t i = lo; i < hi; i++) {
			const struct meta *m = ent(w, i);
			if (k > 0 && bytes + m->len > max_bytes) {
				break;
			}
			const struct seg *s = seg_of(w, m->seq);
			out[k++] = (struct kv_wal_entry){
				.term = m->term,
				.index = i,
				.type = m->type,
				.len = m->len,
				.data = s->map + m->off,
			};
			bytes += m->len;
		}
		*n = k;
	}
	wal_unlock(w);
	return rv;
}

int kv_wal_term(const struct kv_wal *w, uint64_t i, uint64_t *term)
{
	*term = 0;
	int rv = 0;
	wal_lock(w);
	if (i == w->snap_index) {
		*term = w->snap_term;
	} else if (i < w->first) {
		rv = KV_ECOMPACTED;
	} else if (w->count == 0 || i > wal_last(w)) {
		rv = KV_EUNAVAILABLE;
	} else {
		*term = ent(w, i)->term;
	}
	wal_unlock(w);
	return rv;
}

uint64_t kv_wal_first_index(const struct kv_wal *w)
{
	wal_lock(w);
	uint64_t v = w->first;
	wal_unlock(w);
	return v;
}

uint64_t kv_wal_last_index(const struct kv_wal *w)
{
	wal_lock(w);
	uint64_t v = w->first + w->count - 1;
	wal_unlock(w);
	return v;
}

void kv_wal_bounds(const struct kv_wal *w, uint64_t *first, uint64_t *last)
{
	wal_lock(w);
	*first = w->first;
	*last = w->first + w->count - 1;
	wal_unlock(w);
}

void kv_wal_snapshot_get(const struct kv_wal *w, struct kv_wal_snapshot *snap)
{
	wal_lock(w);
	*snap = (struct kv_wal_snapshot){
		.index = w->snap_index,
		.term = w->snap_term,
		.conf_len = w->snap_conf_len,
		.conf = w->snap_conf,
	};
	wal_unlock(w);
}

void kv_wal_hard_state(const struct kv_wal *w, struct kv_wal_hard_state *hs)
{
	wal_lock(w);
	*hs = w->hs;
	wal_unlock(w);
}

void kv_wal_stats(const struct kv_wal *w, struct kv_wal_stats *st)
{
	wal_lock(w);
	*st = w->pub;
	wal_unlock(w);
}

const char *kv_wal_last_error(const struct kv_wal *w)
{
	return w->err;
}

/* ------------------------------------------------------------------------ */
/* Open and recovery.                                                       */

/* Apply one whole, CRC-checked record to the state. KV_ECORRUPT (message
 * set) if it is malformed or does not chain with what came before. */
static int replay(struct kv_wal *w, struct seg *s, uint64_t off, uint32_t type, const uint8_t *p,
		  uint32_t len)
{
	const char *why = NULL;
	switch (type) {
	case REC_ENTRY: {
		if (len < ENTRY_HDR) {
			why = "short entry record";
			break;
		}
		uint64_t term = get64(p), index = get64(p + 8);
		if (w->count == 0) {
			/* After a snapshot marker the log restarts right after it; before
			 * any (a compacted prefix), the first entry seen starts it. So
			 * does an entry after a marker that kept the log when this is
			 * the first entry replayed: the entries that followed that
			 * marker's index were written before it, in segments a later
			 * compaction deleted (a stale marker at the front of the oldest
			 * segment left). wal_load() checks that the log so rebuilt
			 * starts right after the latest marker. */
			bool stale = w->replay_keep && index > w->snap_index + 1;
			if (w->snap_index != 0 && index != w->snap_index + 1 && !stale) {
				why = "entry does not follow the snapshot";
				break;
			}
			w->head = 0;
			w->first = index;
		} else if (index != wal_last(w) + 1) {
			why = "entry index does not follow the previous one";
			break;
		}
		if (ents_reserve(w, 1) != 0) {
			return KV_ENOMEM;
		}
		w->ents[w->head + w->count++] = (struct meta){
			.term = term,
			.seq = s->seq,
			.off = (uint32_t)(off + REC_HDR + ENTRY_HDR),
			.len = len - ENTRY_HDR,
			.type = get32(p + 16),
		};
		if (index > s->max_index) {
			s->max_index = index;
		}
		return 0;
	}
	case REC_HARD_STATE:
		if (len != HS_LEN) {
			why = "bad hard state record";
			break;
		}
		w->hs = (struct kv_wal_hard_state){ get64(p), get64(p + 8), get64(p + 16) };
		w->hs_seq = s->seq;
		return 0;
	case REC_SNAPSHOT: {
		if (len < SNAP_HDR) {
			why = "short snapshot record";
			break;
		}
		uint64_t index = get64(p);
		if (index < w->snap_index) {
			why = "snapshot marker goes back";
			break;
		}
		if (set_snap_conf(w, p + SNAP_HDR, len - SNAP_HDR) != 0) {
			return KV_ENOMEM;
		}
		w->replay_keep = (get32(p + 16) & SNAP_KEEP_LOG) != 0;
		ents_snapshot(w, index, w->replay_keep);
		w->snap_index = index;
		w->snap_term = get64(p + 8);
		w->snap_seq = s->seq;
		return 0;
	}
	case REC_TRUNCATE:
		if (len != TRUNC_LEN) {
			why = "bad truncation record";
			break;
		}
		if (w->count > 0 && get64(p) <= w->snap_index) {
			why = "truncation below the snapshot";
			break;
		}
		ents_truncate(w, get64(p));
		return 0;
	default:
		why = "unknown record type";
		break;
	}
	wal_err(w, "%s/%016llx.wal: offset %llu: corrupt WAL: %s", w->dir,
		(unsigned long long)s->seq, (unsigned long long)off, why);
	return KV_ECORRUPT;
}

/* Cut the last segment at off: everything after becomes zeros again,
 * preallocated and synced. */
static int cut_tail(struct kv_wal *w, struct seg *s, uint64_t off)
{
	uint64_t end = s->size;
	while (end > off && s->map[end - 1] == 0) {
		end--;
	}
	w->stats.torn_bytes_cut = end - off;
	munmap(s->map, (size_t)s->size);
	s->map = NULL;
	int e = 0;
	if (ftruncate(s->fd, (off_t)off) != 0) {
		e = errno;
	} else {
		e = prealloc(s->fd, s->size);
	}
	if (e == 0 && fsync(s->fd) != 0) {
		e = errno;
	}
	if (e != 0) {
		wal_err(w, "%s/%016llx.wal: cut torn tail at %llu: %s", w->dir,
			(unsigned long long)s->seq, (unsigned long long)off, strerror(e));
		return errno_code(e);
	}
	w->stats.fdatasyncs++;
	return seg_map(w, s);
}

/* Is there a whole record that starts a batch at any offset >= from? Cost:
 * a few loads per byte of the rest of the segment, CRCs only on headers that
 * look right (type, flag, length); done only when a bad record is found. */
static bool later_batch(const struct seg *s, uint64_t from)
{
	for (uint64_t p = from; p + REC_HDR <= s->size; p++) {
		const uint8_t *h = s->map + p;
		uint32_t type = get32(h + 8);
		if ((type & REC_BATCH_START) == 0 || (type & ~(REC_TYPE_MASK | REC_FLAGS)) != 0 ||
		    (type & REC_TYPE_MASK) < REC_ENTRY || (type & REC_TYPE_MASK) > REC_TRUNCATE) {
			continue;
		}
		uint32_t len = get32(h + 4);
		if (len > s->size - p - REC_HDR) {
			continue;
		}
		if (cairn_crc32c(0, h + 4, (size_t)len + 8) == get32(h)) {
			return true;
		}
	}
	return false;
}

/* Check the records of s from its start, without applying them. *valid is
 * the end of the whole records before the first bad one (or of all of them),
 * *batch_end the end of the last record that closes a batch (0 if none).
 * Returns NULL if the segment ends cleanly (zeros), else why it does not. */
static const char *seg_check(const struct seg *s, uint64_t *valid, uint64_t *batch_end)
{
	uint64_t off = 0;
	const char *why = NULL;
	*batch_end = 0;
	while (off + REC_HDR <= s->size) {
		const uint8_t *h = s->map + off;
		uint32_t crc = get32(h), len = get32(h + 4), type = get32(h + 8);
		if (crc == 0 && len == 0 && type == 0) {
			if (!all_zero(h, s->size - off)) {
				why = "zero record header followed by data";
			}
			*valid = off;
			return why;
		}
		if (len > s->size - off - REC_HDR) {
			why = "record runs past the end of the segment";
			break;
		}
		if (cairn_crc32c(0, h + 4, (size_t)len + 8) != crc) {
			why = "CRC mismatch";
			break;
		}
		off += REC_HDR + len;
		if (type & REC_BATCH_END) {
			*batch_end = off;
		}
	}
	if (why == NULL && off < s->size && !all_zero(s->map + off, s->size - off)) {
		why = "record header cut by the end of the segment";
	}
	*valid = off;
	return why;
}

/* Replay segment s. In the last segment, a torn tail (kv_wal.h, RECOVERY)
 * is cut at the end of the last whole batch: a batch is all or nothing, so
 * a torn batch's truncation record goes with its entries. */
static int scan_seg(struct kv_wal *w, struct seg *s, bool last, uint64_t *end)
{
	uint64_t valid, batch_end;
	const char *why = seg_check(s, &valid, &batch_end);
	if (why != NULL && (!last || later_batch(s, valid + 1))) {
		wal_err(w, "%s/%016llx.wal: offset %llu: corrupt WAL: %s", w->dir,
			(unsigned long long)s->seq, (unsigned long long)valid, why);
		return KV_ECORRUPT;
	}
	/* Only the last segment may end inside a batch (one that spans segments
	 * continues in the next one). */
	uint64_t limit = last ? batch_end : valid;
	uint64_t off = 0;
	while (off < limit) {
		const uint8_t *h = s->map + off;
		uint32_t len = get32(h + 4), type = get32(h + 8);
		if ((type & ~(REC_TYPE_MASK | REC_FLAGS)) != 0) {
			wal_err(w, "%s/%016llx.wal: offset %llu: corrupt WAL: bad record type",
				w->dir, (unsigned long long)s->seq, (unsigned long long)off);
			return KV_ECORRUPT;
		}
		int rv = replay(w, s, off, type & REC_TYPE_MASK, h + REC_HDR, len);
		if (rv != 0) {
			return rv;
		}
		off += REC_HDR + len;
	}
	assert(off == limit);
	*end = limit;
	if (limit < s->size && !all_zero(s->map + limit, s->size - limit)) {
		return cut_tail(w, s, limit);
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Sorted seqs of <seq>.wal; <seq>.tmp leftovers of a crashed roll are removed. */
static int list_segs(struct kv_wal *w, uint64_t **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	DIR *d = opendir(w->dir);
	if (d == NULL) {
		wal_err(w, "%s: opendir: %s", w->dir, strerror(errno));
		return errno_code(errno);
	}
	uint64_t *v = NULL;
	size_t nv = 0, cap = 0;
	int rv = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *nm = de->d_name;
		size_t l = strlen(nm);
		if (l != 20 || nm[16] != '.' || strspn(nm, "0123456789abcdef") != 16) {
			continue;
		}
		if (strcmp(nm + 17, "tmp") == 0) {
			unlinkat(w->dirfd, nm, 0);
			continue;
		}
		if (strcmp(nm + 17, "wal") != 0) {
			continue;
		}
		if (nv == cap) {
			cap = cap ? 2 * cap : 16;
			uint64_t *nvv = kv__realloc(v, cap * sizeof *v);
			if (nvv == NULL) {
				rv = KV_ENOMEM;
				break;
			}
			v = nvv;
		}
		v[nv++] = strtoull(nm, NULL, 16);
	}
	closedir(d);
	if (rv != 0) {
		kv__free(v);
		return rv;
	}
	if (nv > 0) {
		qsort(v, nv, sizeof *v, cmp_u64);
	}
	for (size_t i = 1; i < nv; i++) {
		if (v[i] != v[i - 1] + 1) {
			wal_err(w, "%s: segment %016llx missing", w->dir,
				(unsigned long long)(v[i - 1] + 1));
			kv__free(v);
			return KV_ECORRUPT;
		}
	}
	*out = v;
	*n = nv;
	return 0;
}

static int wal_load(struct kv_wal *w)
{
	uint64_t *seqs;
	size_t n;
	int rv = list_segs(w, &seqs, &n);
	if (rv != 0) {
		return rv;
	}
	w->first = 1;
	for (size_t i = 0; i < n && rv == 0; i++) {
		char name[64];
		seg_name(name, sizeof name, seqs[i], "wal");
		struct seg s = { .seq = seqs[i], .fd = -1 };
		s.fd = openat(w->dirfd, name, O_RDWR | O_CLOEXEC);
		struct stat st;
		if (s.fd < 0 || fstat(s.fd, &st) != 0) {
			rv = errno_code(errno);
			wal_err(w, "%s/%s: open: %s", w->dir, name, strerror(errno));
			if (s.fd >= 0) {
				close(s.fd);
			}
			break;
		}
		s.size = (uint64_t)st.st_size;
		if (s.size > KV_WAL_MAX_SEGMENT_BYTES) {
			wal_err(w, "%s/%s: segment of %llu bytes is too large", w->dir, name,
				(unsigned long long)s.size);
			close(s.fd);
			rv = KV_ECORRUPT;
			break;
		}
		rv = seg_map(w, &s);
		if (rv != 0) {
			close(s.fd);
			break;
		}
		rv = segs_push(w, s);
		if (rv != 0) {
			seg_close(&s);
			break;
		}
		rv = scan_seg(w, &w->segs[w->nsegs - 1], i + 1 == n, &w->wpos);
	}
	kv__free(seqs);
	if (rv != 0) {
		return rv;
	}
	if (w->count == 0) {
		w->head = 0;
		w->first = w->snap_index + 1;
	} else if (w->first != w->snap_index + 1) {
		wal_err(w, "%s: log starts at %llu but the snapshot is at %llu: segments missing",
			w->dir, (unsigned long long)w->first, (unsigned long long)w->snap_index);
		return KV_ECORRUPT;
	}
	if (w->nsegs == 0) {
		return seg_create(w);
	}
	return 0;
}

int kv_wal_open(const char *dir, const struct kv_wal_options *opt, struct kv_wal **out,
		char *errmsg, size_t errlen)
{
	*out = NULL;
	if (errmsg != NULL && errlen > 0) {
		errmsg[0] = '\0';
	}
	uint64_t seg_bytes =
		opt != NULL && opt->segment_bytes ? opt->segment_bytes : KV_WAL_SEGMENT_BYTES;
	if (seg_bytes < KV_WAL_MIN_SEGMENT_BYTES || seg_bytes > KV_WAL_MAX_SEGMENT_BYTES) {
		if (errmsg != NULL) {
			snprintf(errmsg, errlen, "segment size %llu out of range",
				 (unsigned long long)seg_bytes);
		}
		return KV_EINVAL;
	}
	struct kv_wal *w = kv__calloc(1, sizeof *w);
	if (w == NULL) {
		return KV_ENOMEM;
	}
	if (pthread_mutex_init(&w->mu, NULL) != 0) {
		kv__free(w);
		return KV_ENOMEM;
	}
	w->dirfd = -1;
	w->lockfd = -1;
	w->seg_bytes = seg_bytes;
	int rv = KV_ENOMEM;
	w->dir = kv__strdup(dir);
	if (w->dir == NULL) {
		goto err;
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		rv = errno_code(errno);
		wal_err(w, "%s: mkdir: %s", dir, strerror(errno));
		goto err;
	}
	w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->dirfd < 0) {
		rv = errno_code(errno);
		wal_err(w, "%s: open: %s", dir, strerror(errno));
		goto err;
	}
	w->lockfd = openat(w->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (w->lockfd < 0) {
		rv = errno_code(errno);
		wal_err(w, "%s/LOCK: open: %s", dir, strerror(errno));
		goto err;
	}
	if (flock(w->lockfd, LOCK_EX | LOCK_NB) != 0) {
		rv = errno == EWOULDBLOCK ? KV_ELOCKED : errno_code(errno);
		wal_err(w, "%s/LOCK: %s", dir, strerror(errno));
		goto err;
	}
	rv = wal_load(w);
	if (rv != 0) {
		goto err;
	}
	publish(w);
	*out = w;
	return 0;
err:
	if (errmsg != NULL && errlen > 0) {
		snprintf(errmsg, errlen, "%s", w->err[0] ? w->err : kv_strerror(rv));
	}
	kv_wal_close(w);
	return rv;
}

void kv_wal_close(struct kv_wal *w)
{
	if (w == NULL) {
		return;
	}
	assert(w->readers == 0);
	for (size_t i = 0; i < w->nsegs; i++) {
		seg_close(&w->segs[i]);
	}
	for (size_t i = 0; i < w->nret; i++) {
		ret_free(&w->ret[i]);
	}
	kv__free(w->ret);
	kv__free(w->segs);
	kv__free(w->ents);
	kv__free(w->buf);
	kv__free(w->snap_conf);
	if (w->lockfd >= 0) {
		close(w->lockfd); /* releases the flock */
	}
	if (w->dirfd >= 0) {
		close(w->dirfd);
	}
	kv__free(w->dir);
	pthread_mutex_destroy(&w->mu);
	kv__free(w);
}
