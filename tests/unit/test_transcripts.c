/* test_transcripts.c: scenario tests that read like a transcript (style.md
 * item 5, after etcd-io/raft's testdata files and its interaction tests).
 * Every .txt file in tests/unit/testdata is one cmocka test. A file is a sequence
 * of blocks:
 *
 *     # comments and blank lines between blocks are kept as they are
 *     command arg key=value ...
 *     ----
 *     expected output, one or more lines (never blank; "ok" if none)
 *     <blank line or end of file>
 *
 * The runner executes each command on a fresh harness (helpers/harness.h),
 * renders what happened (updates, messages, results) and compares. With
 * CAIRN_REWRITE=1 it writes the actual output into the file instead of
 * failing; READ the diff before committing it. CAIRN_TRANSCRIPT=name runs
 * one file only.
 *
 * Commands (ids are node ids; lists are written (1,2,3)):
 *   add-nodes N [voters=(..)] [learners=(..)] [log=(terms)] [term=T] [vote=V]
 *             [pre-vote=true] [check-quorum=true] [election=E] [heartbeat=H]
 *             [max-msg-bytes=B] [max-inflight=N] [max-uncommitted-bytes=B]
 *             [max-entry-bytes=B] [snapshot-chunk-bytes=B]
 *             [max-snapshot-inflight=N]
 *       Creates and starts the next N ids. With voters= (and learners=) each
 *       store is bootstrapped with that configuration; without, the first
 *       add-nodes bootstraps its own ids as voters and later ones start
 *       empty (members that join). log= preloads entries of these terms
 *       after the bootstrap entries, term=/vote= the hard state.
 *   campaign ID | tick ID [N] | tick-election ID | tick-heartbeat ID
 *   propose ID DATA | propose-conf-change ID add-voter|add-learner|remove M
 *   read-index ID id=N | transfer-leadership ID to=N
 *   report-unreachable ID peer=N
 *   process-ready ID... | ready-send ID | ready-persist ID
 *       ready-send takes the update and sends u.msgs (contract step 1);
 *       ready-persist does steps 2-6.
 *   deliver-msgs [from=N] [to=N] [type=T] [drop=true] | stabilize
 *   isolate ID | cut A B | recover | crash ID | restart ID
 *   compact ID [keep=N]      snapshot of ID's state machine at its applied index
 *   status [ID...] | raft-state | log ID | progress ID | stats ID | sm [ID...]
 *   msgs                     the messages in flight
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* opendir, strtok_r */
#endif

#include "unit.h"

#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CAIRN_TESTDATA_DIR
#define CAIRN_TESTDATA_DIR "tests/unit/testdata"
#endif

#define MAX_ARGS 32

struct cmd {
	char buf[1024];
	char *name;
	char *pos[MAX_ARGS]; /* positional arguments */
	int npos;
	char *key[MAX_ARGS];
	char *val[MAX_ARGS];
	int nkv;
};

struct run {
	struct harness *h;
	struct h_buf out;
	char err[512]; /* a command the runner cannot execute */
};

