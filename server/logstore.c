/* logstore.c: struct raft_storage over the WAL plus the snapshot files
 * beside it (layout, threads, ownership: logstore.h). The WAL does the
 * locking of the log itself; ls->mu guards only the held snapshot's
 * metadata, which the storage thread changes and the loop thread reads. */
#include "logstore.h"

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
#include <sys/stat.h>
#include <unistd.h>

#include "kv_wal.h"

#define ERRLEN 512
#define SNAP_NAME_LEN 48 /* "<16 hex>-<16 hex>.snap.tmp" (42) and a NUL */
#define CONF_VERSION 1u
#define CONF_HDR 16u
#define CONF_MEMBER 12u
#define INITIAL_BATCH 64u

_Static_assert(LOGSTORE_CONF_MAX == CONF_HDR + CONF_MEMBER * RAFT_MAX_MEMBERS, "conf blob bound");
_Static_assert(sizeof(struct kv_wal_hard_state) == sizeof(struct raft_hard_state),
	       "hard states mirror each other");

struct logstore {
	char *dir;
	char *snap_dir;
	int snap_dirfd;
	struct kv_wal *wal;
	uint64_t applied; /* set before the core starts */

	pthread_mutex_t mu;             /* guards snap and wanted */
	struct raft_snapshot_meta snap; /* held snapshot; index 0: none (conf: founding);
					 * size LOGSTORE_NO_FILE: a mark, no file */
	bool wanted;                    /* the core asked for a mark's data */

	/* The reader's (loop thread): the read section of the last entries call. */
	bool holding;
	struct kv_wal_entry *rbuf;
	size_t rcap;

	/* The writer's (storage thread). */
	struct kv_wal_entry *wbuf;
	size_t wcap;
	int stage_fd; /* snapshot being received, -1 if none */
	uint64_t stage_index, stage_term, stage_len;
	char err[ERRLEN];
};

/* ------------------------------------------------------------------------ */
/* Small functions.                                                         */

static void ls_err(struct logstore *ls, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ls_err(struct logstore *ls, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ls->err, sizeof ls->err, fmt, ap);
	va_end(ap);
}

static int kv_to_raft(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case KV_ECOMPACTED:
		return RAFT_ECOMPACTED;
	case KV_EUNAVAILABLE:
		return RAFT_EUNAVAILABLE;
	case KV_ENOMEM:
		return RAFT_ENOMEM;
	case KV_EINVAL:
		return RAFT_EINVAL;
	case KV_ECORRUPT:
		return RAFT_ECORRUPT;
	case KV_ETOOBIG:
		return RAFT_ETOOBIG;
	default:
		return RAFT_EIO;
	}
}

/* A failed WAL write: keep its message, return the RAFT_* code. */
static int wal_fail(struct logstore *ls, const char *what, int kv)
{
	ls_err(ls, "%s: %s (%s)", what, kv_wal_last_error(ls->wal), kv_strerror(kv));
	return kv_to_raft(kv);
}

