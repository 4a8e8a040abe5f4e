/* metrics.c: the member's metrics in Prometheus text format 0.0.4, etcd's names where the
 * meaning is the same (so dashboards built for etcd read Cairn), cairn_* for the rest. Counters
 * the loop owns are plain; what the storage and apply threads observe goes through atomics. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "member_int.h"

/* etcd's ExponentialBuckets(0.001, 2, 14) for WAL fsync and backend commit durations. */
static const double le_disk[] = { 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064,
				  0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192 };
static const double le_entries[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096 };
_Static_assert(sizeof le_disk / sizeof le_disk[0] <= SRV_HIST_MAX, "buckets");
_Static_assert(sizeof le_entries / sizeof le_entries[0] <= SRV_HIST_MAX, "buckets");

static void hist_init(struct srv_hist *h, const double *le, size_t n)
{
	h->le = le;
	h->n = n;
	for (size_t i = 0; i <= SRV_HIST_MAX; i++)
		atomic_init(&h->counts[i], 0);
	atomic_init(&h->count, 0);
	atomic_init(&h->sum_micro, 0);
}

void srv_metrics_init(struct srv_metrics *mt)
{
	memset(mt, 0, sizeof *mt);
	hist_init(&mt->wal_fsync, le_disk, sizeof le_disk / sizeof le_disk[0]);
	hist_init(&mt->backend_commit, le_disk, sizeof le_disk / sizeof le_disk[0]);
	hist_init(&mt->apply_batch, le_entries, sizeof le_entries / sizeof le_entries[0]);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	mt->start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void srv_hist_observe(struct srv_hist *h, double v)
{
	if (h->le == NULL || !(v >= 0))
		return;
	size_t i = 0;
	while (i < h->n && v > h->le[i])
		i++;
	atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_micro, (uint64_t)(v * 1e6 + 0.5), memory_order_relaxed);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

double srv_metrics_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void srv_metrics_gauge_set(struct srv_member *m, enum srv_gauge g, int64_t v)
{
	if ((unsigned)g >= SRV_GAUGE_COUNT)
		return;
	m->metrics.gauges[g] = v;
	m->metrics.gauge_set[g] = true;
}

static void head(struct srv_text *o, const char *name, const char *type, const char *help)
{
	srv_text_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gauge(struct srv_text *o, const char *name, const char *help, double v)
{
	head(o, name, "gauge", help);
	srv_text_printf(o, "%s %.15g\n", name, v);
}

static void counter(struct srv_text *o, const char *name, const char *help, double v)
{
	head(o, name, "counter", help);
	srv_text_printf(o, "%s %.15g\n", name, v);
}

static void hist(struct srv_text *o, const char *name, const char *help, struct srv_hist *h)
{
	head(o, name, "histogram", help);
	uint64_t cum = 0;
	for (size_t i = 0; i <= h->n; i++) {
		cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
		if (i < h->n)
			srv_text_printf(o, "%s_bucket{le=\"%g\"} %llu\n", name, h->le[i],
					(unsigned long long)cum);
		else
			srv_text_printf(o, "%s_bucket{le=\"+Inf\"} %llu\n", name,
					(unsigned long long)cum);
	}
	double sum = (double)atomic_load_explicit(&h->sum_micro, memory_order_relaxed) / 1e6;
	srv_text_printf(o, "%s_sum %.15g\n%s_count %llu\n", name, sum, name,
			(unsigned long long)cum);
}

/* /proc/self: CPU seconds, resident bytes, open descriptors. */
/* The gossip view by state and the pool's traffic as this member sees it. */
static void gossip_metrics(const struct srv_gossip *sg, struct srv_text *o)
{
	const struct gossip *g = srv_gossip_core(sg);
	uint64_t by_state[GOSSIP_LEFT + 1] = { 0 };
	struct gossip_member gm;
	for (uint32_t i = 0; gossip_member_at(g, i, &gm); i++)
		if (gm.state >= GOSSIP_ALIVE && gm.state <= GOSSIP_LEFT)
			by_state[gm.state]++;
	head(o, "cairn_gossip_members", "gauge", "Members of the gossip pool known here, by state.");
	for (uint32_t st = GOSSIP_ALIVE; st <= GOSSIP_LEFT; st++)
		srv_text_printf(o, "cairn_gossip_members{state=\"%s\"} %llu\n",
				gossip_state_name(st), (unsigned long long)by_state[st]);
	struct gossip_stats gs;
	gossip_stats(g, &gs);
	struct net_gossip_stats ns;
	srv_gossip_net_stats(sg, &ns);
	gauge(o, "cairn_gossip_health",
	      "Lifeguard's local health multiplier: 0 is healthy, higher slows probing.",
	      (double)gs.health);
	gauge(o, "cairn_gossip_queue", "Gossip broadcasts waiting to be sent.",
	      (double)gs.queue_len);
	head(o, "cairn_gossip_packets_total", "counter", "Gossip datagrams, by direction.");
	srv_text_printf(o, "cairn_gossip_packets_total{direction=\"in\"} %llu\n",
			(unsigned long long)ns.packets_in);
	srv_text_printf(o, "cairn_gossip_packets_total{direction=\"out\"} %llu\n",
			(unsigned long long)ns.packets_out);
	head(o, "cairn_gossip_bytes_total", "counter", "Gossip datagram bytes, by direction.");
	srv_text_printf(o, "cairn_gossip_bytes_total{direction=\"in\"} %llu\n",
			(unsigned long long)ns.bytes_in);
	srv_text_printf(o, "cairn_gossip_bytes_total{direction=\"out\"} %llu\n",
			(unsigned long long)ns.bytes_out);
	const struct {
		const char *reason;
		uint64_t n;
	} drops[] = {
		{ "short", ns.dropped_short },     { "flags", ns.dropped_flags },
		{ "label", ns.dropped_label },     { "plain", ns.dropped_plain },
		{ "crc", ns.dropped_crc },         { "decrypt", ns.dropped_decrypt },
		{ "oversize", ns.dropped_oversize }, { "malformed", gs.malformed },
		{ "queue", gs.queue_dropped },
	};
	head(o, "cairn_gossip_dropped_total", "counter",
	     "Gossip packets or broadcasts dropped, by reason.");
	for (size_t i = 0; i < sizeof drops / sizeof drops[0]; i++)
		srv_text_printf(o, "cairn_gossip_dropped_total{reason=\"%s\"} %llu\n",
				drops[i].reason, (unsigned long long)drops[i].n);
	counter(o, "cairn_gossip_probes_failed_total",
		"Probes that got no ack, directly or through others.", (double)gs.probes_failed);
	counter(o, "cairn_gossip_suspicions_total", "Members this member began to suspect.",
		(double)gs.suspicions);
	counter(o, "cairn_gossip_refutations_total", "Times this member refuted a suspicion of itself.",
		(double)gs.refutations);
	counter(o, "cairn_gossip_pushpulls_total", "Full-state exchanges merged.",
		(double)gs.pushpulls);
}

static void process_metrics(struct srv_member *m, struct srv_text *o)
{
	FILE *f = fopen("/proc/self/stat", "r");
	if (f != NULL) {
		char buf[1024];
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[n] = '\0';
		/* fields after the command's closing parenthesis: state is field 3 */
		char *p = strrchr(buf, ')');
		unsigned long long ut = 0, st = 0;
		long long rss = 0;
		if (p != NULL &&
		    sscanf(p + 2,
			   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d "
			   "%*d %*d %*d %*d %*u %*u %lld",
			   &ut, &st, &rss) == 3) {
			double tck = (double)sysconf(_SC_CLK_TCK);
			counter(o, "process_cpu_seconds_total",
				"CPU time of the process, user and system, in seconds.",
				(double)(ut + st) / tck);
			gauge(o, "process_resident_memory_bytes", "Resident set of the process in bytes.",
			      (double)rss * (double)sysconf(_SC_PAGESIZE));
		}
	}
	DIR *d = opendir("/proc/self/fd");
	if (d != NULL) {
		long n = 0;
		/* bounded by RLIMIT_NOFILE */
		while (readdir(d) != NULL)
			n++;
		closedir(d);
		gauge(o, "process_open_fds", "File descriptors the process has open.", (double)(n - 3));
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		gauge(o, "process_max_fds", "The limit on open file descriptors (RLIMIT_NOFILE).",
		      (double)rl.rlim_cur);
	gauge(o, "process_start_time_seconds",
	      "When the process started, in seconds since the Unix epoch.", m->metrics.start_time);
}

void srv_metrics_render(struct srv_member *m, struct srv_text *o)
{
	struct srv_metrics *mt = &m->metrics;
	struct raft_status rs;
	raft_status(m->raft, &rs);
	gauge(o, "etcd_server_has_leader",
	      "1 while this member knows a leader, else 0.", m->leader != 0);
	gauge(o, "etcd_server_is_leader",
	      "1 while this member leads, else 0.",
	      m->leader != 0 && m->leader == m->id);
	counter(o, "etcd_server_leader_changes_seen_total", "Changes of leader this member has seen since it started.",
		(double)mt->leader_changes);
	gauge(o, "etcd_server_proposals_committed_total",
	      "The Raft commit index as this member knows it.", (double)rs.commit);
	gauge(o, "etcd_server_proposals_applied_total",
	      "The Raft index this member has applied to its store.", (double)m->applied);
	size_t pending = 0;
	/* Cost: one pass over the waiter table (65536 slots) per scrape. */
	for (size_t i = 0; m->waiters != NULL && i < MAX_WAITERS; i++)
		if (m->waiters[i].id != 0 && m->waiters[i].range == NULL)
			pending++;
	gauge(o, "etcd_server_proposals_pending",
	      "Writes proposed by this member and not yet answered.", (double)pending);
	counter(o, "etcd_server_proposals_failed_total",
		"Writes this member proposed that Raft refused or that timed out.",
		(double)mt->proposals_failed);
	head(o, "etcd_server_version", "gauge",
	     "Always 1; the label names the etcd API version served.");
	srv_text_printf(o, "etcd_server_version{server_version=\"%s\"} 1\n", SRV_SERVER_VERSION);
	hist(o, "etcd_disk_wal_fsync_duration_seconds",
	     "Time to append and fdatasync one batch of Raft log entries.", &mt->wal_fsync);
	hist(o, "etcd_disk_backend_commit_duration_seconds",
	     "Time to commit one batch of applied entries to the store.", &mt->backend_commit);
	/* the figures of Maintenance.Status: the file, the file less LMDB's
	 * free pages (later writes reuse them), and the quota */
	struct kv_space sp;
	if (m->installing == 0 && kv_space(m->kv, true, &sp) == 0) {
		gauge(o, "etcd_mvcc_db_total_size_in_bytes",
		      "Size of the store's file in bytes.",
		      (double)sp.file_bytes);
		gauge(o, "etcd_mvcc_db_total_size_in_use_in_bytes",
		      "Bytes of the store's file in use (its size less free pages).",
		      (double)sp.used_bytes);
		gauge(o, "etcd_server_quota_backend_bytes",
		      "The store's quota in bytes (--quota-backend-bytes).", (double)sp.quota_bytes);
	}
	uint64_t in = 0, out = 0;
	for (size_t i = 0; i < m->n_listeners; i++) {
		struct net_grpc_listener_stats ls;
		net_grpc_listener_stats(m->listeners[i], &ls);
		in += ls.bytes_in;
		out += ls.bytes_out;
	}
	counter(o, "etcd_network_client_grpc_received_bytes_total",
		"Bytes received on the client listeners.", (double)in);
	counter(o, "etcd_network_client_grpc_sent_bytes_total",
		"Bytes sent on the client listeners.", (double)out);
	static const char *const gnames[SRV_GAUGE_COUNT][2] = {
		{ "etcd_debugging_mvcc_watch_stream_total", "Watch streams open on this member." },
		{ "etcd_debugging_mvcc_watcher_total", "Watchers on this member's streams." },
		{ "cairn_leases", "Number of leases the store holds." },
	};
	for (int g = 0; g < SRV_GAUGE_COUNT; g++)
		if (mt->gauge_set[g])
			gauge(o, gnames[g][0], gnames[g][1], (double)mt->gauges[g]);
	hist(o, "cairn_apply_batch_entries", "Committed entries applied in one store transaction.",
	     &mt->apply_batch);
	gauge(o, "cairn_raft_term", "The member's current Raft term.", (double)rs.term);
	gauge(o, "cairn_waiting_calls", "Client calls waiting for a commit or a read.",
	      (double)m->n_waiters);
	head(o, "cairn_http_requests_total", "counter",
	     "HTTP/1.1 requests answered on the client port, by status class.");
	for (int c = 1; c <= 5; c++)
		srv_text_printf(o, "cairn_http_requests_total{code=\"%dxx\"} %llu\n", c,
				(unsigned long long)mt->http_requests[c]);
	if (m->gossip != NULL)
		gossip_metrics(m->gossip, o);
	process_metrics(m, o);
}