static void bad(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(struct run *r, const char *fmt, ...)
{
	if (r->err[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->err, sizeof r->err, fmt, ap);
	va_end(ap);
}

static void parse_cmd(struct cmd *c, const char *line)
{
	memset(c, 0, sizeof *c);
	snprintf(c->buf, sizeof c->buf, "%s", line);
	char *save = NULL;
	for (char *t = strtok_r(c->buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
		if (!c->name) {
			c->name = t;
			continue;
		}
		char *eq = strchr(t, '=');
		if (eq && c->nkv < MAX_ARGS) {
			*eq = '\0';
			c->key[c->nkv] = t;
			c->val[c->nkv] = eq + 1;
			c->nkv++;
		} else if (c->npos < MAX_ARGS) {
			c->pos[c->npos++] = t;
		}
	}
}

static const char *kv(const struct cmd *c, const char *key)
{
	for (int i = 0; i < c->nkv; i++)
		if (strcmp(c->key[i], key) == 0)
			return c->val[i];
	return NULL;
}

static uint64_t num(struct run *r, const char *s)
{
	char *end = NULL;
	if (!s || !*s) {
		bad(r, "missing number");
		return 0;
	}
	unsigned long long v = strtoull(s, &end, 10);
	if (*end) {
		bad(r, "not a number: %s", s);
		return 0;
	}
	return (uint64_t)v;
}

static uint64_t kvnum(struct run *r, const struct cmd *c, const char *key, uint64_t dflt)
{
	const char *v = kv(c, key);
	return v ? num(r, v) : dflt;
}

static bool kvbool(const struct cmd *c, const char *key)
{
	const char *v = kv(c, key);
	return v && strcmp(v, "true") == 0;
}

/* "(1,2,3)" into out; returns the count. */
static size_t list(struct run *r, const char *s, uint64_t *out, size_t cap)
{
	size_t n = 0;
	if (!s)
		return 0;
	if (*s != '(') {
		bad(r, "not a list: %s", s);
		return 0;
	}
	s++;
	while (*s && *s != ')') {
		char *end;
		unsigned long long v = strtoull(s, &end, 10);
		if (end == s) {
			bad(r, "bad list element in %s", s);
			return n;
		}
		if (n < cap)
			out[n++] = v;
		s = end;
		if (*s == ',')
			s++;
	}
	return n;
}

static uint64_t id_arg(struct run *r, const struct cmd *c, int i)
{
	if (i >= c->npos) {
		bad(r, "%s: missing node id", c->name);
		return 1;
	}
	uint64_t id = num(r, c->pos[i]);
	if (id < 1 || id > H_MAX_ID || !r->h->nodes[id].exists) {
		bad(r, "%s: no node %s", c->name, c->pos[i]);
		return 1;
	}
	return id;
}

static bool running_arg(struct run *r, const struct cmd *c, int i, uint64_t *id)
{
	*id = id_arg(r, c, i);
	if (r->err[0])
		return false;
	if (!r->h->nodes[*id].running) {
		bad(r, "%s: node %" PRIu64 " is down", c->name, *id);
		return false;
	}
	return true;
}

static void result(struct run *r, int rc)
{
	if (rc != 0)
		h_buf_printf(&r->out, "error: %s (%s)\n", h_errname(rc), raft_strerror(rc));
}

/* ---- Commands. ------------------------------------------------------------- */

static void cmd_add_nodes(struct run *r, const struct cmd *c)
{
	struct harness *h = r->h;
	uint64_t n = c->npos ? num(r, c->pos[0]) : 0;
	uint64_t first = 1;
	bool any = false;
	for (uint64_t id = 1; id <= H_MAX_ID; id++)
		if (h->nodes[id].exists) {
			first = id + 1;
			any = true;
		}
	if (n == 0 || first + n - 1 > H_MAX_ID) {
		bad(r, "add-nodes: bad count");
		return;
	}
	uint64_t voters[RAFT_MAX_MEMBERS], learners[RAFT_MAX_MEMBERS], terms[32];
	size_t nv = list(r, kv(c, "voters"), voters, RAFT_MAX_MEMBERS);
	size_t nl = list(r, kv(c, "learners"), learners, RAFT_MAX_MEMBERS);
	size_t nt = list(r, kv(c, "log"), terms, 32);
	bool bootstrap = kv(c, "voters") != NULL || !any;
	struct raft_conf conf;
	memset(&conf, 0, sizeof conf);
	if (kv(c, "voters")) {
		for (size_t i = 0; i < nv; i++)
			h_conf_add(&conf, voters[i], RAFT_VOTER);
		for (size_t i = 0; i < nl; i++)
			h_conf_add(&conf, learners[i], RAFT_LEARNER);
	} else if (!any) {
		for (uint64_t id = first; id < first + n; id++)
			h_conf_add(&conf, id, RAFT_VOTER);
	}
	struct h_opts o;
	memset(&o, 0, sizeof o);
	o.pre_vote = kvbool(c, "pre-vote");
	o.check_quorum = kvbool(c, "check-quorum");
	o.election_ticks = (uint32_t)kvnum(r, c, "election", 0);
	o.heartbeat_ticks = (uint32_t)kvnum(r, c, "heartbeat", 0);
	o.max_msg_bytes = kvnum(r, c, "max-msg-bytes", 0);
	o.max_inflight_msgs = (uint32_t)kvnum(r, c, "max-inflight", 0);
	o.max_uncommitted_bytes = kvnum(r, c, "max-uncommitted-bytes", 0);
	o.max_entry_bytes = (uint32_t)kvnum(r, c, "max-entry-bytes", 0);
	o.snapshot_chunk_bytes = (uint32_t)kvnum(r, c, "snapshot-chunk-bytes", 0);
	o.max_snapshot_inflight = (uint32_t)kvnum(r, c, "max-snapshot-inflight", 0);
	uint64_t term = kvnum(r, c, "term", 0), vote = kvnum(r, c, "vote", 0);
	if (r->err[0])
		return;
	for (uint64_t id = first; id < first + n; id++) {
		h_node_init(h, id, bootstrap ? &conf : NULL);
		if (nt || term)
			h_node_preload(h, id, terms, nt, term, vote);
		int rc = h_node_start(h, id, &o);
		if (rc != 0) {
			result(r, rc);
			continue;
		}
		h_render_status(&r->out, h_raft(h, id));
		h_buf_printf(&r->out, "\n");
	}
}

static const char *cc_names[] = {NULL, "add-voter", "add-learner", "remove"};

static void cmd_propose_cc(struct run *r, const struct cmd *c)
{
	uint64_t id;
	if (!running_arg(r, c, 0, &id))
		return;
	if (c->npos < 3) {
		bad(r, "propose-conf-change ID TYPE MEMBER");
		return;
	}
	struct raft_conf_change cc = {0};
	for (uint32_t t = 1; t <= 3; t++)
		if (strcmp(c->pos[1], cc_names[t]) == 0)
			cc.type = t;
	if (!cc.type) {
		bad(r, "unknown change %s", c->pos[1]);
		return;
	}
	cc.id = num(r, c->pos[2]);
	uint64_t index = 0;
	int rc = raft_propose_conf_change(h_raft(r->h, id), &cc, &index);
	result(r, rc);
	if (rc == 0)
		h_buf_printf(&r->out, "index=%" PRIu64 "\n", index);
}

static void cmd_log(struct run *r, const struct cmd *c)
{
	uint64_t id = id_arg(r, c, 0);
	if (r->err[0])
		return;
	struct h_node *n = h_node(r->h, id);
	struct raft_storage s = raft_memstore_storage(n->ms);
	struct raft_hard_state hs;
	raft_memstore_hard_state(n->ms, &hs);
	h_buf_printf(&r->out, "hard-state term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64 "\n",
		     hs.term, hs.vote, hs.commit);
	struct raft_snapshot_meta meta;
	if (s.snapshot(s.ctx, &meta) == 0 && meta.index > 0) {
		h_buf_printf(&r->out, "snapshot index=%" PRIu64 " term=%" PRIu64 " size=%" PRIu64 " ",
			     meta.index, meta.term, meta.size);
		h_render_conf(&r->out, &meta.conf);
		h_buf_printf(&r->out, "\n");
	}
	uint64_t first = s.first_index(s.ctx), last = s.last_index(s.ctx);
	if (last < first)
		h_buf_printf(&r->out, "no entries\n");
	for (uint64_t i = first; i <= last; i++) {
		struct raft_entry e;
		if (!h_log_entry(r->h, id, i, &e)) {
			h_buf_printf(&r->out, "?/%" PRIu64 " unreadable\n", i);
			continue;
		}
		h_render_entry(&r->out, &e);
		h_buf_printf(&r->out, "\n");
	}
}

static void cmd_progress(struct run *r, const struct cmd *c)
{
	uint64_t id;
	if (!running_arg(r, c, 0, &id))
		return;
	struct raft_progress_info pi[RAFT_MAX_MEMBERS];
	uint32_t n = raft_progress(h_raft(r->h, id), pi, RAFT_MAX_MEMBERS);
	if (n == 0)
		h_buf_printf(&r->out, "not the leader\n");
	for (uint32_t i = 0; i < n; i++)
		h_buf_printf(&r->out,
			     "%" PRIu64 ": %s match=%" PRIu64 " next=%" PRIu64 " inflight=%" PRIu32
			     "%s\n",
			     pi[i].id, h_progress_name(pi[i].state), pi[i].match, pi[i].next,
			     pi[i].inflight, pi[i].recent_active ? " active" : "");
}

static void cmd_stats(struct run *r, const struct cmd *c)
{
	uint64_t id;
	if (!running_arg(r, c, 0, &id))
		return;
	const struct raft_stats *s = h_stats(r->h, id);
	h_buf_printf(&r->out,
		     "received=%" PRIu64 " unknown_member=%" PRIu64 " stale_term=%" PRIu64
		     " malformed=%" PRIu64 " unexpected=%" PRIu64 " snapshot=%" PRIu64 "\n"
		     "proposals_dropped=%" PRIu64 " elections=%" PRIu64 " leader_changes=%" PRIu64
		     " snapshots_sent=%" PRIu64 " snapshots_installed=%" PRIu64 "\n",
		     s->msgs_received, s->dropped_unknown_member, s->dropped_stale_term,
		     s->dropped_malformed, s->dropped_unexpected, s->dropped_snapshot,
		     s->proposals_dropped, s->elections_started, s->leader_changes,
		     s->snapshots_sent, s->snapshots_installed);
}

static void for_ids(struct run *r, const struct cmd *c, void (*fn)(struct run *, uint64_t))
{
	if (c->npos == 0) {
		for (uint64_t id = 1; id <= H_MAX_ID; id++)
			if (r->h->nodes[id].exists)
				fn(r, id);
		return;
	}
	for (int i = 0; i < c->npos && !r->err[0]; i++)
		fn(r, id_arg(r, c, i));
}

static void one_status(struct run *r, uint64_t id)
{
	if (!r->h->nodes[id].running) {
		h_buf_printf(&r->out, "%" PRIu64 ": down\n", id);
		return;
	}
	h_render_status(&r->out, h_raft(r->h, id));
	h_buf_printf(&r->out, "\n");
}

static void one_state(struct run *r, uint64_t id)
{
	if (!r->h->nodes[id].running) {
		h_buf_printf(&r->out, "%" PRIu64 ": down\n", id);
		return;
	}
	struct raft_status st;
	h_status(r->h, id, &st);
	uint32_t role = raft_conf_role(&st.conf, id);
	h_buf_printf(&r->out, "%" PRIu64 ": %s term=%" PRIu64 " leader=%" PRIu64 " %s\n", id,
		     h_state_name(st.state), st.term, st.leader,
		     role == RAFT_VOTER ? "(voter)" : role == RAFT_LEARNER ? "(learner)" : "(none)");
}

static void one_sm(struct run *r, uint64_t id)
{
	const struct h_node *n = &r->h->nodes[id];
	h_buf_printf(&r->out, "%" PRIu64 ": applied=%" PRIu64 " [%s]\n", id, n->applied,
		     h_buf_str(&n->sm));
}

static void cmd_deliver(struct run *r, const struct cmd *c)
{
	uint64_t from = kvnum(r, c, "from", 0), to = kvnum(r, c, "to", 0);
	uint32_t type = 0;
	if (kv(c, "type")) {
		type = h_msg_type_parse(kv(c, "type"));
		if (!type)
			bad(r, "unknown message type %s", kv(c, "type"));
	}
	if (r->err[0])
		return;
	size_t n = kvbool(c, "drop") ? h_drop(r->h, from, to, type) : h_deliver(r->h, from, to, type);
	if (n == 0)
		h_buf_printf(&r->out, "no messages\n");
}

static void run_cmd(struct run *r, const struct cmd *c)
{
	struct harness *h = r->h;
	const char *nm = c->name;
	uint64_t id;
	if (strcmp(nm, "add-nodes") == 0) {
		cmd_add_nodes(r, c);
	} else if (strcmp(nm, "campaign") == 0) {
		if (running_arg(r, c, 0, &id))
			result(r, raft_campaign(h_raft(h, id)));
	} else if (strcmp(nm, "tick") == 0) {
		if (running_arg(r, c, 0, &id))
			h_tick(h, id, c->npos > 1 ? (uint32_t)num(r, c->pos[1]) : 1);
	} else if (strcmp(nm, "tick-election") == 0) {
		if (running_arg(r, c, 0, &id))
			h_tick_election(h, id);
	} else if (strcmp(nm, "tick-heartbeat") == 0) {
		if (running_arg(r, c, 0, &id))
			h_tick_heartbeat(h, id);
	} else if (strcmp(nm, "propose") == 0) {
		if (running_arg(r, c, 0, &id)) {
			uint64_t index = 0;
			int rc = h_propose(h, id, c->npos > 1 ? c->pos[1] : "", &index);
			result(r, rc);
			if (rc == 0 && index)
				h_buf_printf(&r->out, "index=%" PRIu64 "\n", index);
			else if (rc == 0)
				h_buf_printf(&r->out, "forwarded\n");
		}
	} else if (strcmp(nm, "propose-conf-change") == 0) {
		cmd_propose_cc(r, c);
	} else if (strcmp(nm, "read-index") == 0) {
		if (running_arg(r, c, 0, &id))
			result(r, raft_read_index(h_raft(h, id), kvnum(r, c, "id", 0)));
	} else if (strcmp(nm, "transfer-leadership") == 0) {
		if (running_arg(r, c, 0, &id))
			result(r, raft_transfer_leadership(h_raft(h, id), kvnum(r, c, "to", 0)));
	} else if (strcmp(nm, "report-unreachable") == 0) {
		if (running_arg(r, c, 0, &id))
			raft_report_unreachable(h_raft(h, id), kvnum(r, c, "peer", 0));
	} else if (strcmp(nm, "process-ready") == 0) {
		for (int i = 0; i < c->npos && !r->err[0]; i++)
			if (running_arg(r, c, i, &id) && !h_process_ready(h, id))
				h_buf_printf(&r->out, "> %" PRIu64 " no update\n", id);
	} else if (strcmp(nm, "ready-send") == 0) {
		if (running_arg(r, c, 0, &id) && !h_ready_begin(h, id))
			h_buf_printf(&r->out, "> %" PRIu64 " no update\n", id);
	} else if (strcmp(nm, "ready-persist") == 0) {
		if (running_arg(r, c, 0, &id)) {
			if (!h_node(h, id)->pending)
				bad(r, "ready-persist %" PRIu64 ": no update taken", id);
			else
				h_ready_finish(h, id);
		}
	} else if (strcmp(nm, "deliver-msgs") == 0) {
		cmd_deliver(r, c);
	} else if (strcmp(nm, "stabilize") == 0) {
		h_stabilize(h);
	} else if (strcmp(nm, "isolate") == 0) {
		h_isolate(h, id_arg(r, c, 0));
	} else if (strcmp(nm, "cut") == 0) {
		h_cut(h, id_arg(r, c, 0), id_arg(r, c, 1));
	} else if (strcmp(nm, "recover") == 0) {
		h_recover(h);
	} else if (strcmp(nm, "crash") == 0) {
		if (running_arg(r, c, 0, &id))
			h_crash(h, id);
	} else if (strcmp(nm, "restart") == 0) {
		id = id_arg(r, c, 0);
		if (!r->err[0])
			result(r, h_restart(h, id));
	} else if (strcmp(nm, "compact") == 0) {
		if (running_arg(r, c, 0, &id)) {
			int rc = h_compact(h, id, kvnum(r, c, "keep", 0));
			result(r, rc);
			if (rc == 0)
				cmd_log(r, c);
		}
	} else if (strcmp(nm, "status") == 0) {
		for_ids(r, c, one_status);
	} else if (strcmp(nm, "raft-state") == 0) {
		for_ids(r, c, one_state);
	} else if (strcmp(nm, "sm") == 0) {
		for_ids(r, c, one_sm);
	} else if (strcmp(nm, "log") == 0) {
		cmd_log(r, c);
	} else if (strcmp(nm, "progress") == 0) {
		cmd_progress(r, c);
	} else if (strcmp(nm, "stats") == 0) {
		cmd_stats(r, c);
	} else if (strcmp(nm, "msgs") == 0) {
		if (h->nq == 0)
			h_buf_printf(&r->out, "no messages\n");
		for (size_t i = 0; i < h->nq; i++) {
			h_render_msg(&r->out, &h->q[i].m);
			h_buf_printf(&r->out, "\n");
		}
	} else {
		bad(r, "unknown command %s", nm);
	}
}

/* ---- Files. ------------------------------------------------------------------ */

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	struct h_buf b = {0};
	char chunk[4096];
	size_t n;
	h_buf_printf(&b, "%s", "");
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		h_buf_printf(&b, "%.*s", (int)n, chunk);
	fclose(f);
	return b.s;
}

/* The actual output, normalised: no trailing newline, no blank line. */
static void normalise(struct h_buf *dst, const char *src)
{
	h_buf_reset(dst);
	const char *p = src;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\r'))
			len--;
		h_buf_printf(dst, "%s%.*s", dst->len ? "\n" : "", len ? (int)len : 1,
			     len ? p : ".");
		p = nl ? nl + 1 : p + len;
	}
	if (dst->len == 0)
		h_buf_printf(dst, "ok");
}

static void run_file(void **state)
{
	const char *path = *state;
	bool rewrite = getenv("CAIRN_REWRITE") && strcmp(getenv("CAIRN_REWRITE"), "1") == 0;
	char *text = read_all(path);
	if (!text)
		fail_msg("cannot read %s", path);
	struct run r = {0};
	r.h = h_new();
	r.h->out = &r.out;
	struct h_buf newfile = {0}, actual = {0}, expected = {0};
	h_buf_printf(&newfile, "%s", "");
	bool mismatch = false;
	char *p = text;
	int lineno = 0;
	/* Split into lines by hand: blank lines matter. */
	while (*p) {
		char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char line[1024];
		snprintf(line, sizeof line, "%.*s", (int)len, p);
		p = nl ? nl + 1 : p + len;
		lineno++;
		if (line[0] == '\0' || line[0] == '#') {
			h_buf_printf(&newfile, "%s\n", line);
			continue;
		}
		int cmd_line = lineno;
		/* the separator */
		char sep[64] = "";
		if (*p) {
			nl = strchr(p, '\n');
			len = nl ? (size_t)(nl - p) : strlen(p);
			snprintf(sep, sizeof sep, "%.*s", (int)len, p);
			p = nl ? nl + 1 : p + len;
			lineno++;
		}
		if (strcmp(sep, "----") != 0) {
			h_free(r.h);
			fail_msg("%s:%d: expected ---- after the command", path, cmd_line);
		}
		h_buf_reset(&expected);
		while (*p && *p != '\n') {
			nl = strchr(p, '\n');
			len = nl ? (size_t)(nl - p) : strlen(p);
			h_buf_printf(&expected, "%s%.*s", expected.len ? "\n" : "", (int)len, p);
			p = nl ? nl + 1 : p + len;
			lineno++;
		}
		struct cmd c;
		parse_cmd(&c, line);
		h_buf_reset(&r.out);
		if (c.name)
			run_cmd(&r, &c);
		if (r.err[0]) {
			h_free(r.h);
			fail_msg("%s:%d: %s: %s", path, cmd_line, line, r.err);
		}
		normalise(&actual, h_buf_str(&r.out));
		h_buf_printf(&newfile, "%s\n----\n%s\n", line, h_buf_str(&actual));
		if (!mismatch && strcmp(h_buf_str(&actual), h_buf_str(&expected)) != 0) {
			mismatch = true;
			if (!rewrite) {
				print_error("%s:%d: %s\n--- expected\n%s\n--- actual\n%s\n---\n", path,
					    cmd_line, line, h_buf_str(&expected), h_buf_str(&actual));
				break;
			}
		}
	}
	if (rewrite && mismatch) {
		FILE *f = fopen(path, "wb");
		assert_non_null(f);
		fwrite(newfile.s, 1, newfile.len, f);
		fclose(f);
		print_message("rewrote %s\n", path);
	}
	h_free(r.h);
	h_buf_free(&r.out);
	h_buf_free(&newfile);
	h_buf_free(&actual);
	h_buf_free(&expected);
	free(text);
	if (mismatch && !rewrite)
		fail_msg("%s: output differs (CAIRN_REWRITE=1 rewrites it)", path);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
	const char *dir = CAIRN_TESTDATA_DIR;
	const char *only = getenv("CAIRN_TRANSCRIPT");
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "cannot open %s\n", dir);
		return 1;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (len < 5 || strcmp(de->d_name + len - 4, ".txt") != 0)
			continue;
		if (only && strstr(de->d_name, only) == NULL)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			names = realloc(names, cap * sizeof *names);
		}
		size_t sz = strlen(dir) + len + 2;
		names[n] = malloc(sz);
		snprintf(names[n], sz, "%s/%s", dir, de->d_name);
		n++;
	}
	closedir(d);
	if (n == 0) {
		fprintf(stderr, "no transcripts in %s\n", dir);
		return 1;
	}
	qsort(names, n, sizeof *names, by_name);
	struct CMUnitTest *tests = calloc(n, sizeof *tests);
	for (size_t i = 0; i < n; i++) {
		tests[i].name = strrchr(names[i], '/') + 1;
		tests[i].test_func = run_file;
		tests[i].initial_state = names[i];
	}
	int rc = _cmocka_run_group_tests("transcripts", tests, n, NULL, NULL);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(tests);
	return rc;
}