static void snap_name(char *buf, size_t len, uint64_t index, uint64_t term, bool tmp)
{
	snprintf(buf, len, "%016llx-%016llx.snap%s", (unsigned long long)index,
		 (unsigned long long)term, tmp ? ".tmp" : "");
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

static bool conf_ok(const struct raft_conf *c)
{
	if (c->n == 0 || c->n > RAFT_MAX_MEMBERS) {
		return false;
	}
	for (uint32_t i = 0; i < c->n; i++) {
		if (c->members[i].id == 0 ||
		    (c->members[i].role != RAFT_VOTER && c->members[i].role != RAFT_LEARNER)) {
			return false;
		}
		for (uint32_t j = 0; j < i; j++) {
			if (c->members[j].id == c->members[i].id) {
				return false;
			}
		}
	}
	return raft_conf_voters(c) > 0;
}

/* ------------------------------------------------------------------------ */
/* The conf blob.                                                           */

int logstore_conf_encode(const struct raft_conf *conf, uint64_t size, uint8_t *buf, size_t cap)
{
	if (conf == NULL || !conf_ok(conf)) {
		return RAFT_EINVAL;
	}
	size_t need = CONF_HDR + (size_t)CONF_MEMBER * conf->n;
	if (buf == NULL || cap < need) {
		return RAFT_EINVAL;
	}
	put32(buf, CONF_VERSION);
	put32(buf + 4, conf->n);
	put64(buf + 8, size);
	for (uint32_t i = 0; i < conf->n; i++) {
		uint8_t *p = buf + CONF_HDR + (size_t)CONF_MEMBER * i;
		put64(p, conf->members[i].id);
		put32(p + 8, conf->members[i].role);
	}
	return (int)need;
}

int logstore_conf_decode(const uint8_t *buf, size_t len, struct raft_conf *conf, uint64_t *size)
{
	if (buf == NULL || len < CONF_HDR || get32(buf) != CONF_VERSION) {
		return RAFT_ECORRUPT;
	}
	uint32_t n = get32(buf + 4);
	if (n == 0 || n > RAFT_MAX_MEMBERS || len != CONF_HDR + (size_t)CONF_MEMBER * n) {
		return RAFT_ECORRUPT;
	}
	struct raft_conf c;
	memset(&c, 0, sizeof c);
	c.n = n;
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *p = buf + CONF_HDR + (size_t)CONF_MEMBER * i;
		c.members[i].id = get64(p);
		c.members[i].role = get32(p + 8);
	}
	if (!conf_ok(&c)) {
		return RAFT_ECORRUPT;
	}
	*conf = c;
	*size = get64(buf + 8);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Snapshot files.                                                          */

/* Delete every file of snap/ but `keep` and `keep2` (either may be NULL). */
static void snap_dir_clean(struct logstore *ls, const char *keep, const char *keep2)
{
	int fd = dup(ls->snap_dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (d == NULL) {
		if (fd >= 0) {
			close(fd);
		}
		return;
	}
	rewinddir(d); /* the dup shares the offset an earlier listing left at the end */
	bool removed = false;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *nm = de->d_name;
		if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0 ||
		    (keep != NULL && strcmp(nm, keep) == 0) ||
		    (keep2 != NULL && strcmp(nm, keep2) == 0)) {
			continue;
		}
		if (unlinkat(ls->snap_dirfd, nm, 0) == 0) {
			removed = true;
		}
	}
	closedir(d);
	if (removed) {
		(void)fsync(ls->snap_dirfd);
	}
}

/* Name of the staging file, if a snapshot is being received. */
static void stage_name(const struct logstore *ls, char *buf, size_t len)
{
	buf[0] = '\0';
	if (ls->stage_fd >= 0) {
		snap_name(buf, len, ls->stage_index, ls->stage_term, true);
	}
}

/* tmp (already written, fd open) -> fsync, close, rename to its final name,
 * fsync the directory. fd is closed in every case; on failure tmp is gone. */
/* fsync and close fd, the file snap/<tmp>, then rename it to the held name of
 * (index, term) and fsync the directory. */
static int snap_file_commit_from(struct logstore *ls, int fd, const char *tmp, uint64_t index,
				 uint64_t term)
{
	char name[SNAP_NAME_LEN];
	snap_name(name, sizeof name, index, term, false);
	int e = 0;
	if (fsync(fd) != 0) {
		e = errno;
	}
	close(fd);
	if (e == 0 && renameat(ls->snap_dirfd, tmp, ls->snap_dirfd, name) != 0) {
		e = errno;
	}
	if (e == 0 && fsync(ls->snap_dirfd) != 0) {
		e = errno;
	}
	if (e != 0) {
		ls_err(ls, "%s/%s: commit snapshot file: %s", ls->snap_dir, tmp, strerror(e));
		unlinkat(ls->snap_dirfd, tmp, 0);
		return RAFT_EIO;
	}
	return 0;
}

static int snap_file_commit(struct logstore *ls, int fd, uint64_t index, uint64_t term)
{
	char tmp[SNAP_NAME_LEN];
	snap_name(tmp, sizeof tmp, index, term, true);
	return snap_file_commit_from(ls, fd, tmp, index, term);
}

/* The file a local snapshot is written to before logstore_snapshot_commit:
 * a .tmp name (deleted at open if left over) that staged chunks never use. */
#define SNAP_LOCAL_NAME "local.snap.tmp"

/* Record the marker of a snapshot whose file is in place, then make it the
 * held one and delete the older files. */
