/* snapshot.c: `cairn snapshot status FILE` and `cairn snapshot restore FILE ...`, for the files
 * `etcdctl snapshot save` writes from a Cairn member: a compacted copy of the member's LMDB store
 * followed by the SHA-256 of that copy (the end of etcd's Snapshot stream). etcdctl's own status
 * and restore expect etcd's bbolt format and refuse these files.
 *
 * restore builds the data directory of a member of a new cluster, as etcd's restore does: the
 * keys, their history and the leases are kept; the cluster id, the member ids and the member
 * table come from --name, --initial-cluster and --initial-cluster-token (computed the way a new
 * member computes them, server/member.c); the ids removed from the old cluster and the alarms are
 * dropped; the Raft log starts empty, so the member writes its founding log at first start. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "apply.h"
#include "config.h"
#include "kvstore.h"
#include "maint.h"
#include "member.h"
#include "snapshot.h"

#define ERR_LEN 1024
#define SHA_LEN MAINT_SNAPSHOT_SHA_LEN

static int failf(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(char *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, ERR_LEN, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- the file --------------------------------------------------------------------------- */

/* Checks FILE: its size, and the SHA-256 at its end against the bytes before it (etcd's rule:
 * a file whose size is 32 past a multiple of 512 carries one). *content: the bytes of the copy
 * itself. A file without the hash is refused unless skip_hash. */
static int snapshot_verify(const char *file, bool skip_hash, uint64_t *content, char *err)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return failf(err, "%s: %s", file, strerror(e));
	}
	uint64_t size = (uint64_t)st.st_size;
	bool has_hash = size % 512 == SHA_LEN;
	*content = has_hash ? size - SHA_LEN : size;
	if (!has_hash) {
		close(fd);
		if (skip_hash)
			return 0;
		return failf(err,
			     "%s: the snapshot has no SHA-256 at its end (%" PRIu64
			     " bytes); pass --skip-hash-check to use it all the same",
			     file, size);
	}
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	static uint8_t buf[1 << 16];
	uint8_t want[SHA_LEN], got[EVP_MAX_MD_SIZE];
	unsigned glen = 0;
	int rv = c != NULL && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 ? 0 : -1;
	for (uint64_t off = 0; rv == 0 && off < *content;) {
		size_t n = *content - off < sizeof buf ? (size_t)(*content - off) : sizeof buf;
		ssize_t k = pread(fd, buf, n, (off_t)off);
		if (k <= 0) {
			rv = failf(err, "%s: read failed: %s", file,
				   k < 0 ? strerror(errno) : "short");
			break;
		}
		(void)EVP_DigestUpdate(c, buf, (size_t)k);
		off += (uint64_t)k;
	}
	if (rv == 0 && pread(fd, want, SHA_LEN, (off_t)*content) != SHA_LEN)
		rv = failf(err, "%s: cannot read its SHA-256", file);
	if (rv == 0 && (EVP_DigestFinal_ex(c, got, &glen) != 1 || glen != SHA_LEN))
		rv = failf(err, "SHA-256 failed");
	if (rv == 0 && memcmp(want, got, SHA_LEN) != 0) {
		char w[2 * SHA_LEN + 1], g[2 * SHA_LEN + 1];
		for (int i = 0; i < SHA_LEN; i++) {
			snprintf(w + 2 * i, 3, "%02x", want[i]);
			snprintf(g + 2 * i, 3, "%02x", got[i]);
		}
		rv = failf(err,
			   "%s: snapshot file integrity check failed: expected sha256 %s, got %s "
			   "(the file is corrupt or cut short)",
			   file, w, g);
	}
	EVP_MD_CTX_free(c);
	close(fd);
	return rv;
}