static int snap_record(struct logstore *ls, uint64_t index, uint64_t term,
		       const struct raft_conf *conf, uint64_t size)
{
	uint8_t blob[LOGSTORE_CONF_MAX];
	int len = logstore_conf_encode(conf, size, blob, sizeof blob);
	if (len < 0) {
		ls_err(ls, "snapshot %llu: malformed configuration", (unsigned long long)index);
		return len;
	}
	struct kv_wal_snapshot ws = {
		.index = index, .term = term, .conf_len = (uint32_t)len, .conf = blob
	};
	int rv = kv_wal_save_snapshot(ls->wal, &ws);
	if (rv != 0) {
		return wal_fail(ls, "record snapshot marker", rv);
	}
	pthread_mutex_lock(&ls->mu);
	ls->snap = (struct raft_snapshot_meta){
		.index = index, .term = term, .size = size, .conf = *conf
	};
	pthread_mutex_unlock(&ls->mu);
	/* A reader that already checked the old index and opens the old file
	 * after this finds it gone: RAFT_ESNAPOUTOFDATE, as the contract says. */
	char name[SNAP_NAME_LEN], stage[SNAP_NAME_LEN];
	snap_name(name, sizeof name, index, term, false);
	stage_name(ls, stage, sizeof stage);
	snap_dir_clean(ls, name, stage[0] ? stage : NULL);
	return 0;
}

static void stage_drop(struct logstore *ls)
{
	if (ls->stage_fd < 0) {
		return;
	}
	char tmp[SNAP_NAME_LEN];
	stage_name(ls, tmp, sizeof tmp);
	close(ls->stage_fd);
	ls->stage_fd = -1;
	unlinkat(ls->snap_dirfd, tmp, 0);
	ls->stage_len = 0;
}

/* Chunks follow memstore.c's rules: offset 0 (or a new identity) restarts
 * the staging, a chunk may not leave a hole. */
static int stage_chunk(struct logstore *ls, const struct raft_snapshot_chunk *c)
{
	bool same = ls->stage_fd >= 0 && c->index == ls->stage_index && c->term == ls->stage_term;
	if (c->offset == 0 || !same) {
		if (c->offset != 0) {
			ls_err(ls, "snapshot chunk %llu/%llu at offset %llu: nothing staged",
			       (unsigned long long)c->index, (unsigned long long)c->term,
			       (unsigned long long)c->offset);
			return RAFT_ECORRUPT;
		}
		stage_drop(ls);
		char tmp[SNAP_NAME_LEN];
		snap_name(tmp, sizeof tmp, c->index, c->term, true);
		int fd = openat(ls->snap_dirfd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			ls_err(ls, "%s/%s: create: %s", ls->snap_dir, tmp, strerror(errno));
			return RAFT_EIO;
		}
		ls->stage_fd = fd;
		ls->stage_index = c->index;
		ls->stage_term = c->term;
		ls->stage_len = 0;
	}
	if (c->offset > ls->stage_len) {
		ls_err(ls, "snapshot chunk at %llu leaves a hole after %llu",
		       (unsigned long long)c->offset, (unsigned long long)ls->stage_len);
		return RAFT_ECORRUPT;
	}
	const uint8_t *p = c->data;
	size_t left = c->len;
	uint64_t off = c->offset;
	while (left > 0) {
		ssize_t k = pwrite(ls->stage_fd, p, left, (off_t)off);
		if (k < 0) {
			if (errno == EINTR) {
				continue;
			}
			ls_err(ls, "%s: stage snapshot chunk: %s", ls->snap_dir, strerror(errno));
			return RAFT_EIO;
		}
		p += k;
		left -= (size_t)k;
		off += (uint64_t)k;
	}
	ls->stage_len = c->offset + c->len;
	return 0;
}

static int stage_install(struct logstore *ls, const struct raft_snapshot_meta *meta)
{
	if (ls->stage_fd < 0 || meta->index != ls->stage_index || meta->term != ls->stage_term ||
	    meta->size != ls->stage_len) {
		ls_err(ls,
		       "install snapshot %llu/%llu of %llu bytes: staged %llu bytes of %llu/%llu",
		       (unsigned long long)meta->index, (unsigned long long)meta->term,
		       (unsigned long long)meta->size, (unsigned long long)ls->stage_len,
		       (unsigned long long)ls->stage_index, (unsigned long long)ls->stage_term);
		return RAFT_ECORRUPT;
	}
	if (ftruncate(ls->stage_fd, (off_t)meta->size) != 0) {
		ls_err(ls, "%s: truncate staged snapshot: %s", ls->snap_dir, strerror(errno));
		return RAFT_EIO;
	}
	int fd = ls->stage_fd;
	ls->stage_fd = -1;
	ls->stage_len = 0;
	int rv = snap_file_commit(ls, fd, meta->index, meta->term);
	if (rv != 0) {
		return rv;
	}
	return snap_record(ls, meta->index, meta->term, &meta->conf, meta->size);
}

/* ------------------------------------------------------------------------ */
/* Storage callbacks (reader thread).                                       */

static int st_initial_state(void *ctx, struct raft_hard_state *hs, struct raft_conf *conf)
{
	struct logstore *ls = ctx;
	struct kv_wal_hard_state whs;
	kv_wal_hard_state(ls->wal, &whs);
	*hs = (struct raft_hard_state){ .term = whs.term, .vote = whs.vote, .commit = whs.commit };
	pthread_mutex_lock(&ls->mu);
	struct raft_conf c = ls->snap.conf;
	uint64_t from = ls->snap.index + 1;
	pthread_mutex_unlock(&ls->mu);
	/* The conf-change entries after the marker, up to the applied index. */
	uint64_t first, last;
	kv_wal_bounds(ls->wal, &first, &last);
	uint64_t to = ls->applied < last ? ls->applied : last;
	if (from < first) {
		from = first;
	}
	int rv = 0;
	kv_wal_read_begin(ls->wal);
	while (from <= to) {
		struct kv_wal_entry ents[INITIAL_BATCH];
		uint64_t hi = to - from + 1 > INITIAL_BATCH ? from + INITIAL_BATCH : to + 1;
		uint32_t n = 0;
		rv = kv_to_raft(kv_wal_entries(ls->wal, from, hi, UINT64_MAX, ents, &n));
		if (rv != 0) {
			break;
		}
		for (uint32_t i = 0; i < n; i++) {
			struct raft_conf_change cc;
			if (ents[i].type == RAFT_ENTRY_CONF_CHANGE &&
			    raft_conf_change_decode(ents[i].data, ents[i].len, &cc) == 0) {
				(void)raft_conf_apply(&c,
						      &cc); /* refused: skipped, as the core does */
			}
		}
		from += n;
	}
	kv_wal_read_end(ls->wal);
	if (rv == 0) {
		*conf = c;
	}
	return rv;
}

static int st_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_bytes,
		      struct raft_entry *out, uint32_t *n)
{
	struct logstore *ls = ctx;
	*n = 0;
	logstore_release(ls); /* the core copied what the last call returned */
	uint64_t first, last;
	kv_wal_bounds(ls->wal, &first, &last);
	if (lo < first) {
		return RAFT_ECOMPACTED;
	}
	if (lo >= hi || hi - 1 > last) {
		return RAFT_EUNAVAILABLE;
	}
	size_t want = (size_t)(hi - lo);
	if (want > ls->rcap) {
		struct kv_wal_entry *b = realloc(ls->rbuf, want * sizeof *b);
		if (b == NULL) {
			return RAFT_ENOMEM;
		}
		ls->rbuf = b;
		ls->rcap = want;
	}
	kv_wal_read_begin(ls->wal);
	ls->holding = true;
	uint32_t k = 0;
	int rv = kv_to_raft(kv_wal_entries(ls->wal, lo, hi, max_bytes, ls->rbuf, &k));
	if (rv != 0) {
		logstore_release(ls);
		return rv;
	}
	for (uint32_t i = 0; i < k; i++) {
		const struct kv_wal_entry *e = &ls->rbuf[i];
		out[i] = (struct raft_entry){ .term = e->term,
					      .index = e->index,
					      .type = e->type,
					      .len = e->len,
					      .data = e->data };
	}
	*n = k;
	return 0;
}

static int st_term(void *ctx, uint64_t i, uint64_t *term)
{
	struct logstore *ls = ctx;
	return kv_to_raft(kv_wal_term(ls->wal, i, term));
}

static uint64_t st_first_index(void *ctx)
{
	struct logstore *ls = ctx;
	return kv_wal_first_index(ls->wal);
}

static uint64_t st_last_index(void *ctx)
{
	struct logstore *ls = ctx;
	return kv_wal_last_index(ls->wal);
}

static int st_snapshot(void *ctx, struct raft_snapshot_meta *meta)
{
	struct logstore *ls = ctx;
	int rv = 0;
	pthread_mutex_lock(&ls->mu);
	*meta = ls->snap;
	if (ls->snap.size == LOGSTORE_NO_FILE) {
		/* a mark: its data is to be copied first (logstore_snapshot_wanted) */
		ls->wanted = true;
		rv = RAFT_EUNAVAILABLE;
	}
	pthread_mutex_unlock(&ls->mu);
	return rv;
}