/* Copies the first `len` bytes of src into dst (created, synced). */
static int copy_prefix(const char *src, const char *dst, uint64_t len, char *err)
{
	static uint8_t buf[1 << 16];
	int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return failf(err, "%s: %s", src, strerror(errno));
	int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		int e = errno;
		close(in);
		return failf(err, "%s: %s", dst, strerror(e));
	}
	int rv = 0;
	for (uint64_t off = 0; rv == 0 && off < len;) {
		size_t n = len - off < sizeof buf ? (size_t)(len - off) : sizeof buf;
		ssize_t k = pread(in, buf, n, (off_t)off);
		if (k <= 0) {
			rv = failf(err, "%s: read failed", src);
			break;
		}
		for (ssize_t w = 0; rv == 0 && w < k;) {
			ssize_t d = write(out, buf + w, (size_t)(k - w));
			if (d < 0 && errno != EINTR)
				rv = failf(err, "%s: %s", dst, strerror(errno));
			else if (d > 0)
				w += d;
		}
		off += (uint64_t)k;
	}
	if (rv == 0 && fsync(out) != 0)
		rv = failf(err, "%s: %s", dst, strerror(errno));
	close(in);
	if (close(out) != 0 && rv == 0)
		rv = failf(err, "%s: %s", dst, strerror(errno));
	if (rv != 0)
		unlink(dst);
	return rv;
}

/* Puts the copy held in FILE at <dir>/data.mdb (dir created) and opens it as a store. */
static int open_copy(const char *file, uint64_t content, const char *dir, struct kv_store **kv,
		     char *err)
{
	char tmp[4200], db[4200];
	if (mkdir(dir, 0700) != 0)
		return failf(err, "cannot create %s: %s", dir, strerror(errno));
	snprintf(tmp, sizeof tmp, "%s/data.mdb.tmp", dir);
	snprintf(db, sizeof db, "%s/data.mdb", dir);
	if (copy_prefix(file, tmp, content, err) != 0)
		return -1;
	uint64_t applied = 0;
	int kerr = kv_snapshot_file_applied(tmp, &applied);
	if (kerr != 0) {
		unlink(tmp);
		return failf(err, "%s: not a snapshot of a Cairn member: %s", file,
			     kv_strerror(kerr));
	}
	if (rename(tmp, db) != 0)
		return failf(err, "%s: %s", db, strerror(errno));
	/* the map must hold the copy whatever the quota it was taken under */
	struct kv_options ko = { .quota_bytes = content + KV_DEFAULT_QUOTA };
	kerr = kv_open(dir, &ko, kv);
	if (kerr != 0)
		return failf(err, "%s: cannot open the copy: %s", file, kv_strerror(kerr));
	return 0;
}

static void remove_tree(const char *dir)
{
	const char *names[] = { "data.mdb", "lock.mdb", "data.mdb.tmp" };
	char p[4200];
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
}

/* ---- status ------------------------------------------------------------------------------- */

struct snap_info {
	uint32_t hash;
	int64_t revision;
	int64_t keys;
	uint64_t size;
};

static int store_info(struct kv_store *kv, struct snap_info *out, char *err)
{
	int kerr = maint_store_hash(kv, &out->hash, &out->revision);
	if (kerr == 0) {
		static const uint8_t zero[1] = { 0 };
		struct kv_range_req q = { .key = zero,
					  .key_len = 1,
					  .range_end = zero,
					  .range_end_len = 1,
					  .count_only = true };
		struct kv_range_resp r;
		kerr = kv_range(kv, &q, &r);
		if (kerr == 0)
			out->keys = r.count;
		kv_range_resp_free(&r);
	}
	return kerr == 0 ? 0 : failf(err, "reading the snapshot: %s", kv_strerror(kerr));
}

/* etcd's humanize.Bytes: SI units, one decimal below 10. */
static void human_bytes(uint64_t n, char *out, size_t cap)
{
	static const char *const units[] = { "B", "kB", "MB", "GB", "TB", "PB" };
	if (n < 10) {
		snprintf(out, cap, "%" PRIu64 " B", n);
		return;
	}
	double v = (double)n;
	size_t u = 0;
	while (v >= 1000.0 && u + 1 < sizeof units / sizeof units[0]) {
		v /= 1000.0;
		u++;
	}
	if (v < 10.0)
		snprintf(out, cap, "%.1f %s", v, units[u]);
	else
		snprintf(out, cap, "%.0f %s", v, units[u]);
}