bool logstore_snapshot_wanted(struct logstore *ls)
{
	pthread_mutex_lock(&ls->mu);
	bool w = ls->wanted;
	ls->wanted = false;
	pthread_mutex_unlock(&ls->mu);
	return w;
}

void logstore_snapshot_held(struct logstore *ls, struct raft_snapshot_meta *meta)
{
	pthread_mutex_lock(&ls->mu);
	*meta = ls->snap;
	pthread_mutex_unlock(&ls->mu);
}

static int st_snapshot_read(void *ctx, uint64_t index, uint64_t offset, uint8_t *buf, uint32_t len,
			    uint32_t *n)
{
	struct logstore *ls = ctx;
	*n = 0;
	pthread_mutex_lock(&ls->mu);
	uint64_t held = ls->snap.index, term = ls->snap.term, size = ls->snap.size;
	pthread_mutex_unlock(&ls->mu);
	if (held == 0 || index != held || size == LOGSTORE_NO_FILE) {
		return RAFT_ESNAPOUTOFDATE;
	}
	if (offset > size) {
		return RAFT_EINVAL;
	}
	char name[SNAP_NAME_LEN];
	snap_name(name, sizeof name, index, term, false);
	int fd = openat(ls->snap_dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		/* Replaced (and deleted) since the check above. */
		return errno == ENOENT ? RAFT_ESNAPOUTOFDATE : RAFT_EIO;
	}
	uint64_t want = size - offset < len ? size - offset : len;
	uint32_t got = 0;
	int rv = 0;
	while (got < want) {
		ssize_t k = pread(fd, buf + got, (size_t)(want - got), (off_t)(offset + got));
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k <= 0) {
			rv = RAFT_EIO; /* error, or the file is shorter than recorded */
			break;
		}
		got += (uint32_t)k;
	}
	close(fd);
	if (rv == 0) {
		*n = got;
	}
	return rv;
}

struct raft_storage logstore_storage(struct logstore *ls)
{
	return (struct raft_storage){
		.ctx = ls,
		.initial_state = st_initial_state,
		.entries = st_entries,
		.term = st_term,
		.first_index = st_first_index,
		.last_index = st_last_index,
		.snapshot = st_snapshot,
		.snapshot_read = st_snapshot_read,
	};
}

void logstore_release(struct logstore *ls)
{
	if (ls->holding) {
		ls->holding = false;
		kv_wal_read_end(ls->wal);
	}
}

/* ------------------------------------------------------------------------ */
/* Writes (storage thread).                                                 */

static int wbuf_reserve(struct logstore *ls, size_t n)
{
	if (n <= ls->wcap) {
		return 0;
	}
	struct kv_wal_entry *b = realloc(ls->wbuf, n * sizeof *b);
	if (b == NULL) {
		ls_err(ls, "out of memory for %zu entries", n);
		return RAFT_ENOMEM;
	}
	ls->wbuf = b;
	ls->wcap = n;
	return 0;
}

int logstore_bootstrap(struct logstore *ls, const struct raft_conf *conf)
{
	struct kv_wal_snapshot ws;
	struct kv_wal_hard_state hs;
	kv_wal_snapshot_get(ls->wal, &ws);
	kv_wal_hard_state(ls->wal, &hs);
	uint64_t first, last;
	kv_wal_bounds(ls->wal, &first, &last);
	if (conf == NULL || !conf_ok(conf) || ws.index != 0 || last != 0 || hs.term != 0) {
		ls_err(ls, "bootstrap: the log is not empty or the configuration is malformed");
		return RAFT_EINVAL;
	}
	uint8_t blob[LOGSTORE_CONF_MAX];
	int len = logstore_conf_encode(conf, 0, blob, sizeof blob);
	if (len < 0) {
		return len;
	}
	/* A crash between the marker and the entries leaves the marker alone:
	 * bootstrapping again with the same configuration goes on from there. */
	if (ws.conf_len > 0 &&
	    (ws.conf_len != (uint32_t)len || memcmp(ws.conf, blob, ws.conf_len))) {
		ls_err(ls, "bootstrap: the log was bootstrapped with another configuration");
		return RAFT_EINVAL;
	}
	uint8_t bufs[RAFT_MAX_MEMBERS][RAFT_CONF_CHANGE_HEADER];
	struct kv_wal_entry ents[RAFT_MAX_MEMBERS];
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
			int rv = raft_conf_change_encode(&cc, bufs[n], sizeof bufs[n]);
			if (rv < 0) {
				return rv;
			}
			ents[n] = (struct kv_wal_entry){ .term = 1,
							 .index = n + 1,
							 .type = RAFT_ENTRY_CONF_CHANGE,
							 .len = (uint32_t)rv,
							 .data = bufs[n] };
			n++;
		}
	}
	assert(n == conf->n);
	if (ws.conf_len == 0) {
		ws = (struct kv_wal_snapshot){ .index = 0,
					       .conf_len = (uint32_t)len,
					       .conf = blob };
		int rv = kv_wal_save_snapshot(ls->wal, &ws);
		if (rv != 0) {
			return wal_fail(ls, "bootstrap: record the founding configuration", rv);
		}
	}
	pthread_mutex_lock(&ls->mu);
	ls->snap.conf = *conf;
	pthread_mutex_unlock(&ls->mu);
	hs = (struct kv_wal_hard_state){ .term = 1, .vote = 0, .commit = n };
	int rv = kv_wal_append(ls->wal, ents, n, &hs);
	if (rv != 0) {
		return wal_fail(ls, "bootstrap: append", rv);
	}
	return 0;
}

int logstore_persist(struct logstore *ls, const struct raft_update *u)
{
	int rv;
	for (uint32_t i = 0; i < u->n_snapshot_chunks; i++) {
		rv = stage_chunk(ls, &u->snapshot_chunks[i]);
		if (rv != 0) {
			return rv;
		}
	}
	if (u->n_snapshot_chunks > 0 && fdatasync(ls->stage_fd) != 0) {
		ls_err(ls, "%s: sync staged snapshot: %s", ls->snap_dir, strerror(errno));
		return RAFT_EIO;
	}
	struct kv_wal_hard_state hs;
	bool with_hs = u->has_hard_state;
	if (with_hs) {
		hs = (struct kv_wal_hard_state){ .term = u->hard_state.term,
						 .vote = u->hard_state.vote,
						 .commit = u->hard_state.commit };
	}
	if (u->snapshot != NULL) {
		rv = stage_install(ls, u->snapshot);
		if (rv != 0) {
			return rv;
		}
		/* As memstore.c's install: the snapshot is committed. */
		if (!with_hs) {
			kv_wal_hard_state(ls->wal, &hs);
			with_hs = hs.commit < u->snapshot->index;
		}
		if (with_hs && hs.commit < u->snapshot->index) {
			hs.commit = u->snapshot->index;
		}
	}
	if (u->n_entries == 0 && !with_hs) {
		return 0;
	}
	rv = wbuf_reserve(ls, u->n_entries);
	if (rv != 0) {
		return rv;
	}
	for (uint32_t i = 0; i < u->n_entries; i++) {
		const struct raft_entry *e = &u->entries[i];
		ls->wbuf[i] = (struct kv_wal_entry){ .term = e->term,
						     .index = e->index,
						     .type = e->type,
						     .len = e->len,
						     .data = e->data };
	}
	int kv = kv_wal_append(ls->wal, ls->wbuf, u->n_entries, with_hs ? &hs : NULL);
	if (kv != 0) {
		return wal_fail(ls, "persist", kv);
	}
	return 0;
}

int logstore_snapshot_save(struct logstore *ls, uint64_t index, const struct raft_conf *conf,
			   logstore_snapshot_writer writer, void *ctx)
{
	pthread_mutex_lock(&ls->mu);
	uint64_t held = ls->snap.index;
	pthread_mutex_unlock(&ls->mu);
	uint64_t term = 0;
	if (conf == NULL || !conf_ok(conf) || writer == NULL || index <= held ||
	    kv_wal_term(ls->wal, index, &term) != 0) {
		ls_err(ls, "snapshot at %llu: bad index (held %llu, log ends at %llu) or conf",
		       (unsigned long long)index, (unsigned long long)held,
		       (unsigned long long)kv_wal_last_index(ls->wal));
		return RAFT_EINVAL;
	}
	char tmp[SNAP_NAME_LEN];
	snap_name(tmp, sizeof tmp, index, term, true);
	int fd = openat(ls->snap_dirfd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ls_err(ls, "%s/%s: create: %s", ls->snap_dir, tmp, strerror(errno));
		return RAFT_EIO;
	}
	int wrv = writer(ctx, fd);
	struct stat st;
	if (wrv != 0 || fstat(fd, &st) != 0) {
		if (wrv != 0) {
			ls_err(ls, "%s/%s: writing the snapshot failed (%d)", ls->snap_dir, tmp,
			       wrv);
		} else {
			ls_err(ls, "%s/%s: fstat: %s", ls->snap_dir, tmp, strerror(errno));
		}
		close(fd);
		unlinkat(ls->snap_dirfd, tmp, 0);
		return RAFT_EIO;
	}
	int rv = snap_file_commit(ls, fd, index, term);
	if (rv != 0) {
		return rv;
	}
	return snap_record(ls, index, term, conf, (uint64_t)st.st_size);
}