static void print_info(const struct snap_info *in, const char *format)
{
	char size[32];
	human_bytes(in->size, size, sizeof size);
	if (strcmp(format, "json") == 0) {
		printf("{\"hash\":%" PRIu32 ",\"revision\":%" PRId64 ",\"totalKey\":%" PRId64
		       ",\"totalSize\":%" PRIu64 "}\n",
		       in->hash, in->revision, in->keys, in->size);
	} else if (strcmp(format, "simple") == 0) {
		printf("%x, %" PRId64 ", %" PRId64 ", %s\n", in->hash, in->revision, in->keys,
		       size);
	} else {
		char c[4][32];
		snprintf(c[0], sizeof c[0], "%x", in->hash);
		snprintf(c[1], sizeof c[1], "%" PRId64, in->revision);
		snprintf(c[2], sizeof c[2], "%" PRId64, in->keys);
		snprintf(c[3], sizeof c[3], "%s", size);
		const char *head[4] = { "HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE" };
		size_t w[4];
		for (int i = 0; i < 4; i++) {
			w[i] = strlen(head[i]) > strlen(c[i]) ? strlen(head[i]) : strlen(c[i]);
		}
		char line[256];
		size_t k = 0;
		for (int i = 0; i < 4; i++) {
			line[k++] = '+';
			for (size_t j = 0; j < w[i] + 2; j++)
				line[k++] = '-';
		}
		line[k++] = '+';
		line[k] = '\0';
		printf("%s\n|", line);
		for (int i = 0; i < 4; i++) {
			size_t pad = w[i] - strlen(head[i]);
			printf(" %*s%s%*s |", (int)(pad / 2), "", head[i], (int)(pad - pad / 2),
			       "");
		}
		printf("\n%s\n|", line);
		for (int i = 0; i < 4; i++)
			printf(" %*s |", i == 3 ? -(int)w[i] : (int)w[i], c[i]);
		printf("\n%s\n", line);
	}
}

static int tmp_dir(char *out, size_t cap, char *err)
{
	const char *base = getenv("TMPDIR");
	snprintf(out, cap, "%s/cairn-snapshot-XXXXXX", base && base[0] ? base : "/tmp");
	if (mkdtemp(out) == NULL)
		return failf(err, "cannot create a temporary directory: %s", strerror(errno));
	return 0;
}