/* The term of index if a snapshot may be taken there (above the held one). */
static int snap_local_term(struct logstore *ls, uint64_t index, uint64_t *term)
{
	pthread_mutex_lock(&ls->mu);
	uint64_t held = ls->snap.index;
	pthread_mutex_unlock(&ls->mu);
	if (index <= held || kv_wal_term(ls->wal, index, term) != 0)
		return RAFT_EINVAL;
	return 0;
}

int logstore_snapshot_create(struct logstore *ls, char *path, size_t len, int *fd)
{
	*fd = -1;
	int k = snprintf(path, len, "%s/%s", ls->snap_dir, SNAP_LOCAL_NAME);
	if (k < 0 || (size_t)k >= len)
		return RAFT_EINVAL;
	*fd = openat(ls->snap_dirfd, SNAP_LOCAL_NAME, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	return *fd >= 0 ? 0 : RAFT_EIO;
}

int logstore_snapshot_commit(struct logstore *ls, uint64_t index, const struct raft_conf *conf,
			     int fd)
{
	uint64_t term = 0;
	struct stat st;
	int rv = snap_local_term(ls, index, &term);
	if (rv != 0 || conf == NULL || !conf_ok(conf) || fstat(fd, &st) != 0) {
		ls_err(ls, "local snapshot at %llu: bad index (held %llu) or conf, or fstat failed",
		       (unsigned long long)index, (unsigned long long)ls->snap.index);
		close(fd);
		unlinkat(ls->snap_dirfd, SNAP_LOCAL_NAME, 0);
		return RAFT_EINVAL;
	}
	rv = snap_file_commit_from(ls, fd, SNAP_LOCAL_NAME, index, term);
	if (rv != 0)
		return rv;
	return snap_record(ls, index, term, conf, (uint64_t)st.st_size);
}

int logstore_snapshot_mark(struct logstore *ls, uint64_t index, const struct raft_conf *conf)
{
	uint64_t term = 0;
	if (snap_local_term(ls, index, &term) != 0 || conf == NULL || !conf_ok(conf)) {
		ls_err(ls, "mark at %llu: bad index (held %llu) or conf", (unsigned long long)index,
		       (unsigned long long)ls->snap.index);
		return RAFT_EINVAL;
	}
	return snap_record(ls, index, term, conf, LOGSTORE_NO_FILE);
}

int logstore_compact(struct logstore *ls, uint64_t index)
{
	int rv = kv_wal_compact(ls->wal, index);
	return rv != 0 ? wal_fail(ls, "compact", rv) : 0;
}

int logstore_snapshot_path(struct logstore *ls, uint64_t index, char *buf, size_t len)
{
	pthread_mutex_lock(&ls->mu);
	uint64_t held = ls->snap.index, term = ls->snap.term, size = ls->snap.size;
	pthread_mutex_unlock(&ls->mu);
	if (len > 0) {
		buf[0] = '\0';
	}
	if (held == 0 || held != index || size == LOGSTORE_NO_FILE) {
		return RAFT_ESNAPOUTOFDATE;
	}
	char name[SNAP_NAME_LEN];
	snap_name(name, sizeof name, index, term, false);
	int k = snprintf(buf, len, "%s/%s", ls->snap_dir, name);
	return k < 0 || (size_t)k >= len ? RAFT_EINVAL : 0;
}

const char *logstore_last_error(const struct logstore *ls)
{
	return ls->err;
}

void logstore_set_applied(struct logstore *ls, uint64_t applied)
{
	ls->applied = applied;
}

/* ------------------------------------------------------------------------ */
/* Open and close.                                                          */

static char *path_join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *p = malloc(n);
	if (p != NULL) {
		snprintf(p, n, "%s/%s", a, b);
	}
	return p;
}

/* The held snapshot from the WAL's marker, checked against its file. */
static int load_snapshot(struct logstore *ls)
{
	struct kv_wal_snapshot ws;
	kv_wal_read_begin(ls->wal);
	kv_wal_snapshot_get(ls->wal, &ws);
	struct raft_conf conf;
	memset(&conf, 0, sizeof conf);
	uint64_t size = 0;
	int rv = 0;
	if (ws.conf_len > 0) {
		rv = logstore_conf_decode(ws.conf, ws.conf_len, &conf, &size);
	} else if (ws.index > 0) {
		rv = RAFT_ECORRUPT; /* a snapshot without its configuration */
	}
	kv_wal_read_end(ls->wal);
	if (rv != 0) {
		ls_err(ls, "%s: snapshot marker %llu: bad configuration blob", ls->dir,
		       (unsigned long long)ws.index);
		return rv;
	}
	char name[SNAP_NAME_LEN];
	bool file = ws.index > 0 && size != LOGSTORE_NO_FILE;
	if (file) {
		snap_name(name, sizeof name, ws.index, ws.term, false);
		struct stat st;
		if (fstatat(ls->snap_dirfd, name, &st, 0) != 0 || (uint64_t)st.st_size != size) {
			ls_err(ls, "%s/%s: snapshot file missing or not %llu bytes", ls->snap_dir,
			       name, (unsigned long long)size);
			return RAFT_ECORRUPT;
		}
	}
	ls->snap = (struct raft_snapshot_meta){
		.index = ws.index, .term = ws.term, .size = size, .conf = conf
	};
	snap_dir_clean(ls, file ? name : NULL, NULL);
	return 0;
}

int logstore_open(const char *data_dir, const struct logstore_options *opt, struct logstore **out,
		  char *errmsg, size_t errlen)
{
	*out = NULL;
	if (errmsg != NULL && errlen > 0) {
		errmsg[0] = '\0';
	}
	struct logstore *ls = calloc(1, sizeof *ls);
	if (ls == NULL) {
		return RAFT_ENOMEM;
	}
	ls->snap_dirfd = -1;
	ls->stage_fd = -1;
	if (pthread_mutex_init(&ls->mu, NULL) != 0) {
		free(ls);
		return RAFT_ENOMEM;
	}
	int rv = RAFT_ENOMEM;
	char *wal_dir = NULL;
	ls->dir = strdup(data_dir);
	ls->snap_dir = path_join(data_dir, "snap");
	wal_dir = path_join(data_dir, "wal");
	if (ls->dir == NULL || ls->snap_dir == NULL || wal_dir == NULL) {
		goto err;
	}
	if ((mkdir(data_dir, 0700) != 0 && errno != EEXIST) ||
	    (mkdir(ls->snap_dir, 0700) != 0 && errno != EEXIST)) {
		ls_err(ls, "%s: mkdir: %s", ls->snap_dir, strerror(errno));
		rv = RAFT_EIO;
		goto err;
	}
	ls->snap_dirfd = open(ls->snap_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ls->snap_dirfd < 0) {
		ls_err(ls, "%s: open: %s", ls->snap_dir, strerror(errno));
		rv = RAFT_EIO;
		goto err;
	}
	struct kv_wal_options wo = { .segment_bytes = opt != NULL ? opt->segment_bytes : 0 };
	int kv = kv_wal_open(wal_dir, &wo, &ls->wal, ls->err, sizeof ls->err);
	if (kv != 0) {
		rv = kv_to_raft(kv);
		goto err;
	}
	rv = load_snapshot(ls);
	if (rv != 0) {
		goto err;
	}
	free(wal_dir);
	*out = ls;
	return 0;
err:
	if (errmsg != NULL && errlen > 0) {
		snprintf(errmsg, errlen, "%s", ls->err[0] ? ls->err : raft_strerror(rv));
	}
	free(wal_dir);
	logstore_close(ls);
	return rv;
}

void logstore_close(struct logstore *ls)
{
	if (ls == NULL) {
		return;
	}
	if (ls->wal != NULL) {
		logstore_release(ls);
		kv_wal_close(ls->wal);
	}
	if (ls->stage_fd >= 0) {
		close(ls->stage_fd); /* the .tmp is removed at the next open */
	}
	if (ls->snap_dirfd >= 0) {
		close(ls->snap_dirfd);
	}
	pthread_mutex_destroy(&ls->mu);
	free(ls->rbuf);
	free(ls->wbuf);
	free(ls->snap_dir);
	free(ls->dir);
	free(ls);
}