static int cmd_status(int argc, char **argv)
{
	const char *file = NULL, *format = "table";
	bool skip = false;
	char err[ERR_LEN];
	for (int i = 0; i < argc; i++) {
		if ((strcmp(argv[i], "-w") == 0 || strcmp(argv[i], "--write-out") == 0) &&
		    i + 1 < argc)
			format = argv[++i];
		else if (strncmp(argv[i], "--write-out=", 12) == 0)
			format = argv[i] + 12;
		else if (strcmp(argv[i], "--skip-hash-check") == 0)
			skip = true;
		else if (argv[i][0] != '-' && file == NULL)
			file = argv[i];
		else {
			fprintf(stderr, "cairn snapshot status: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (file == NULL) {
		fprintf(stderr, "usage: cairn snapshot status FILE [-w table|simple|json]\n");
		return 2;
	}
	uint64_t content = 0;
	char dir[4200], sub[4300];
	struct kv_store *kv = NULL;
	struct snap_info info = { 0 };
	if (snapshot_verify(file, skip, &content, err) != 0 || tmp_dir(dir, sizeof dir, err) != 0) {
		fprintf(stderr, "Error: %s\n", err);
		return 1;
	}
	snprintf(sub, sizeof sub, "%s/db", dir);
	int rv = open_copy(file, content, sub, &kv, err);
	if (rv == 0)
		rv = store_info(kv, &info, err);
	kv_close(kv);
	remove_tree(sub);
	rmdir(dir);
	if (rv != 0) {
		fprintf(stderr, "Error: %s\n", err);
		return 1;
	}
	info.size = content;
	print_info(&info, format);
	return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- restore -------------------------------------------------------------------------------- */

#define MAX_RESTORE_MEMBERS 64

struct restore_member {
	uint64_t id;
	const char *name;
	const char *url;
};

static int write_members_file(const char *data_dir, uint64_t cluster, uint64_t self,
			      const struct restore_member *v, size_t n, char *err)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/members", data_dir);
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return failf(err, "%s: %s", path, strerror(errno));
	fprintf(f, "cluster %016" PRIx64 "\nself %016" PRIx64 "\n", cluster, self);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "member %016" PRIx64 " %s %s\n", v[i].id, v[i].name, v[i].url);
	int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
	bad |= fclose(f) != 0;
	return bad ? failf(err, "%s: %s", path, strerror(errno)) : 0;
}

/* The store of the new member: the member table and ids of the new cluster, no removed id, no
 * alarm, applied index 0 (the new log starts at 1). */
static int rewrite_store(struct kv_store *kv, uint64_t cluster, uint64_t self,
			 const struct restore_member *v, size_t n, char *err)
{
	struct kv_wtx *w = NULL;
	struct kv_members mm = { 0 };
	struct kv_alarms al = { 0 };
	int kerr = kv_txn_begin_write(kv, &w);
	if (kerr == 0)
		kerr = kv_members_list_w(w, &mm);
	for (size_t i = 0; kerr == 0 && i < mm.n; i++)
		kerr = kv_member_delete(w, mm.v[i].id);
	if (kerr == 0)
		kerr = kv_member_clear_removed(w);
	if (kerr == 0)
		kerr = kv_alarms_list_w(w, &al);
	for (size_t i = 0; kerr == 0 && i < al.n; i++)
		kerr = kv_alarm_set(w, al.v[i].member_id, al.v[i].type, false, NULL);
	for (size_t i = 0; kerr == 0 && i < n; i++) {
		Etcdserverpb__Member mem = ETCDSERVERPB__MEMBER__INIT;
		char *url = (char *)v[i].url;
		mem.id = v[i].id;
		mem.name = (char *)v[i].name;
		mem.n_peerurls = 1;
		mem.peerurls = &url;
		kerr = apply_member_put(w, &mem);
	}
	if (kerr == 0)
		kerr = kv_set_ids(w, cluster, self);
	kv_members_free(&mm);
	kv_alarms_free(&al);
	if (w != NULL) {
		int cerr = kv_txn_commit(w, 0);
		if (kerr == 0)
			kerr = cerr;
	}
	return kerr == 0 ? 0 : failf(err, "rewriting the store: %s", kv_strerror(kerr));
}

static const char *flag_value(int argc, char **argv, int *i, const char *name)
{
	size_t n = strlen(name);
	if (strncmp(argv[*i], name, n) != 0)
		return NULL;
	if (argv[*i][n] == '=')
		return argv[*i] + n + 1;
	if (argv[*i][n] == '\0' && *i + 1 < argc)
		return argv[++*i];
	return NULL;
}

static int cmd_restore(int argc, char **argv)
{
	const char *file = NULL, *name = "default", *data_dir = NULL;
	const char *cluster = "default=http://localhost:2380", *token = "etcd-cluster";
	const char *apurls = "http://localhost:2380";
	bool skip = false;
	char err[ERR_LEN];
	for (int i = 0; i < argc; i++) {
		const char *v;
		if ((v = flag_value(argc, argv, &i, "--name")) != NULL)
			name = v;
		else if ((v = flag_value(argc, argv, &i, "--data-dir")) != NULL)
			data_dir = v;
		else if ((v = flag_value(argc, argv, &i, "--initial-cluster-token")) != NULL)
			token = v;
		else if ((v = flag_value(argc, argv, &i, "--initial-cluster")) != NULL)
			cluster = v;
		else if ((v = flag_value(argc, argv, &i, "--initial-advertise-peer-urls")) != NULL)
			apurls = v;
		else if (strcmp(argv[i], "--skip-hash-check") == 0)
			skip = true;
		else if (argv[i][0] != '-' && file == NULL)
			file = argv[i];
		else {
			fprintf(stderr,
				"cairn snapshot restore: unknown or incomplete argument %s\n",
				argv[i]);
			return 2;
		}
	}
	if (file == NULL) {
		fprintf(stderr, "usage: cairn snapshot restore FILE --data-dir DIR --name NAME "
				"--initial-cluster NAME=URL,... --initial-advertise-peer-urls URL "
				"[--initial-cluster-token TOKEN] [--skip-hash-check]\n");
		return 2;
	}
	char ddbuf[512];
	if (data_dir == NULL) {
		snprintf(ddbuf, sizeof ddbuf, "%s.cairn", name);
		data_dir = ddbuf;
	}
	/* the member's own parser and checks, so that the ids are the ones it computes */
	char *cargv[] = { (char *)"cairn",  (char *)"--name",
			  (char *)name,     (char *)"--data-dir",
			  (char *)data_dir, (char *)"--initial-cluster",
			  (char *)cluster,  (char *)"--initial-cluster-token",
			  (char *)token,    (char *)"--initial-advertise-peer-urls",
			  (char *)apurls,   NULL };
	char *envp[] = { NULL };
	struct srv_config cfg;
	if (srv_config_load(&cfg, 11, cargv, envp, err, sizeof err) != 0 ||
	    srv_config_verify_bootstrap(&cfg, err, sizeof err) != 0) {
		fprintf(stderr, "Error: %s\n", err);
		srv_config_free(&cfg);
		return 1;
	}
	struct restore_member mv[MAX_RESTORE_MEMBERS];
	uint64_t ids[MAX_RESTORE_MEMBERS], self = 0;
	size_t n = 0;
	int rv = 0;
	for (size_t i = 0; rv == 0 && i < cfg.initial_cluster_n; i++) {
		const struct srv_cluster_entry *e = &cfg.initial_cluster_entries[i];
		bool seen = false;
		for (size_t k = 0; k < n; k++)
			seen |= strcmp(mv[k].name, e->name) == 0;
		if (seen)
			continue; /* a second URL of the same member */
		if (n == MAX_RESTORE_MEMBERS) {
			rv = failf(err, "--initial-cluster: more than %d members",
				   MAX_RESTORE_MEMBERS);
			break;
		}
		mv[n].id = srv_member_id_of(e->url.text, cfg.initial_cluster_token);
		mv[n].name = e->name;
		mv[n].url = e->url.text;
		if (strcmp(e->name, cfg.name) == 0)
			self = mv[n].id;
		ids[n] = mv[n].id;
		n++;
	}
	if (rv == 0 && self == 0)
		rv = failf(err, "couldn't find local name \"%s\" in the initial cluster", cfg.name);
	struct stat st;
	if (rv == 0 && stat(cfg.data_dir, &st) == 0)
		rv = failf(err, "data-dir %s exists", cfg.data_dir);
	uint64_t content = 0;
	if (rv == 0)
		rv = snapshot_verify(file, skip, &content, err);
	if (rv == 0 && mkdir(cfg.data_dir, 0700) != 0)
		rv = failf(err, "cannot create %s: %s", cfg.data_dir, strerror(errno));
	bool made = rv == 0;
	struct kv_store *kv = NULL;
	char db[4200];
	snprintf(db, sizeof db, "%s/db", cfg.data_dir);
	uint64_t cluster_id = srv_cluster_id_of(ids, n, cfg.initial_cluster_token);
	if (rv == 0)
		rv = open_copy(file, content, db, &kv, err);
	struct snap_info info = { 0 };
	if (rv == 0)
		rv = rewrite_store(kv, cluster_id, self, mv, n, err);
	if (rv == 0)
		rv = store_info(kv, &info, err);
	kv_close(kv);
	if (rv == 0)
		rv = write_members_file(cfg.data_dir, cluster_id, self, mv, n, err);
	if (rv != 0) {
		if (made) {
			char p[4300];
			remove_tree(db);
			snprintf(p, sizeof p, "%s/members", cfg.data_dir);
			unlink(p);
			rmdir(cfg.data_dir);
		}
		fprintf(stderr, "Error: %s\n", err);
		srv_config_free(&cfg);
		return 1;
	}
	printf("restored snapshot %s into %s: member %s (%016" PRIx64 ") of cluster %016" PRIx64
	       ", revision %" PRId64 ", %" PRId64 " keys\n",
	       file, cfg.data_dir, cfg.name, self, cluster_id, info.revision, info.keys);
	srv_config_free(&cfg);
	return fflush(stdout) == 0 ? 0 : 1;
}

int cairn_snapshot_main(int argc, char **argv)
{
	if (argc >= 1 && strcmp(argv[0], "status") == 0)
		return cmd_status(argc - 1, argv + 1);
	if (argc >= 1 && strcmp(argv[0], "restore") == 0)
		return cmd_restore(argc - 1, argv + 1);
	fprintf(stderr, "usage: cairn snapshot status FILE [-w table|simple|json]\n"
			"       cairn snapshot restore FILE --data-dir DIR --name NAME "
			"--initial-cluster NAME=URL,... --initial-advertise-peer-urls URL "
			"[--initial-cluster-token TOKEN] [--skip-hash-check]\n");
	return 2;
}
