/* cluster.c: cairn-bench's cluster launcher and fault injector (cluster.h). Members are child
 * processes started with fork/execv and tracked by pid; the leader is found over the HTTP/1.1
 * JSON gateway both Cairn and etcd 3.4 serve; network faults use Linux network namespaces,
 * veth pairs and a bridge driven through iproute2 (`ip`, `tc`). */
#define _GNU_SOURCE /* setns, prctl, gettid, getifaddrs, pipe2, close_range */

#include "cluster.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CL_ARGV_MAX 96                   /* arguments of one member, extra flags included */
#define CL_NAME_MAX 8                    /* "m1" .. "m7" */
#define CL_URL_MAX 96                    /* "http://255.255.255.255:65535" and room */
#define CL_CMD_ARGV 16                   /* arguments of one prepared ip/rm command */
#define CL_CMDS (CL_MAX_MEMBERS * 2 + 2) /* veth and netns per member, bridge, rm */
#define CL_HTTP_IN_MAX 16384             /* bytes of one gateway answer we read (status is ~300) */
#define CL_POLL_NS 10000000LL            /* the schedule's leader poll: every 10 ms */
#define CL_WATCH_NS 30000000000LL        /* a leader watch gives up after 30 s */
#define CL_MAX_LIVE 16                   /* clusters alive at once in one process */
#define CL_NETNS_DIR "/var/run/netns"
#define CL_NETEM_MISSING "tc netem is not available on this kernel (sch_netem missing)"

_Static_assert(CL_MAX_MEMBERS <= 9, "member names are m1 .. m9");

static const char *const default_binary[] = { "build/bin/cairn", "/usr/bin/etcd" };

/* --- Small helpers ---------------------------------------------------------------------------- */

const char *cl_strerror(int code)
{
	switch (code) {
#define CL_X(name, value, text) \
	case value:             \
		return text;
		CL_ERRNO_MAP(CL_X)
#undef CL_X
	case 0:
		return "success";
	default:
		return "unknown error";
	}
}

int64_t cl_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
	if (ns <= 0)
		return;
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000LL),
			       .tv_nsec = (long)(ns % 1000000000LL) };
	/* One interruption is enough to return: callers loop on a deadline. */
	nanosleep(&ts, NULL);
}

__attribute__((format(printf, 3, 4))) static int fmt_err(char *err, size_t errlen, const char *fmt,
							 ...)
{
	if (err == NULL || errlen == 0)
		return 0;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return n;
}

/* Copies src into dst[cap]; CL_EINVAL if it does not fit. */
static int copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);
	if (n >= cap)
		return CL_EINVAL;
	memcpy(dst, src, n + 1);
	return 0;
}

/* Copies as much of src as fits into dst[cap] (cap > 0). */
static void copy_trunc(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* snprintf through a buffer of its own: the arguments may live in the same struct as dst,
 * which snprintf's restrict parameters forbid. Truncates to cap. */
__attribute__((format(printf, 3, 4))) static void fmt_into(char *dst, size_t cap, const char *fmt,
							   ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		buf[0] = '\0';
	copy_trunc(dst, cap, buf);
}

static char *trim(char *s)
{
	while (*s != '\0' && isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
	if (s == NULL || *s == '\0')
		return CL_EINVAL;
	char *end = NULL;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return CL_EINVAL;
	*out = v;
	return 0;
}

static int parse_bool(const char *s, int *out)
{
	static const char *const yes[] = { "on", "true", "yes", "1" };
	static const char *const no[] = { "off", "false", "no", "0" };
	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return CL_EINVAL;
}

/* --- The spec --------------------------------------------------------------------------------- */

const char *cl_system_name(enum cl_system s)
{
	return s == CL_SYS_ETCD ? "etcd" : "cairn";
}

void cl_spec_init(struct cl_spec *s)
{
	memset(s, 0, sizeof *s);
	s->system = CL_SYS_CAIRN;
	s->members = 3;
	memcpy(s->host, "127.0.0.1", sizeof "127.0.0.1");
	s->heartbeat_ms = 100;
	s->election_ms = 1000;
	s->start_timeout_ms = 30000;
}

#define CL_SPEC_KEYS                                                                              \
	"system, binary, members, host, base_port, heartbeat_ms, election_ms, dir, keep, netns, " \
	"start_timeout_ms, cairn_flags, etcd_flags, extra"

int cl_spec_set(struct cl_spec *s, const char *key, const char *value, char *err, size_t errlen)
{
	long v = 0;
	if (key == NULL || value == NULL) {
		fmt_err(err, errlen, "spec: missing key or value");
		return CL_EINVAL;
	}
	if (strcmp(key, "system") == 0) {
		if (strcmp(value, "cairn") == 0)
			s->system = CL_SYS_CAIRN;
		else if (strcmp(value, "etcd") == 0)
			s->system = CL_SYS_ETCD;
		else
			goto bad_value;
		return 0;
	}
	if (strcmp(key, "binary") == 0 || strcmp(key, "dir") == 0) {
		char *dst = key[0] == 'b' ? s->binary : s->dir;
		if (copy_str(dst, CL_PATH_MAX, value) != 0) {
			fmt_err(err, errlen, "spec: %s: longer than %d bytes", key,
				CL_PATH_MAX - 1);
			return CL_EINVAL;
		}
		return 0;
	}
	if (strcmp(key, "members") == 0) {
		if (parse_long(value, 1, CL_MAX_MEMBERS, &v) != 0)
			goto bad_value;
		s->members = (int)v;
		return 0;
	}
	if (strcmp(key, "host") == 0) {
		struct in_addr a;
		if (strlen(value) >= CL_HOST_MAX || inet_pton(AF_INET, value, &a) != 1)
			goto bad_value;
		memcpy(s->host, value, strlen(value) + 1);
		return 0;
	}
	if (strcmp(key, "base_port") == 0) {
		if (parse_long(value, 0, 65535, &v) != 0)
			goto bad_value;
		s->base_port = (int)v;
		return 0;
	}
	if (strcmp(key, "heartbeat_ms") == 0) {
		if (parse_long(value, 1, 10000, &v) != 0)
			goto bad_value;
		s->heartbeat_ms = (int)v;
		return 0;
	}
	if (strcmp(key, "election_ms") == 0) {
		if (parse_long(value, 2, 60000, &v) != 0)
			goto bad_value;
		s->election_ms = (int)v;
		return 0;
	}
	if (strcmp(key, "start_timeout_ms") == 0) {
		if (parse_long(value, 100, 600000, &v) != 0)
			goto bad_value;
		s->start_timeout_ms = (int)v;
		return 0;
	}
	if (strcmp(key, "keep") == 0 || strcmp(key, "netns") == 0) {
		int b = 0;
		if (parse_bool(value, &b) != 0)
			goto bad_value;
		if (key[0] == 'k')
			s->keep = b;
		else
			s->netns = b;
		return 0;
	}
	if (strcmp(key, "cairn_flags") == 0 || strcmp(key, "etcd_flags") == 0 ||
	    strcmp(key, "extra") == 0) {
		char *dst = s->extra_cairn;
		if (key[0] == 'e' && key[1] == 't')
			dst = s->extra_etcd;
		else if (key[0] == 'e' && s->system == CL_SYS_ETCD)
			dst = s->extra_etcd;
		if (copy_str(dst, CL_EXTRA_MAX, value) != 0) {
			fmt_err(err, errlen, "spec: %s: longer than %d bytes", key,
				CL_EXTRA_MAX - 1);
			return CL_EINVAL;
		}
		return 0;
	}
	fmt_err(err, errlen, "spec: unknown key '%s' (known: " CL_SPEC_KEYS ")", key);
	return CL_EINVAL;

bad_value:
	if (strcmp(key, "system") == 0)
		fmt_err(err, errlen, "spec: system: '%s' is not cairn or etcd", value);
	else if (strcmp(key, "members") == 0)
		fmt_err(err, errlen, "spec: members: '%s' is not a number from 1 to %d", value,
			CL_MAX_MEMBERS);
	else if (strcmp(key, "host") == 0)
		fmt_err(err, errlen, "spec: host: '%s' is not a numeric IPv4 address", value);
	else if (strcmp(key, "base_port") == 0)
		fmt_err(err, errlen, "spec: base_port: '%s' is not 0 (pick free ports) or a port",
			value);
	else if (strcmp(key, "keep") == 0 || strcmp(key, "netns") == 0)
		fmt_err(err, errlen, "spec: %s: '%s' is not on/off, true/false, yes/no or 1/0", key,
			value);
	else if (strcmp(key, "heartbeat_ms") == 0)
		fmt_err(err, errlen,
			"spec: heartbeat_ms: '%s' is not a number of ms from 1 to 10000", value);
	else if (strcmp(key, "election_ms") == 0)
		fmt_err(err, errlen,
			"spec: election_ms: '%s' is not a number of ms from 2 to 60000", value);
	else
		fmt_err(err, errlen, "spec: %s: '%s' is not a number of ms from 100 to 600000", key,
			value);
	return CL_EINVAL;
}

int cl_spec_check(const struct cl_spec *s, char *err, size_t errlen)
{
	if (s->members < 1 || s->members > CL_MAX_MEMBERS) {
		fmt_err(err, errlen, "spec: members must be 1 to %d, not %d", CL_MAX_MEMBERS,
			s->members);
		return CL_EINVAL;
	}
	if (s->heartbeat_ms < 1 || s->election_ms <= s->heartbeat_ms) {
		fmt_err(err, errlen,
			"spec: election_ms (%d) must be larger than heartbeat_ms (%d), both positive",
			s->election_ms, s->heartbeat_ms);
		return CL_EINVAL;
	}
	int span = s->system == CL_SYS_CAIRN ? 200 : 100;
	if (s->base_port != 0 && (s->base_port < 1 || s->base_port + span + s->members > 65536)) {
		fmt_err(err, errlen,
			"spec: base_port %d: ports base..base+%d must be below 65536 (0 picks free "
			"ports)",
			s->base_port, span + s->members - 1);
		return CL_EINVAL;
	}
	struct in_addr a;
	if (!s->netns && inet_pton(AF_INET, s->host, &a) != 1) {
		fmt_err(err, errlen, "spec: host '%s' is not a numeric IPv4 address", s->host);
		return CL_EINVAL;
	}
	if (s->start_timeout_ms < 100) {
		fmt_err(err, errlen, "spec: start_timeout_ms must be at least 100");
		return CL_EINVAL;
	}
	if (s->netns && geteuid() != 0) {
		fmt_err(err, errlen,
			"spec: netns = on needs root (it creates network namespaces, veth pairs "
			"and a bridge)");
		return CL_EINVAL;
	}
	return 0;
}

int cl_spec_parse_file(const char *path, struct cl_spec *s, char *err, size_t errlen)
{
	char e[CL_ERR_MAX];
	cl_spec_init(s);
	FILE *f = fopen(path, "re");
	if (f == NULL) {
		fmt_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return CL_ESYS;
	}
	char line[2048];
	int rc = 0, lineno = 0;
	while (fgets(line, sizeof line, f) != NULL) {
		lineno++;
		if (lineno > 256) {
			fmt_err(err, errlen, "%s: more than 256 lines", path);
			rc = CL_EINVAL;
			break;
		}
		size_t len = strlen(line);
		if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(f)) {
			fmt_err(err, errlen, "%s:%d: line longer than %zu bytes", path, lineno,
				sizeof line - 2);
			rc = CL_EINVAL;
			break;
		}
		char *t = trim(line);
		if (*t == '\0' || *t == '#')
			continue;
		char *eq = strchr(t, '=');
		if (eq == NULL) {
			fmt_err(err, errlen, "%s:%d: expected \"key = value\", got '%.80s'", path,
				lineno, t);
			rc = CL_EINVAL;
			break;
		}
		*eq = '\0';
		char *key = trim(t), *value = trim(eq + 1);
		size_t vl = strlen(value);
		if (vl >= 2 && ((value[0] == '"' && value[vl - 1] == '"') ||
				(value[0] == '\'' && value[vl - 1] == '\''))) {
			value[vl - 1] = '\0';
			value++;
		}
		if (*key == '\0') {
			fmt_err(err, errlen, "%s:%d: empty key before '='", path, lineno);
			rc = CL_EINVAL;
			break;
		}
		if ((rc = cl_spec_set(s, key, value, e, sizeof e)) != 0) {
			/* e starts with "spec: "; name the place instead. */
			fmt_err(err, errlen, "%s:%d: %s", path, lineno,
				strncmp(e, "spec: ", 6) == 0 ? e + 6 : e);
			break;
		}
	}
	if (rc == 0 && ferror(f)) {
		fmt_err(err, errlen, "%s: read error: %s", path, strerror(errno));
		rc = CL_ESYS;
	}
	fclose(f);
	if (rc == 0 && (rc = cl_spec_check(s, e, sizeof e)) != 0)
		fmt_err(err, errlen, "%s: %s", path, strncmp(e, "spec: ", 6) == 0 ? e + 6 : e);
	return rc;
}

/* --- The cluster ------------------------------------------------------------------------------ */

/* A command prepared in advance (ip, tc, rm): argv points into buf. */
struct cl_cmd {
	char buf[640];
	char *argv[CL_CMD_ARGV + 1];
};

struct cl_member {
	char name[CL_NAME_MAX];
	char ip[CL_HOST_MAX];
	int client_port, peer_port, gossip_port;
	char endpoint[CL_URL_MAX];
	char peer_url[CL_URL_MAX];
	char log_path[CL_PATH_MAX + 32];
	char *argv[CL_ARGV_MAX + 1]; /* strdup'ed, argv[0] is the binary */
	pid_t pid;
	enum cl_member_state state;
	int partitioned;
	int netem;
	uint64_t id;
	int exit_status; /* the last wait status of an exit we did not cause, -1 none */
	char ns[48];     /* network namespace, netns only */
	char veth_host[16], veth_ns[16];
};

struct cl_event_slot {
	struct cl_event ev;
	int watching;    /* waiting for a leader */
	int watch_not;   /* the leader must differ from this member (-1: any leader) */
	int undo_member; /* the member the +duration undo acts on */
};

struct cl_cluster {
	struct cl_spec spec;
	pid_t owner; /* the process that created it: only it cleans up */
	pthread_t creator;
	int n;
	int started, stopped, emerg_done;
	int removed_dir;
	char dir[CL_PATH_MAX];
	char token[64];
	char endpoints[CL_MAX_MEMBERS * CL_URL_MAX];
	char err[CL_ERR_MAX];
	struct cl_member m[CL_MAX_MEMBERS];
	int last_killed;
	int claimed_base; /* ports claimed in the shared directory (port_claim), 0 none */

	/* netns */
	char ip_bin[64], tc_bin[64];
	int subnet; /* X of 10.213.X.0/24, -1 none */
	char bridge[16];
	int bridge_made;
	int ns_made[CL_MAX_MEMBERS];
	int netem_missing;
	/* Teardown commands prepared at creation for cl_emergency_cleanup: the namespaces and the
	 * bridge (ncmd_net of them), then rm -rf of the data dir. */
	struct cl_cmd cmds[CL_CMDS];
	int ncmd_net;
	int have_rm;

	/* the schedule */
	pthread_mutex_t mu; /* guards ev, nev, cancel */
	pthread_t thr;
	int sched_running;
	int cancel;
	int sched_rc;
	int64_t t0;
	int nf;
	struct cl_fault faults[CL_MAX_FAULTS];
	struct cl_event_slot ev[CL_MAX_FAULTS];
	int nev;
	int ev_of[CL_MAX_FAULTS]; /* fault index -> slot, -1 not applied */
};

static struct cl_cluster *_Atomic g_live[CL_MAX_LIVE];
static pthread_once_t g_atexit_once = PTHREAD_ONCE_INIT;
static void atexit_handler(void)
{
	cl_emergency_cleanup();
}
static void register_atexit(void)
{
	atexit(atexit_handler);
}

__attribute__((format(printf, 3, 4))) static int seterr(struct cl_cluster *c, int code,
							const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof c->err, fmt, ap);
	va_end(ap);
	return code;
}

static int valid_index(struct cl_cluster *c, int i, const char *what)
{
	if (i < 0 || i >= c->n)
		return seterr(c, CL_EINVAL, "%s: member index %d out of range 0..%d", what, i,
			      c->n - 1);
	return 0;
}

/* Packs the strings into cmd->buf and sets argv; the list ends with NULL. */
static int cmd_build(struct cl_cmd *cmd, const char *const *args)
{
	size_t off = 0;
	int k = 0;
	for (; args[k] != NULL; k++) {
		size_t l = strlen(args[k]) + 1;
		if (k >= CL_CMD_ARGV || off + l > sizeof cmd->buf)
			return CL_EINVAL;
		memcpy(cmd->buf + off, args[k], l);
		cmd->argv[k] = cmd->buf + off;
		off += l;
	}
	cmd->argv[k] = NULL;
	return 0;
}

/* Runs argv (argv[0] a full path), output (stdout and stderr) into out[outlen], bounded by
 * timeout_ms. Returns the exit status (0..255), or a negative code. */
static int run_cmd(char *const argv[], char *out, size_t outlen, int timeout_ms)
{
	int p[2];
	if (outlen > 0)
		out[0] = '\0';
	if (pipe2(p, O_CLOEXEC) != 0)
		return CL_ESYS;
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return CL_ESYS;
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);
		if (nul >= 0)
			dup2(nul, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	size_t got = 0;
	int64_t deadline = cl_now_ns() + (int64_t)timeout_ms * 1000000LL;
	int timed_out = 0;
	for (int iter = 0; iter < 100000; iter++) {
		int64_t left = (deadline - cl_now_ns()) / 1000000LL;
		if (left <= 0) {
			timed_out = 1;
			break;
		}
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		int r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			continue;
		char tmp[512];
		ssize_t k = read(p[0], tmp, sizeof tmp);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		for (ssize_t j = 0; j < k && outlen > 0 && got + 1 < outlen; j++)
			out[got++] = tmp[j];
		if (outlen > 0)
			out[got] = '\0';
	}
	close(p[0]);
	if (timed_out)
		kill(pid, SIGKILL);
	int status = 0;
	for (int iter = 0; iter < 10000; iter++) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			return CL_ESYS;
		if (iter == 5000)
			kill(pid, SIGKILL);
		sleep_ns(1000000);
	}
	if (timed_out)
		return CL_ETIMEDOUT;
	/* Drop a trailing newline so the output reads well inside a message. */
	while (got > 0 && (out[got - 1] == '\n' || out[got - 1] == '\r'))
		out[--got] = '\0';
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Runs a command given as a NULL-terminated list; on failure writes a message into c->err. */
static int run_list(struct cl_cluster *c, const char *const *args, char *out, size_t outlen)
{
	struct cl_cmd cmd;
	if (cmd_build(&cmd, args) != 0)
		return seterr(c, CL_EINVAL, "%s: command too long", args[0]);
	int rc = run_cmd(cmd.argv, out, outlen, 10000);
	if (rc != 0) {
		char line[300] = "";
		size_t off = 0;
		for (int k = 0; args[k] != NULL && off + 2 < sizeof line; k++)
			off += (size_t)snprintf(line + off, sizeof line - off, "%s%s", k ? " " : "",
						args[k]);
		if (rc == CL_ETIMEDOUT)
			return seterr(c, CL_ETIMEDOUT, "`%s` did not finish within 10 s", line);
		if (rc < 0)
			return seterr(c, CL_ESYS, "`%s`: %s", line, strerror(errno));
		return seterr(c, CL_ESYS, "`%s` failed (exit %d): %s", line, rc,
			      outlen > 0 ? out : "");
	}
	return 0;
}

static int find_tool(char *dst, size_t cap, const char *name)
{
	static const char *const dirs[] = { "/usr/sbin", "/sbin", "/usr/bin", "/bin" };
	for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
		char p[64];
		snprintf(p, sizeof p, "%s/%s", dirs[i], name);
		if (access(p, X_OK) == 0)
			return copy_str(dst, cap, p);
	}
	return CL_ENOTSUP;
}

/* --- Ports and addresses ---------------------------------------------------------------------- */

static int port_free(const char *ip, int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, ip, &a.sin_addr);
	int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
	close(fd);
	if (ok) {
		/* Gossip uses UDP on its port too: check both everywhere, it costs little. */
		fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return 0;
		ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
		close(fd);
	}
	return ok;
}

/* Port claims. A port found free can be taken by another process before our member binds it;
 * concurrent runs of cairn-bench and of the test harnesses (tests/lib/ports.py, same directory
 * and format) therefore claim what they pick: a file named after the port in $TMPDIR/cairn-ports
 * holding the claimer's pid, written under an flock of the directory's .lock. Ports claimed by a
 * live process (this one too) are passed over; a claim whose process is gone is taken over.
 * Without the directory (not writable) ports are still checked free; only the claims are
 * missing. */
struct port_claims {
	char dir[CL_PATH_MAX];
	int lock; /* -1: no claims */
};

static void claims_open(struct port_claims *pc)
{
	const char *t = getenv("TMPDIR");
	char lockp[CL_PATH_MAX];
	fmt_into(pc->dir, sizeof pc->dir, "%s/cairn-ports", t != NULL && *t == '/' ? t : "/tmp");
	fmt_into(lockp, sizeof lockp, "%s/.lock", pc->dir);
	pc->lock = -1;
	if (mkdir(pc->dir, 01777) != 0 && errno != EEXIST)
		return;
	pc->lock = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (pc->lock >= 0)
		while (flock(pc->lock, LOCK_EX) != 0 && errno == EINTR)
			;
}

static void claims_close(struct port_claims *pc)
{
	if (pc->lock >= 0)
		close(pc->lock); /* and its flock */
	pc->lock = -1;
}

/* The pid in a claim file, 0 when it has none or cannot be read. */
static long claim_owner(const struct port_claims *pc, int port)
{
	char path[CL_PATH_MAX], buf[32];
	fmt_into(path, sizeof path, "%s/%d", pc->dir, port);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return strtol(buf, NULL, 10);
}

/* Free on ip (TCP and UDP) and claimed by no live process, this one included: an earlier pick
 * of this process may not be bound yet. */
static int port_usable(const struct port_claims *pc, const char *ip, int port)
{
	if (!port_free(ip, port))
		return 0;
	if (pc->lock < 0)
		return 1;
	long pid = claim_owner(pc, port);
	if (pid <= 0)
		return 1;
	if (pid == (long)getpid())
		return 0;
	return kill((pid_t)pid, 0) != 0 && errno != EPERM;
}

static void port_claim(const struct port_claims *pc, int port)
{
	char path[CL_PATH_MAX], pid[24];
	if (pc->lock < 0)
		return;
	fmt_into(path, sizeof path, "%s/%d", pc->dir, port);
	fmt_into(pid, sizeof pid, "%ld\n", (long)getpid());
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	ssize_t w = write(fd, pid, strlen(pid));
	(void)w;
	close(fd);
}

static void port_unclaim(const struct port_claims *pc, int port)
{
	char path[CL_PATH_MAX];
	fmt_into(path, sizeof path, "%s/%d", pc->dir, port);
	if (claim_owner(pc, port) == (long)getpid())
		unlink(path);
}

static int port_span(const struct cl_cluster *c)
{
	return c->spec.system == CL_SYS_CAIRN ? 3 : 2;
}

/* Removes this process's claims on the ports of c. */
static void ports_release(struct cl_cluster *c)
{
	if (c->claimed_base == 0 || c->owner != getpid())
		return;
	struct port_claims pc;
	claims_open(&pc);
	for (int k = 0; k < port_span(c); k++)
		for (int i = 0; i < c->n; i++)
			port_unclaim(&pc, c->claimed_base + 100 * k + i);
	claims_close(&pc);
	c->claimed_base = 0;
}

static unsigned port_seed(void)
{
	return (unsigned)getpid() * 2654435761u ^ (unsigned)cl_now_ns();
}

/* A base such that base+i, base+100+i (and base+200+i for Cairn) are usable on ip; they are
 * claimed for this process. */
static int pick_base(struct cl_cluster *c)
{
	struct port_claims pc;
	claims_open(&pc);
	unsigned seed = port_seed();
	int found = -1;
	for (int attempt = 0; attempt < 400 && found < 0; attempt++) {
		seed = seed * 1103515245u + 12345u;
		int base = 20000 + (int)((seed >> 8) % 12000u);
		int ok = 1;
		for (int k = 0; k < port_span(c) && ok; k++)
			for (int i = 0; i < c->n && ok; i++)
				ok = port_usable(&pc, c->spec.host, base + 100 * k + i);
		if (ok)
			found = base;
	}
	if (found > 0) {
		for (int k = 0; k < port_span(c); k++)
			for (int i = 0; i < c->n; i++)
				port_claim(&pc, found + 100 * k + i);
		c->claimed_base = found;
	}
	claims_close(&pc);
	if (found < 0)
		return seterr(c, CL_ESYS, "no free ports found on %s (400 tries in 20000..32199)",
			      c->spec.host);
	return found;
}

int cl_claim_ports(int n, int *ports)
{
	struct port_claims pc;
	claims_open(&pc);
	/* every port of the range once, from a random one on: none usable is missed */
	unsigned start = (port_seed() >> 8) % 12768u;
	int got = 0;
	for (unsigned i = 0; i < 12768u && got < n; i++) {
		int port = 20000 + (int)((start + i) % 12768u);
		if (port_usable(&pc, "127.0.0.1", port))
			ports[got++] = port;
	}
	if (got == n)
		for (int j = 0; j < n; j++)
			port_claim(&pc, ports[j]);
	claims_close(&pc);
	return got == n ? 0 : CL_ESYS;
}

void cl_release_ports(const int *ports, int n)
{
	struct port_claims pc;
	claims_open(&pc);
	for (int j = 0; j < n; j++)
		port_unclaim(&pc, ports[j]);
	claims_close(&pc);
}

/* True if an interface of this namespace has an address in 10.213.x.0/24. */
static int subnet_used(int x)
{
	struct ifaddrs *ifs = NULL;
	if (getifaddrs(&ifs) != 0)
		return 1;
	int used = 0;
	for (struct ifaddrs *p = ifs; p != NULL && !used; p = p->ifa_next) {
		if (p->ifa_addr == NULL || p->ifa_addr->sa_family != AF_INET)
			continue;
		uint32_t a = ntohl(((struct sockaddr_in *)(void *)p->ifa_addr)->sin_addr.s_addr);
		used = (a >> 8) == ((10u << 16) | (213u << 8) | (unsigned)x);
	}
	freeifaddrs(ifs);
	return used;
}

/* Creates the bridge (claiming a free /24: creating it is atomic), one namespace per member with
 * a veth pair, and addresses: the bridge 10.213.X.1, member i 10.213.X.(11+i). */
static int netns_setup(struct cl_cluster *c)
{
	char out[512];
	if (find_tool(c->ip_bin, sizeof c->ip_bin, "ip") != 0)
		return seterr(c, CL_ENOTSUP, "netns: the ip command (iproute2) is not installed");
	find_tool(c->tc_bin, sizeof c->tc_bin, "tc");
	const char *ip = c->ip_bin;
	int start = (int)(getpid() % 250);
	for (int k = 0; k < 250 && c->subnet < 0; k++) {
		int x = (start + k) % 250 + 1;
		if (subnet_used(x))
			continue;
		fmt_into(c->bridge, sizeof c->bridge, "cbr%d", x);
		const char *add[] = { ip, "link", "add", c->bridge, "type", "bridge", NULL };
		if (run_list(c, add, out, sizeof out) == 0)
			c->subnet = x;
	}
	if (c->subnet < 0)
		return seterr(c, CL_ESYS, "netns: no free 10.213.X.0/24 or bridge name: %s",
			      c->err);
	c->bridge_made = 1;
	for (int i = 0; i < c->n; i++)
		fmt_into(c->m[i].ip, sizeof c->m[i].ip, "10.213.%d.%d", c->subnet, 11 + i);
	char addr[32];
	snprintf(addr, sizeof addr, "10.213.%d.1/24", c->subnet);
	const char *a1[] = { ip, "addr", "add", addr, "dev", c->bridge, NULL };
	const char *a2[] = { ip, "link", "set", c->bridge, "up", NULL };
	int rc;
	if ((rc = run_list(c, a1, out, sizeof out)) != 0 ||
	    (rc = run_list(c, a2, out, sizeof out)) != 0)
		return rc;
	for (int i = 0; i < c->n; i++) {
		struct cl_member *m = &c->m[i];
		fmt_into(m->ns, sizeof m->ns, "cairn-bench-%d-%s", c->subnet, m->name);
		fmt_into(m->veth_host, sizeof m->veth_host, "cb%dh%d", c->subnet, i + 1);
		fmt_into(m->veth_ns, sizeof m->veth_ns, "cb%dn%d", c->subnet, i + 1);
		char maddr[32];
		snprintf(maddr, sizeof maddr, "%s/24", m->ip);
		/* Leftovers of a run that died with this subnet: the bridge claim makes them ours. */
		const char *d1[] = { ip, "netns", "del", m->ns, NULL };
		const char *d2[] = { ip, "link", "del", m->veth_host, NULL };
		run_list(c, d1, out, sizeof out);
		run_list(c, d2, out, sizeof out);
		const char *s1[] = { ip, "netns", "add", m->ns, NULL };
		if ((rc = run_list(c, s1, out, sizeof out)) != 0)
			return rc;
		c->ns_made[i] = 1;
		const char *s2[] = { ip,     "link", "add",      m->veth_host, "type", "veth",
				     "peer", "name", m->veth_ns, "netns",      m->ns,  NULL };
		const char *s3[] = { ip,       "link",    "set", m->veth_host,
				     "master", c->bridge, "up",  NULL };
		const char *s4[] = {
			ip, "-n", m->ns, "addr", "add", maddr, "dev", m->veth_ns, NULL
		};
		const char *s5[] = { ip, "-n", m->ns, "link", "set", m->veth_ns, "up", NULL };
		const char *s6[] = { ip, "-n", m->ns, "link", "set", "lo", "up", NULL };
		if ((rc = run_list(c, s2, out, sizeof out)) != 0 ||
		    (rc = run_list(c, s3, out, sizeof out)) != 0 ||
		    (rc = run_list(c, s4, out, sizeof out)) != 0 ||
		    (rc = run_list(c, s5, out, sizeof out)) != 0 ||
		    (rc = run_list(c, s6, out, sizeof out)) != 0)
			return rc;
	}
	return 0;
}

/* Prepares the teardown commands: `ip netns del` per member, `ip link del <bridge>`, `rm -rf`. */
static void prepare_cmds(struct cl_cluster *c)
{
	int k = 0;
	if (c->spec.netns) {
		for (int i = 0; i < c->n; i++) {
			const char *v[] = { c->ip_bin, "link", "del", c->m[i].veth_host, NULL };
			const char *a[] = { c->ip_bin, "netns", "del", c->m[i].ns, NULL };
			if (cmd_build(&c->cmds[k], v) == 0)
				k++;
			if (cmd_build(&c->cmds[k], a) == 0)
				k++;
		}
		const char *b[] = { c->ip_bin, "link", "del", c->bridge, NULL };
		if (cmd_build(&c->cmds[k], b) == 0)
			k++;
	}
	c->ncmd_net = k;
	const char *r[] = { "/bin/rm", "-rf", "--", c->dir, NULL };
	c->have_rm = cmd_build(&c->cmds[k], r) == 0;
}

static void netns_teardown(struct cl_cluster *c)
{
	char out[256], saved[CL_ERR_MAX];
	/* Teardown errors are not the caller's error: keep the message that explains the run. */
	memcpy(saved, c->err, sizeof saved);
	for (int i = 0; i < c->n; i++) {
		if (c->ns_made[i]) {
			/* Delete the pair first: a namespace outlives its `ip netns del` while
			 * orphaned TCP sockets of its dead members (retransmitting to a peer that
			 * was cut off) still hold it, and its veth with it. */
			const char *v[] = { c->ip_bin, "link", "del", c->m[i].veth_host, NULL };
			run_list(c, v, out, sizeof out);
			const char *a[] = { c->ip_bin, "netns", "del", c->m[i].ns, NULL };
			run_list(c, a, out, sizeof out);
			c->ns_made[i] = 0;
		}
		c->m[i].partitioned = 0;
	}
	if (c->bridge_made) {
		const char *b[] = { c->ip_bin, "link", "del", c->bridge, NULL };
		run_list(c, b, out, sizeof out);
		c->bridge_made = 0;
	}
	memcpy(c->err, saved, sizeof saved);
}

/* --- Member flags ----------------------------------------------------------------------------- */

static int add_arg(struct cl_cluster *c, struct cl_member *m, int *k, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int add_arg(struct cl_cluster *c, struct cl_member *m, int *k, const char *fmt, ...)
{
	if (*k >= CL_ARGV_MAX)
		return seterr(c, CL_EINVAL, "%s: more than %d arguments", m->name, CL_ARGV_MAX);
	char buf[CL_MAX_MEMBERS * (CL_URL_MAX + 16) + CL_PATH_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf)
		return seterr(c, CL_EINVAL, "%s: argument too long", m->name);
	m->argv[*k] = strdup(buf);
	if (m->argv[*k] == NULL)
		return seterr(c, CL_ENOMEM, "out of memory");
	(*k)++;
	m->argv[*k] = NULL;
	return 0;
}

/* The flags of member i, etcd's names for both systems (bench/failover and tests/integration
 * give the same): one cluster from --initial-cluster, state new, a token unique to this run. */
static int build_argv(struct cl_cluster *c, int i)
{
	struct cl_member *m = &c->m[i];
	const struct cl_spec *s = &c->spec;
	char cluster[CL_MAX_MEMBERS * (CL_URL_MAX + 16)] = "", join[CL_MAX_MEMBERS * 32] = "";
	size_t off = 0, joff = 0;
	for (int j = 0; j < c->n; j++) {
		off += (size_t)snprintf(cluster + off, sizeof cluster - off, "%s%s=%s",
					j ? "," : "", c->m[j].name, c->m[j].peer_url);
		if (j != i)
			joff += (size_t)snprintf(join + joff, sizeof join - joff, "%s%s:%d",
						 joff ? "," : "", c->m[j].ip, c->m[j].gossip_port);
	}
	int k = 0, rc = 0;
#define ARG(...)                                                \
	do {                                                    \
		if ((rc = add_arg(c, m, &k, __VA_ARGS__)) != 0) \
			return rc;                              \
	} while (0)
	ARG("%s", s->binary);
	ARG("--name");
	ARG("%s", m->name);
	ARG("--data-dir");
	ARG("%s/%s.data", c->dir, m->name);
	ARG("--listen-client-urls");
	ARG("%s", m->endpoint);
	ARG("--advertise-client-urls");
	ARG("%s", m->endpoint);
	ARG("--listen-peer-urls");
	ARG("%s", m->peer_url);
	ARG("--initial-advertise-peer-urls");
	ARG("%s", m->peer_url);
	ARG("--initial-cluster");
	ARG("%s", cluster);
	ARG("--initial-cluster-state");
	ARG("new");
	ARG("--initial-cluster-token");
	ARG("%s", c->token);
	ARG("--heartbeat-interval");
	ARG("%d", s->heartbeat_ms);
	ARG("--election-timeout");
	ARG("%d", s->election_ms);
	if (s->system == CL_SYS_CAIRN) {
		/* Every member gossips on its own port; the leader must not write the gossip view
		 * into the store, which would add writes the other system does not make. */
		ARG("--gossip-listen");
		ARG("%s:%d", m->ip, m->gossip_port);
		if (joff > 0) {
			ARG("--gossip-join");
			ARG("%s", join);
		}
		ARG("--gossip-store-members=false");
	} else {
		/* etcd 3.4 logs with capnslog by default; zap to stderr lands in <name>.log. */
		ARG("--logger=zap");
		ARG("--log-outputs=stderr");
	}
	char extra[CL_EXTRA_MAX];
	memcpy(extra, s->system == CL_SYS_CAIRN ? s->extra_cairn : s->extra_etcd, CL_EXTRA_MAX);
	extra[CL_EXTRA_MAX - 1] = '\0';
	char *save = NULL;
	for (char *w = strtok_r(extra, " \t\r\n", &save); w != NULL;
	     w = strtok_r(NULL, " \t\r\n", &save))
		ARG("%s", w);
#undef ARG
	return 0;
}

/* --- Creation --------------------------------------------------------------------------------- */

static void unregister(struct cl_cluster *c)
{
	for (int k = 0; k < CL_MAX_LIVE; k++) {
		struct cl_cluster *expect = c;
		atomic_compare_exchange_strong(&g_live[k], &expect, NULL);
	}
}

static void remove_dir(struct cl_cluster *c);

int cl_create(const struct cl_spec *spec, struct cl_cluster **out, char *err, size_t errlen)
{
	char e[CL_ERR_MAX];
	*out = NULL;
	int rc = cl_spec_check(spec, e, sizeof e);
	if (rc != 0) {
		fmt_err(err, errlen, "%s", e);
		return rc;
	}
	struct cl_cluster *c = calloc(1, sizeof *c);
	if (c == NULL) {
		fmt_err(err, errlen, "out of memory");
		return CL_ENOMEM;
	}
	c->spec = *spec;
	c->spec.binary[CL_PATH_MAX - 1] = '\0';
	c->owner = getpid();
	c->creator = pthread_self();
	c->n = spec->members;
	c->subnet = -1;
	c->last_killed = -1;
	c->removed_dir = 1; /* nothing to remove yet */
	pthread_mutex_init(&c->mu, NULL);
	for (int i = 0; i < CL_MAX_FAULTS; i++)
		c->ev_of[i] = -1;
	if (c->spec.binary[0] == '\0')
		memcpy(c->spec.binary, default_binary[spec->system],
		       strlen(default_binary[spec->system]) + 1);
	if (access(c->spec.binary, X_OK) != 0) {
		fmt_err(err, errlen, "%s binary '%s' is not an executable file (%s); set binary",
			cl_system_name(spec->system), c->spec.binary, strerror(errno));
		pthread_mutex_destroy(&c->mu);
		free(c);
		return CL_EINVAL;
	}
	/* Members run with their own working directory semantics: make the binary absolute. */
	if (c->spec.binary[0] != '/') {
		char abs[PATH_MAX];
		if (realpath(c->spec.binary, abs) == NULL ||
		    copy_str(c->spec.binary, CL_PATH_MAX, abs) != 0) {
			fmt_err(err, errlen, "binary '%s': cannot resolve its path", spec->binary);
			pthread_mutex_destroy(&c->mu);
			free(c);
			return CL_EINVAL;
		}
	}

	const char *root = spec->dir[0] ? spec->dir : getenv("TMPDIR");
	if (root == NULL || root[0] == '\0')
		root = "/tmp";
	int n = snprintf(c->dir, sizeof c->dir, "%s/cairn-bench-%s.XXXXXX", root,
			 cl_system_name(spec->system));
	if (n < 0 || (size_t)n >= sizeof c->dir - 64) {
		fmt_err(err, errlen, "data dir root '%s' is too long", root);
		pthread_mutex_destroy(&c->mu);
		free(c);
		return CL_EINVAL;
	}
	if (mkdtemp(c->dir) == NULL) {
		fmt_err(err, errlen, "cannot create a directory under %s: %s", root,
			strerror(errno));
		pthread_mutex_destroy(&c->mu);
		free(c);
		return CL_ESYS;
	}
	c->removed_dir = 0;
	static atomic_int seq;
	fmt_into(c->token, sizeof c->token, "cairn-bench-%d-%d", (int)getpid(),
		 atomic_fetch_add(&seq, 1));

	/* From here on cl_free undoes everything. */
	pthread_once(&g_atexit_once, register_atexit);
	int slot = -1;
	for (int k = 0; k < CL_MAX_LIVE && slot < 0; k++) {
		struct cl_cluster *expect = NULL;
		if (atomic_compare_exchange_strong(&g_live[k], &expect, c))
			slot = k;
	}
	if (slot < 0) {
		fmt_err(err, errlen, "more than %d clusters alive in this process", CL_MAX_LIVE);
		remove_dir(c);
		pthread_mutex_destroy(&c->mu);
		free(c);
		return CL_ESTATE;
	}

	int base = spec->base_port;
	for (int i = 0; i < c->n; i++) {
		struct cl_member *m = &c->m[i];
		m->name[0] = 'm';
		m->name[1] = (char)('1' + i); /* at most CL_MAX_MEMBERS (7) members */
		m->name[2] = '\0';
		m->exit_status = -1;
	}
	if (spec->netns) {
		if (base == 0)
			base = 2379;
		if ((rc = netns_setup(c)) != 0)
			goto fail;
	} else {
		for (int i = 0; i < c->n; i++)
			memcpy(c->m[i].ip, spec->host, strlen(spec->host) + 1);
		if (base == 0 && (base = pick_base(c)) < 0) {
			rc = base;
			goto fail;
		}
	}
	for (int i = 0; i < c->n; i++) {
		struct cl_member *m = &c->m[i];
		m->client_port = base + i;
		m->peer_port = base + 100 + i;
		m->gossip_port = base + 200 + i;
		fmt_into(m->endpoint, sizeof m->endpoint, "http://%s:%d", m->ip, m->client_port);
		fmt_into(m->peer_url, sizeof m->peer_url, "http://%s:%d", m->ip, m->peer_port);
		fmt_into(m->log_path, sizeof m->log_path, "%s/%s.log", c->dir, m->name);
		size_t off = strlen(c->endpoints);
		fmt_into(c->endpoints + off, sizeof c->endpoints - off, "%s%s", i ? "," : "",
			 m->endpoint);
	}
	for (int i = 0; i < c->n; i++)
		if ((rc = build_argv(c, i)) != 0)
			goto fail;
	prepare_cmds(c);
	*out = c;
	return 0;
fail:
	fmt_err(err, errlen, "%s", c->err);
	cl_free(c);
	return rc;
}

/* --- HTTP/1.1 over non-blocking sockets ---------------------------------------------------- */

enum { H_CONNECT, H_SEND, H_READ, H_DONE };

struct hreq {
	int member;
	int fd;
	int phase;
	int ok;     /* a complete answer was read */
	int status; /* HTTP status */
	char out[384];
	size_t outlen, sent;
	char in[CL_HTTP_IN_MAX];
	size_t inlen;
	const char *body; /* into in, NUL-terminated */
};

static void hreq_close(struct hreq *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	r->phase = H_DONE;
}

/* Parses what was read; sets ok when the answer is complete. With eof, a missing
 * Content-Length means the body ends here. */
static int hreq_complete(struct hreq *r, int eof)
{
	r->in[r->inlen] = '\0';
	char *hend = strstr(r->in, "\r\n\r\n");
	if (hend == NULL)
		return 0;
	if (sscanf(r->in, "HTTP/1.%*d %d", &r->status) != 1)
		return eof ? -1 : 0;
	char *body = hend + 4;
	size_t have = r->inlen - (size_t)(body - r->in);
	long clen = -1;
	int chunked = 0;
	for (char *h = strstr(r->in, "\r\n"); h != NULL && h < hend; h = strstr(h + 2, "\r\n")) {
		if (strncasecmp(h + 2, "Content-Length:", 15) == 0)
			clen = strtol(h + 17, NULL, 10);
		else if (strncasecmp(h + 2, "Transfer-Encoding:", 18) == 0 &&
			 strstr(h + 20, "chunked") != NULL && strstr(h + 20, "chunked") < hend)
			chunked = 1;
	}
	if (clen >= 0 && !chunked) {
		if ((size_t)clen > have)
			return eof ? -1 : 0;
		body[clen] = '\0';
		r->body = body;
		return 1;
	}
	if (!eof)
		return 0;
	if (chunked) {
		/* Undo chunked framing in place; the answers are small. */
		char *src = body, *dst = body, *end = r->in + r->inlen;
		for (int k = 0; k < 1024 && src < end; k++) {
			char *nl = strstr(src, "\r\n");
			if (nl == NULL)
				return -1;
			long sz = strtol(src, NULL, 16);
			if (sz <= 0)
				break;
			src = nl + 2;
			if (src + sz > end)
				return -1;
			memmove(dst, src, (size_t)sz);
			dst += sz;
			src += sz + 2;
		}
		*dst = '\0';
	}
	r->body = body;
	return 1;
}

static void hreq_start(struct hreq *r, int member, const char *ip, int port, const char *method,
		       const char *path, const char *body)
{
	memset(r, 0, offsetof(struct hreq, in));
	r->in[0] = '\0';
	r->body = NULL;
	r->member = member;
	r->fd = -1;
	int n = snprintf(r->out, sizeof r->out,
			 "%s %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: cairn-bench\r\n"
			 "Content-Type: application/json\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n%s",
			 method, path, ip, port, body ? strlen(body) : 0, body ? body : "");
	if (n < 0 || (size_t)n >= sizeof r->out) {
		r->phase = H_DONE;
		return;
	}
	r->outlen = (size_t)n;
	r->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (r->fd < 0) {
		r->phase = H_DONE;
		return;
	}
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		hreq_close(r);
		return;
	}
	if (connect(r->fd, (struct sockaddr *)&a, sizeof a) == 0)
		r->phase = H_SEND;
	else if (errno == EINPROGRESS)
		r->phase = H_CONNECT;
	else
		hreq_close(r);
}

/* Advances every request until all are done, `enough` says to stop, or the deadline. */
static void hreq_run(struct hreq *r, int n, int64_t deadline,
		     int (*enough)(void *arg, struct hreq *r, int n), void *arg)
{
	for (int iter = 0; iter < 100000; iter++) {
		struct pollfd pfd[CL_MAX_MEMBERS];
		int map[CL_MAX_MEMBERS], np = 0;
		for (int i = 0; i < n; i++) {
			if (r[i].phase == H_DONE)
				continue;
			pfd[np].fd = r[i].fd;
			pfd[np].events = (short)(r[i].phase == H_READ ? POLLIN : POLLOUT);
			pfd[np].revents = 0;
			map[np++] = i;
		}
		if (np == 0 || (enough != NULL && enough(arg, r, n)))
			break;
		int64_t left = (deadline - cl_now_ns() + 999999) / 1000000LL;
		if (left <= 0)
			break;
		int pr = poll(pfd, (nfds_t)np, (int)(left > 1000 ? 1000 : left));
		if (pr < 0 && errno != EINTR)
			break;
		for (int k = 0; k < np && pr > 0; k++) {
			struct hreq *q = &r[map[k]];
			if (pfd[k].revents == 0)
				continue;
			if (q->phase == H_CONNECT) {
				int soerr = 0;
				socklen_t sl = sizeof soerr;
				if (getsockopt(q->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 ||
				    soerr != 0) {
					hreq_close(q);
					continue;
				}
				q->phase = H_SEND;
			}
			if (q->phase == H_SEND) {
				ssize_t w = send(q->fd, q->out + q->sent, q->outlen - q->sent,
						 MSG_NOSIGNAL);
				if (w < 0 && errno != EAGAIN && errno != EINTR) {
					hreq_close(q);
					continue;
				}
				if (w > 0)
					q->sent += (size_t)w;
				if (q->sent == q->outlen)
					q->phase = H_READ;
				continue;
			}
			if (q->phase == H_READ) {
				size_t room = sizeof q->in - 1 - q->inlen;
				if (room == 0) {
					hreq_close(q);
					continue;
				}
				ssize_t got = recv(q->fd, q->in + q->inlen, room, 0);
				if (got < 0 && (errno == EAGAIN || errno == EINTR))
					continue;
				if (got < 0) {
					hreq_close(q);
					continue;
				}
				q->inlen += (size_t)got;
				int done = hreq_complete(q, got == 0);
				if (done != 0) {
					q->ok = done > 0;
					hreq_close(q);
				}
			}
		}
	}
	for (int i = 0; i < n; i++)
		if (r[i].phase != H_DONE)
			hreq_close(&r[i]);
}

/* The value of "key" in a flat reading of JSON text: a number or a string of digits. */
static int json_u64(const char *body, const char *key, uint64_t *out)
{
	char pat[48];
	snprintf(pat, sizeof pat, "\"%s\"", key);
	size_t pl = strlen(pat);
	const char *p = body;
	for (int k = 0; k < 64 && (p = strstr(p, pat)) != NULL; k++) {
		const char *q = p + pl;
		p = q;
		while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
			q++;
		if (*q != ':')
			continue; /* a value equal to the key's name, not the key */
		q++;
		while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
			q++;
		if (*q == '"')
			q++;
		if (!isdigit((unsigned char)*q))
			return CL_EPROTO;
		char *end = NULL;
		errno = 0;
		unsigned long long v = strtoull(q, &end, 10);
		if (errno != 0)
			return CL_EPROTO;
		*out = (uint64_t)v;
		return 0;
	}
	return CL_EPROTO;
}

static int json_health_true(const char *body)
{
	const char *p = strstr(body, "\"health\"");
	if (p == NULL)
		return 0;
	p += 8;
	while (*p == ' ' || *p == ':')
		p++;
	return strncmp(p, "\"true\"", 6) == 0 || strncmp(p, "true", 4) == 0;
}

static int parse_status(const char *body, struct cl_status *st)
{
	memset(st, 0, sizeof *st);
	if (json_u64(body, "member_id", &st->member_id) != 0)
		return CL_EPROTO;
	if (json_u64(body, "leader", &st->leader) != 0)
		st->leader = 0; /* proto3 JSON omits zero: no leader known */
	if (json_u64(body, "raftTerm", &st->raft_term) != 0)
		json_u64(body, "raft_term", &st->raft_term);
	if (json_u64(body, "raftIndex", &st->raft_index) != 0)
		json_u64(body, "raft_index", &st->raft_index);
	uint64_t rev = 0;
	if (json_u64(body, "revision", &rev) == 0)
		st->revision = (int64_t)rev;
	return 0;
}

/* --- Processes -------------------------------------------------------------------------------- */

/* Notices a member that exited on its own. */
static void reap(struct cl_cluster *c, int i)
{
	struct cl_member *m = &c->m[i];
	if (m->pid <= 0)
		return;
	int status = 0;
	pid_t w = waitpid(m->pid, &status, WNOHANG);
	if (w == m->pid) {
		m->pid = 0;
		m->state = CL_DOWN;
		m->exit_status = status;
	}
}

static void describe_exit(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "died of signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "ended (wait status %d)", status);
}

/* The last line of a member's log, for messages about its failure. */
static void log_tail(const char *path, char *buf, size_t len)
{
	buf[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	char tmp[512];
	off_t size = lseek(fd, 0, SEEK_END);
	off_t from = size > (off_t)sizeof tmp - 1 ? size - (off_t)sizeof tmp + 1 : 0;
	ssize_t got = pread(fd, tmp, sizeof tmp - 1, from);
	close(fd);
	if (got <= 0)
		return;
	tmp[got] = '\0';
	while (got > 0 && (tmp[got - 1] == '\n' || tmp[got - 1] == '\r'))
		tmp[--got] = '\0';
	char *nl = strrchr(tmp, '\n');
	copy_trunc(buf, len, nl ? nl + 1 : tmp);
}

/* Waits for a killed member; SIGKILL cannot be ignored, so 10 s is a generous bound. */
static int wait_gone(pid_t pid)
{
	for (int iter = 0; iter < 10000; iter++) {
		int status = 0;
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid || (w < 0 && errno == ECHILD))
			return 0;
		sleep_ns(1000000);
	}
	return CL_ETIMEDOUT;
}

static int spawn(struct cl_cluster *c, int i)
{
	struct cl_member *m = &c->m[i];
	int logfd = open(m->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0)
		return seterr(c, CL_ESYS, "%s: cannot open %s: %s", m->name, m->log_path,
			      strerror(errno));
	int nsfd = -1;
	if (c->spec.netns) {
		char p[128];
		snprintf(p, sizeof p, "%s/%s", CL_NETNS_DIR, m->ns);
		nsfd = open(p, O_RDONLY | O_CLOEXEC);
		if (nsfd < 0) {
			close(logfd);
			return seterr(c, CL_ESYS, "%s: cannot open %s: %s", m->name, p,
				      strerror(errno));
		}
	}
	int ep[2];
	if (pipe2(ep, O_CLOEXEC) != 0) {
		close(logfd);
		if (nsfd >= 0)
			close(nsfd);
		return seterr(c, CL_ESYS, "pipe: %s", strerror(errno));
	}
	/* A member dies with the bench if the bench is killed outright, but only when started
	 * from the main thread: the kernel sends the signal when the forking thread ends. */
	int deathsig = gettid() == getpid();
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(logfd);
		close(ep[0]);
		close(ep[1]);
		if (nsfd >= 0)
			close(nsfd);
		return seterr(c, CL_ESYS, "fork: %s", strerror(e));
	}
	if (pid == 0) {
		/* Only async-signal-safe calls from here to execv. */
		int e = 0;
		if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) != 0)
			e = errno;
		if (e == 0 && deathsig) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(1);
		}
		if (e == 0) {
			int nul = open("/dev/null", O_RDONLY);
			if (nul < 0 || dup2(nul, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
				e = errno;
		}
		if (e == 0) {
			sigset_t none;
			sigemptyset(&none);
			sigprocmask(SIG_SETMASK, &none, NULL);
			signal(SIGPIPE, SIG_DFL);
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			signal(SIGHUP, SIG_DFL);
#ifdef CLOSE_RANGE_CLOEXEC
			/* The driver's descriptors (its client sockets) stay out of the member. */
			close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
#endif
			execv(m->argv[0], m->argv);
			e = errno;
		}
		ssize_t w = write(ep[1], &e, sizeof e);
		(void)w;
		_exit(127);
	}
	close(ep[1]);
	close(logfd);
	if (nsfd >= 0)
		close(nsfd);
	int childerr = 0;
	ssize_t got = 0;
	struct pollfd pfd = { .fd = ep[0], .events = POLLIN };
	for (int iter = 0; iter < 100; iter++) {
		int pr = poll(&pfd, 1, 100);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr > 0) {
			got = read(ep[0], &childerr, sizeof childerr);
			break;
		}
	}
	close(ep[0]);
	if (got == (ssize_t)sizeof childerr) {
		wait_gone(pid);
		return seterr(c, CL_ESYS, "%s: cannot start %s: %s", m->name, m->argv[0],
			      strerror(childerr));
	}
	m->pid = pid;
	m->state = CL_RUNNING;
	m->exit_status = -1;
	return 0;
}

/* --- Status and health ------------------------------------------------------------------------ */

/* Health of the given members at once; healthy[i] set for those answering true. */
static void health_round(struct cl_cluster *c, const int *idx, int k, int timeout_ms, int *healthy)
{
	struct hreq *r = calloc((size_t)k, sizeof *r);
	if (r == NULL)
		return;
	for (int j = 0; j < k; j++) {
		struct cl_member *m = &c->m[idx[j]];
		hreq_start(&r[j], idx[j], m->ip, m->client_port, "GET", "/health", NULL);
	}
	hreq_run(r, k, cl_now_ns() + (int64_t)timeout_ms * 1000000LL, NULL, NULL);
	for (int j = 0; j < k; j++)
		if (r[j].ok && r[j].body != NULL && json_health_true(r[j].body))
			healthy[idx[j]] = 1;
	free(r);
}

static int reachable(const struct cl_cluster *c, int i)
{
	return c->m[i].state == CL_RUNNING && !c->m[i].partitioned;
}

int cl_wait_healthy(struct cl_cluster *c, int timeout_ms)
{
	int64_t deadline = cl_now_ns() + (int64_t)timeout_ms * 1000000LL;
	int healthy[CL_MAX_MEMBERS] = { 0 };
	for (int iter = 0; iter < 100000; iter++) {
		int idx[CL_MAX_MEMBERS], k = 0;
		for (int i = 0; i < c->n; i++) {
			reap(c, i);
			if (c->m[i].state == CL_DOWN && c->m[i].exit_status != -1) {
				char how[64], tail[256];
				describe_exit(c->m[i].exit_status, how, sizeof how);
				log_tail(c->m[i].log_path, tail, sizeof tail);
				return seterr(c, CL_ESTATE, "%s %s; the end of %s: %s",
					      c->m[i].name, how, c->m[i].log_path, tail);
			}
			if (reachable(c, i) && !healthy[i])
				idx[k++] = i;
		}
		if (k == 0)
			return 0;
		int64_t now = cl_now_ns();
		if (now >= deadline)
			break;
		int64_t left = (deadline - now) / 1000000LL;
		health_round(c, idx, k, (int)(left < 1000 ? left : 1000), healthy);
		int all = 1;
		for (int j = 0; j < k; j++)
			all = all && healthy[idx[j]];
		if (all)
			return 0;
		sleep_ns(50000000);
	}
	char list[64] = "";
	for (int i = 0; i < c->n; i++)
		if (reachable(c, i) && !healthy[i])
			snprintf(list + strlen(list), sizeof list - strlen(list), " %s",
				 c->m[i].name);
	return seterr(c, CL_ETIMEDOUT,
		      "members not healthy within %d ms (GET /health on the client port):%s; "
		      "see the logs in %s",
		      timeout_ms, list, c->dir);
}

int cl_status(struct cl_cluster *c, int i, int timeout_ms, struct cl_status *st)
{
	int rc = valid_index(c, i, "cl_status");
	if (rc != 0)
		return rc;
	struct hreq *r = calloc(1, sizeof *r);
	if (r == NULL)
		return seterr(c, CL_ENOMEM, "out of memory");
	struct cl_member *m = &c->m[i];
	hreq_start(r, i, m->ip, m->client_port, "POST", "/v3/maintenance/status", "{}");
	hreq_run(r, 1, cl_now_ns() + (int64_t)timeout_ms * 1000000LL, NULL, NULL);
	if (!r->ok)
		rc = seterr(c, CL_ETIMEDOUT, "%s: no answer to status at %s within %d ms", m->name,
			    m->endpoint, timeout_ms);
	else if (r->status != 200 || parse_status(r->body, st) != 0)
		rc = seterr(c, CL_EPROTO, "%s: status answered %d: %.200s", m->name, r->status,
			    r->body ? r->body : "");
	else if (m->id == 0)
		m->id = st->member_id;
	free(r);
	return rc;
}

struct leader_vote {
	struct cl_cluster *c;
	int leader; /* index agreed, -1 none yet */
};

static int index_of_id(const struct cl_cluster *c, uint64_t id)
{
	for (int i = 0; i < c->n && id != 0; i++)
		if (c->m[i].id == id)
			return i;
	return -1;
}

/* Stops the round as soon as a majority of the whole cluster names the same leader. */
static int leader_enough(void *arg, struct hreq *r, int n)
{
	struct leader_vote *v = arg;
	struct cl_cluster *c = v->c;
	uint64_t ids[CL_MAX_MEMBERS];
	int votes[CL_MAX_MEMBERS], nid = 0;
	for (int j = 0; j < n; j++) {
		struct cl_status st;
		if (!r[j].ok || r[j].status != 200 || r[j].body == NULL ||
		    parse_status(r[j].body, &st) != 0)
			continue;
		if (c->m[r[j].member].id == 0)
			c->m[r[j].member].id = st.member_id;
		if (st.leader == 0)
			continue;
		int k = 0;
		while (k < nid && ids[k] != st.leader)
			k++;
		if (k == nid) {
			ids[nid] = st.leader;
			votes[nid++] = 0;
		}
		votes[k]++;
	}
	for (int k = 0; k < nid; k++) {
		/* A killed, paused or cut-off member named by followers that have not noticed yet
		 * leads nothing the bench can reach: not a leader here. */
		int li = votes[k] >= c->n / 2 + 1 ? index_of_id(c, ids[k]) : -1;
		if (li >= 0 && reachable(c, li)) {
			v->leader = li;
			return 1;
		}
	}
	return 0;
}

int cl_leader(struct cl_cluster *c, int timeout_ms)
{
	struct hreq *r = calloc(CL_MAX_MEMBERS, sizeof *r);
	if (r == NULL)
		return seterr(c, CL_ENOMEM, "out of memory");
	int k = 0;
	for (int i = 0; i < c->n; i++) {
		reap(c, i);
		if (!reachable(c, i))
			continue;
		struct cl_member *m = &c->m[i];
		hreq_start(&r[k++], i, m->ip, m->client_port, "POST", "/v3/maintenance/status",
			   "{}");
	}
	struct leader_vote v = { .c = c, .leader = -1 };
	hreq_run(r, k, cl_now_ns() + (int64_t)timeout_ms * 1000000LL, leader_enough, &v);
	if (v.leader < 0)
		leader_enough(&v, r, k); /* the last answers may have come with the round's end */
	free(r);
	if (v.leader < 0)
		return seterr(c, CL_ENOLEADER,
			      "no leader agreed by %d of %d members within %d ms (%d reachable)",
			      c->n / 2 + 1, c->n, timeout_ms, k);
	return v.leader;
}

int cl_wait_leader(struct cl_cluster *c, int not, int timeout_ms)
{
	int64_t deadline = cl_now_ns() + (int64_t)timeout_ms * 1000000LL;
	for (int iter = 0; iter < 1000000; iter++) {
		int64_t left = (deadline - cl_now_ns()) / 1000000LL;
		if (left <= 0)
			break;
		int l = cl_leader(c, (int)(left < 500 ? left : 500));
		if (l >= 0 && l != not )
			return l;
		sleep_ns(CL_POLL_NS);
	}
	if (not >= 0)
		return seterr(c, CL_ENOLEADER, "no leader other than %s agreed within %d ms",
			      c->m[not ].name, timeout_ms);
	return seterr(c, CL_ENOLEADER, "no leader agreed within %d ms", timeout_ms);
}

/* --- Start, stop, free ------------------------------------------------------------------------ */

int cl_start(struct cl_cluster *c)
{
	if (c->started)
		return seterr(c, CL_ESTATE, "cl_start: the cluster was already started");
	c->started = 1;
	int rc;
	for (int i = 0; i < c->n; i++)
		if ((rc = spawn(c, i)) != 0)
			return rc;
	int64_t t0 = cl_now_ns();
	if ((rc = cl_wait_healthy(c, c->spec.start_timeout_ms)) != 0)
		return rc;
	/* Learn every member's id: leader answers name ids, the bench names indexes. */
	int64_t deadline = t0 + (int64_t)c->spec.start_timeout_ms * 1000000LL;
	for (int i = 0; i < c->n; i++) {
		struct cl_status st;
		for (int iter = 0; iter < 10000 && c->m[i].id == 0; iter++) {
			int64_t left = (deadline - cl_now_ns()) / 1000000LL;
			if (left <= 0)
				return seterr(c, CL_ETIMEDOUT, "%s: no status answer within %d ms",
					      c->m[i].name, c->spec.start_timeout_ms);
			if (cl_status(c, i, (int)(left < 1000 ? left : 1000), &st) != 0)
				sleep_ns(50000000);
		}
	}
	c->err[0] = '\0';
	return 0;
}

static void sched_join(struct cl_cluster *c, int cancel);

int cl_stop(struct cl_cluster *c)
{
	if (c == NULL)
		return 0;
	if (c->sched_running)
		sched_join(c, 1);
	int rc = 0;
	for (int i = 0; i < c->n; i++) {
		struct cl_member *m = &c->m[i];
		if (m->pid > 0) {
			kill(m->pid, SIGCONT);
			kill(m->pid, SIGKILL);
			if (wait_gone(m->pid) != 0)
				rc = seterr(c, CL_ETIMEDOUT, "%s (pid %d) did not go away", m->name,
					    (int)m->pid);
			m->pid = 0;
		}
		m->state = CL_DOWN;
	}
	if (c->spec.netns)
		netns_teardown(c);
	c->stopped = 1;
	return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void remove_dir(struct cl_cluster *c)
{
	if (c->removed_dir || c->dir[0] == '\0')
		return;
	nftw(c->dir, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
	c->removed_dir = 1;
}

void cl_free(struct cl_cluster *c)
{
	if (c == NULL)
		return;
	cl_stop(c);
	unregister(c);
	ports_release(c);
	if (!c->spec.keep)
		remove_dir(c);
	for (int i = 0; i < c->n; i++)
		for (int k = 0; k < CL_ARGV_MAX && c->m[i].argv[k] != NULL; k++)
			free(c->m[i].argv[k]);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

/* fork/execve/waitpid/nanosleep/kill only: callable from a signal handler. */
static void emerg_run(char *const argv[])
{
	pid_t pid = fork();
	if (pid < 0)
		return;
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 1);
			dup2(nul, 2);
		}
		char *envp[] = { NULL };
		execve(argv[0], argv, envp);
		_exit(127);
	}
	for (int iter = 0; iter < 5000; iter++) {
		int status;
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid || (w < 0 && errno != EINTR))
			return;
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

void cl_emergency_cleanup(void)
{
	int saved = errno;
	pid_t self = getpid();
	for (int k = 0; k < CL_MAX_LIVE; k++) {
		struct cl_cluster *c = atomic_load(&g_live[k]);
		if (c == NULL || c->owner != self || c->emerg_done)
			continue;
		c->emerg_done = 1;
		for (int i = 0; i < c->n; i++) {
			pid_t pid = c->m[i].pid;
			if (pid > 0) {
				kill(pid, SIGCONT);
				kill(pid, SIGKILL);
			}
		}
		for (int i = 0; i < c->n; i++) {
			pid_t pid = c->m[i].pid;
			for (int iter = 0; pid > 0 && iter < 2000; iter++) {
				pid_t w = waitpid(pid, NULL, WNOHANG);
				if (w == pid || (w < 0 && errno != EINTR))
					break;
				struct timespec ts = { 0, 1000000 };
				nanosleep(&ts, NULL);
			}
			/* Reaped: a later cl_free must not signal a reused pid. */
			c->m[i].pid = 0;
			c->m[i].state = CL_DOWN;
		}
		if (c->bridge_made || c->spec.netns)
			for (int j = 0; j < c->ncmd_net; j++)
				emerg_run(c->cmds[j].argv);
		if (!c->spec.keep && c->have_rm && !c->removed_dir)
			emerg_run(c->cmds[c->ncmd_net].argv);
	}
	errno = saved;
}

/* --- Accessors -------------------------------------------------------------------------------- */

int cl_size(const struct cl_cluster *c)
{
	return c->n;
}
const struct cl_spec *cl_get_spec(const struct cl_cluster *c)
{
	return &c->spec;
}
const char *cl_endpoint(const struct cl_cluster *c, int i)
{
	return i >= 0 && i < c->n ? c->m[i].endpoint : "";
}
const char *cl_endpoints(const struct cl_cluster *c)
{
	return c->endpoints;
}
const char *cl_name(const struct cl_cluster *c, int i)
{
	return i >= 0 && i < c->n ? c->m[i].name : "";
}
const char *cl_dir(const struct cl_cluster *c)
{
	return c->dir;
}
const char *cl_log_path(const struct cl_cluster *c, int i)
{
	return i >= 0 && i < c->n ? c->m[i].log_path : "";
}
const char *cl_errmsg(const struct cl_cluster *c)
{
	return c->err;
}
pid_t cl_pid(const struct cl_cluster *c, int i)
{
	return i >= 0 && i < c->n ? c->m[i].pid : 0;
}
uint64_t cl_member_id(const struct cl_cluster *c, int i)
{
	return i >= 0 && i < c->n ? c->m[i].id : 0;
}
enum cl_member_state cl_state(const struct cl_cluster *c, int i)
{
	return i >= 0 && i < c->n ? c->m[i].state : CL_DOWN;
}
int cl_is_partitioned(const struct cl_cluster *c, int i)
{
	return i >= 0 && i < c->n ? c->m[i].partitioned : 0;
}

/* --- Faults ----------------------------------------------------------------------------------- */

int cl_kill(struct cl_cluster *c, int i)
{
	int rc = valid_index(c, i, "kill");
	if (rc != 0)
		return rc;
	struct cl_member *m = &c->m[i];
	reap(c, i);
	if (m->pid <= 0)
		return seterr(c, CL_ESTATE, "kill: %s is not running", m->name);
	if (kill(m->pid, SIGKILL) != 0)
		return seterr(c, CL_ESYS, "kill -9 %s (pid %d): %s", m->name, (int)m->pid,
			      strerror(errno));
	if (wait_gone(m->pid) != 0)
		return seterr(c, CL_ETIMEDOUT, "kill: %s (pid %d) did not exit within 10 s",
			      m->name, (int)m->pid);
	m->pid = 0;
	m->state = CL_DOWN;
	m->exit_status = -1; /* our doing, not a crash */
	c->last_killed = i;
	return 0;
}

int cl_pause(struct cl_cluster *c, int i)
{
	int rc = valid_index(c, i, "pause");
	if (rc != 0)
		return rc;
	struct cl_member *m = &c->m[i];
	reap(c, i);
	if (m->state != CL_RUNNING)
		return seterr(c, CL_ESTATE, "pause: %s is not running (or already paused)",
			      m->name);
	if (kill(m->pid, SIGSTOP) != 0)
		return seterr(c, CL_ESYS, "SIGSTOP %s (pid %d): %s", m->name, (int)m->pid,
			      strerror(errno));
	/* Return once the kernel has stopped it, so the fault's time is the pause's time. */
	for (int iter = 0; iter < 2000; iter++) {
		int status = 0;
		pid_t w = waitpid(m->pid, &status, WUNTRACED | WNOHANG);
		if (w == m->pid && WIFSTOPPED(status))
			break;
		if (w == m->pid) {
			m->pid = 0;
			m->state = CL_DOWN;
			m->exit_status = status;
			return seterr(c, CL_ESTATE, "pause: %s exited", m->name);
		}
		sleep_ns(500000);
	}
	m->state = CL_PAUSED;
	return 0;
}

int cl_resume(struct cl_cluster *c, int i)
{
	int rc = valid_index(c, i, "resume");
	if (rc != 0)
		return rc;
	struct cl_member *m = &c->m[i];
	if (m->state != CL_PAUSED)
		return seterr(c, CL_ESTATE, "resume: %s is not paused", m->name);
	if (kill(m->pid, SIGCONT) != 0)
		return seterr(c, CL_ESYS, "SIGCONT %s (pid %d): %s", m->name, (int)m->pid,
			      strerror(errno));
	m->state = CL_RUNNING;
	return 0;
}

int cl_restart(struct cl_cluster *c, int i)
{
	int rc = valid_index(c, i, "restart");
	if (rc != 0)
		return rc;
	reap(c, i);
	if (c->m[i].state != CL_DOWN)
		return seterr(c, CL_ESTATE, "restart: %s is still running (kill it first)",
			      c->m[i].name);
	if (!c->started || c->stopped)
		return seterr(c, CL_ESTATE, "restart: the cluster is not started");
	return spawn(c, i);
}

static int link_set(struct cl_cluster *c, int i, const char *updown)
{
	char out[256];
	const char *a[] = { c->ip_bin, "link", "set", c->m[i].veth_host, updown, NULL };
	return run_list(c, a, out, sizeof out);
}

int cl_partition(struct cl_cluster *c, const int *members, int n)
{
	if (!c->spec.netns)
		return seterr(
			c, CL_ENOTSUP,
			"partition needs netns = on (root): members on one loopback cannot be "
			"cut off from each other");
	if (n < 1 || n > c->n)
		return seterr(c, CL_EINVAL, "partition: %d members given (1..%d)", n, c->n);
	for (int k = 0; k < n; k++) {
		int rc = valid_index(c, members[k], "partition");
		if (rc != 0)
			return rc;
	}
	for (int k = 0; k < n; k++) {
		int rc = link_set(c, members[k], "down");
		if (rc != 0)
			return rc;
		c->m[members[k]].partitioned = 1;
	}
	return 0;
}

static int heal_one(struct cl_cluster *c, int i)
{
	if (!c->m[i].partitioned)
		return 0;
	int rc = link_set(c, i, "up");
	if (rc == 0)
		c->m[i].partitioned = 0;
	return rc;
}

int cl_heal(struct cl_cluster *c)
{
	if (!c->spec.netns)
		return seterr(c, CL_ENOTSUP, "heal needs netns = on (root): there is no partition");
	int first = 0;
	for (int i = 0; i < c->n; i++) {
		int rc = heal_one(c, i);
		if (rc != 0 && first == 0)
			first = rc;
	}
	return first;
}

int cl_netem(struct cl_cluster *c, int i, int delay_ms, int jitter_ms, double loss_pct)
{
	int rc = valid_index(c, i, "netem");
	if (rc != 0)
		return rc;
	if (!c->spec.netns)
		return seterr(c, CL_ENOTSUP,
			      "netem needs netns = on (root): delay and loss go on a member's own "
			      "veth");
	if (delay_ms < 0 || delay_ms > 60000 || jitter_ms < 0 || jitter_ms > delay_ms ||
	    !(loss_pct >= 0.0 && loss_pct <= 100.0))
		return seterr(c, CL_EINVAL,
			      "netem: delay 0..60000 ms, jitter 0..delay, loss 0..100%% (got %d, "
			      "%d, %g)",
			      delay_ms, jitter_ms, loss_pct);
	if (c->netem_missing)
		return seterr(c, CL_ENOTSUP, CL_NETEM_MISSING);
	if (c->tc_bin[0] == '\0')
		return seterr(c, CL_ENOTSUP, "netem needs the tc command (iproute2)");
	struct cl_member *m = &c->m[i];
	char out[512];
	if (delay_ms == 0 && loss_pct == 0.0) {
		const char *d1[] = { c->tc_bin, "qdisc", "del", "dev", m->veth_host, "root", NULL };
		const char *d2[] = { c->tc_bin, "-n",       m->ns,  "qdisc", "del",
				     "dev",     m->veth_ns, "root", NULL };
		if (m->netem) {
			run_list(c, d1, out, sizeof out);
			run_list(c, d2, out, sizeof out);
		}
		m->netem = 0;
		return 0;
	}
	char d[32], j[32], l[32];
	snprintf(d, sizeof d, "%dms", delay_ms);
	snprintf(j, sizeof j, "%dms", jitter_ms);
	snprintf(l, sizeof l, "%g%%", loss_pct);
	/* Both ends: the bridge side delays what reaches the member, the namespace side what
	 * leaves it, so every round trip through the member gets the delay twice, as on a slow
	 * link. */
	const char *a1[] = { c->tc_bin, "qdisc", "replace", "dev", m->veth_host,
			     "root",    "netem", "delay",   d,     j,
			     "loss",    l,       NULL };
	const char *a2[] = { c->tc_bin, "-n",       m->ns,  "qdisc", "replace",
			     "dev",     m->veth_ns, "root", "netem", "delay",
			     d,         j,          "loss", l,       NULL };
	for (int k = 0; k < 2; k++) {
		rc = run_list(c, k == 0 ? a1 : a2, out, sizeof out);
		if (rc != 0) {
			if (strstr(out, "qdisc kind is unknown") != NULL ||
			    strstr(out, "Unknown qdisc") != NULL ||
			    strstr(out, "Error: Specified qdisc") != NULL) {
				c->netem_missing = 1;
				return seterr(c, CL_ENOTSUP, CL_NETEM_MISSING);
			}
			return rc;
		}
		m->netem = 1;
	}
	return 0;
}

/* --- Fault specs ------------------------------------------------------------------------------ */

static const char *const fault_names[] = {
	[CL_F_KILL_LEADER] = "kill-leader",
	[CL_F_KILL_FOLLOWER] = "kill-follower",
	[CL_F_PAUSE_LEADER] = "pause-leader",
	[CL_F_PAUSE_FOLLOWER] = "pause-follower",
	[CL_F_RESTART] = "restart",
	[CL_F_PARTITION_LEADER] = "partition-leader",
	[CL_F_PARTITION_MINORITY] = "partition-minority",
	[CL_F_NETEM_LEADER] = "netem-leader",
	[CL_F_HEAL] = "heal",
	[CL_F_RESUME] = "resume",
};
#define CL_NFAULT_KINDS ((int)(sizeof fault_names / sizeof fault_names[0]))

const char *cl_fault_kind_name(enum cl_fault_kind k)
{
	return (int)k >= 0 && (int)k < CL_NFAULT_KINDS ? fault_names[k] : "?";
}

/* "500ms", "5s", "1.5s", "2m", "0" -> ns. */
static int parse_dur(const char *s, size_t len, int64_t *out)
{
	char buf[32];
	if (len == 0 || len >= sizeof buf)
		return CL_EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (!isdigit((unsigned char)buf[0]))
		return CL_EINVAL;
	char *end = NULL;
	errno = 0;
	double v = strtod(buf, &end);
	if (errno != 0 || end == buf || !(v >= 0.0))
		return CL_EINVAL;
	double mult;
	if (strcmp(end, "ms") == 0)
		mult = 1e6;
	else if (strcmp(end, "s") == 0)
		mult = 1e9;
	else if (strcmp(end, "m") == 0)
		mult = 60e9;
	else if (strcmp(end, "us") == 0)
		mult = 1e3;
	else if (*end == '\0' && v == 0.0)
		mult = 0;
	else
		return CL_EINVAL;
	double ns = v * mult;
	if (ns > 86400e9)
		return CL_EINVAL;
	*out = (int64_t)ns;
	return 0;
}

static int parse_netem_params(const char *p, size_t len, struct cl_fault *f, char *err,
			      size_t errlen)
{
	char buf[128];
	if (len >= sizeof buf) {
		fmt_err(err, errlen, "netem parameters too long");
		return CL_EINVAL;
	}
	memcpy(buf, p, len);
	buf[len] = '\0';
	char *save = NULL;
	for (char *kv = strtok_r(buf, ",", &save); kv != NULL; kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');
		if (eq == NULL) {
			fmt_err(err, errlen, "netem parameter '%s': expected name=value", kv);
			return CL_EINVAL;
		}
		*eq = '\0';
		const char *v = eq + 1;
		int64_t ns = 0;
		if (strcmp(kv, "delay") == 0 || strcmp(kv, "jitter") == 0) {
			if (parse_dur(v, strlen(v), &ns) != 0 || ns > 60000000000LL) {
				fmt_err(err, errlen, "netem %s '%s': expected a duration like 50ms",
					kv, v);
				return CL_EINVAL;
			}
			if (kv[0] == 'd')
				f->delay_ms = (int)(ns / 1000000);
			else
				f->jitter_ms = (int)(ns / 1000000);
		} else if (strcmp(kv, "loss") == 0) {
			char *end = NULL;
			double l = strtod(v, &end);
			if (end == v || (*end != '\0' && strcmp(end, "%") != 0) || !(l >= 0.0) ||
			    l > 100.0) {
				fmt_err(err, errlen,
					"netem loss '%s': expected a percentage like 5%%", v);
				return CL_EINVAL;
			}
			f->loss_pct = l;
		} else {
			fmt_err(err, errlen, "netem parameter '%s': known are delay, jitter, loss",
				kv);
			return CL_EINVAL;
		}
	}
	if (f->delay_ms == 0 && f->loss_pct == 0.0) {
		fmt_err(err, errlen, "netem-leader needs delay=... or loss=...");
		return CL_EINVAL;
	}
	if (f->jitter_ms > f->delay_ms) {
		fmt_err(err, errlen, "netem jitter must not exceed the delay");
		return CL_EINVAL;
	}
	return 0;
}

int cl_fault_parse_err(const char *s, struct cl_fault *f, char *err, size_t errlen)
{
	memset(f, 0, sizeof *f);
	if (s == NULL || *s == '\0') {
		fmt_err(err, errlen, "empty fault");
		return CL_EINVAL;
	}
	snprintf(f->text, sizeof f->text, "%s", s);
	const char *at = strchr(s, '@');
	if (at == NULL) {
		fmt_err(err, errlen,
			"fault '%s': expected <kind>[:<params>]@<time>[+<duration>], e.g. "
			"kill-leader@5s",
			s);
		return CL_EINVAL;
	}
	const char *colon = memchr(s, ':', (size_t)(at - s));
	size_t klen = (size_t)((colon ? colon : at) - s);
	int kind = -1;
	for (int k = 0; k < CL_NFAULT_KINDS; k++)
		if (strlen(fault_names[k]) == klen && strncmp(s, fault_names[k], klen) == 0)
			kind = k;
	if (kind < 0) {
		fmt_err(err, errlen,
			"fault '%s': unknown kind '%.*s' (known: kill-leader, kill-follower, "
			"pause-leader, pause-follower, restart, partition-leader, "
			"partition-minority, netem-leader, heal, resume)",
			s, (int)klen, s);
		return CL_EINVAL;
	}
	f->kind = (enum cl_fault_kind)kind;
	if (colon != NULL && kind != CL_F_NETEM_LEADER) {
		fmt_err(err, errlen, "fault '%s': only netem-leader takes parameters", s);
		return CL_EINVAL;
	}
	if (kind == CL_F_NETEM_LEADER) {
		if (colon == NULL) {
			fmt_err(err, errlen,
				"fault '%s': netem-leader needs parameters, e.g. "
				"netem-leader:delay=50ms,loss=5%%@5s+10s",
				s);
			return CL_EINVAL;
		}
		char e[CL_ERR_MAX];
		if (parse_netem_params(colon + 1, (size_t)(at - colon - 1), f, e, sizeof e) != 0) {
			fmt_err(err, errlen, "fault '%s': %s", s, e);
			return CL_EINVAL;
		}
	}
	const char *plus = strchr(at + 1, '+');
	size_t tlen = plus ? (size_t)(plus - at - 1) : strlen(at + 1);
	if (parse_dur(at + 1, tlen, &f->at_ns) != 0) {
		fmt_err(err, errlen, "fault '%s': time '%.*s': expected e.g. 500ms, 5s, 1.5s or 2m",
			s, (int)tlen, at + 1);
		return CL_EINVAL;
	}
	if (plus != NULL) {
		if (parse_dur(plus + 1, strlen(plus + 1), &f->dur_ns) != 0 || f->dur_ns == 0) {
			fmt_err(err, errlen,
				"fault '%s': duration '%s': expected e.g. 500ms, 3s or 1m", s,
				plus + 1);
			return CL_EINVAL;
		}
		if (kind != CL_F_PAUSE_LEADER && kind != CL_F_PAUSE_FOLLOWER &&
		    kind != CL_F_PARTITION_LEADER && kind != CL_F_PARTITION_MINORITY &&
		    kind != CL_F_NETEM_LEADER) {
			fmt_err(err, errlen,
				"fault '%s': only pause-*, partition-* and netem-leader take a "
				"+duration",
				s);
			return CL_EINVAL;
		}
	}
	return 0;
}

int cl_fault_parse(const char *s, struct cl_fault *f)
{
	return cl_fault_parse_err(s, f, NULL, 0);
}

int cl_faults_parse(const char *list, struct cl_fault *out, int max, char *err, size_t errlen)
{
	size_t len = strlen(list);
	char *buf = malloc(len + 1);
	if (buf == NULL) {
		fmt_err(err, errlen, "out of memory");
		return CL_ENOMEM;
	}
	memcpy(buf, list, len + 1);
	int n = 0, rc = 0;
	char *save = NULL;
	for (char *w = strtok_r(buf, "; \t\r\n", &save); w != NULL;
	     w = strtok_r(NULL, "; \t\r\n", &save)) {
		if (n >= max) {
			fmt_err(err, errlen, "more than %d faults", max);
			rc = CL_EINVAL;
			break;
		}
		if ((rc = cl_fault_parse_err(w, &out[n], err, errlen)) != 0)
			break;
		n++;
	}
	free(buf);
	return rc != 0 ? rc : n;
}

/* --- The schedule ----------------------------------------------------------------------------- */

static int sched_cancelled(struct cl_cluster *c)
{
	pthread_mutex_lock(&c->mu);
	int v = c->cancel;
	pthread_mutex_unlock(&c->mu);
	return v;
}

/* A member to hit that is not the leader l: the last running, reachable one. */
static int pick_follower(struct cl_cluster *c, int l)
{
	for (int i = c->n - 1; i >= 0; i--)
		if (i != l && reachable(c, i))
			return i;
	return -1;
}

/* Applies fault k (its event in slot s is filled in). */
static void apply_fault(struct cl_cluster *c, int k, struct cl_event_slot *s)
{
	const struct cl_fault *f = &c->faults[k];
	struct cl_event *e = &s->ev;
	int leader_kind = f->kind == CL_F_KILL_LEADER || f->kind == CL_F_PAUSE_LEADER ||
			  f->kind == CL_F_PARTITION_LEADER || f->kind == CL_F_NETEM_LEADER;
	int rc = 0, target = -1;
	/* A fault on the leader waits (up to 5 s) for one, as after an earlier fault. */
	int l = leader_kind ? cl_wait_leader(c, -1, 5000) : cl_leader(c, 500);
	e->old_leader = l >= 0 ? l : -1;
	s->watch_not = -1;
	if (leader_kind && l < 0) {
		rc = l;
		goto out;
	}
	switch (f->kind) {
	case CL_F_KILL_LEADER:
	case CL_F_PAUSE_LEADER:
	case CL_F_PARTITION_LEADER:
	case CL_F_NETEM_LEADER:
		target = l;
		break;
	case CL_F_KILL_FOLLOWER:
	case CL_F_PAUSE_FOLLOWER:
	case CL_F_PARTITION_MINORITY:
		target = pick_follower(c, l);
		if (target < 0) {
			rc = seterr(c, CL_ESTATE, "%s: no running follower", fault_names[f->kind]);
			goto out;
		}
		break;
	case CL_F_RESTART:
		target = c->last_killed;
		if (target < 0) {
			rc = seterr(c, CL_ESTATE, "restart: no member was killed");
			goto out;
		}
		break;
	default:
		break;
	}
	e->member = target;
	e->injected_ns = cl_now_ns();
	switch (f->kind) {
	case CL_F_KILL_LEADER:
	case CL_F_KILL_FOLLOWER:
		rc = cl_kill(c, target);
		break;
	case CL_F_PAUSE_LEADER:
	case CL_F_PAUSE_FOLLOWER:
		rc = cl_pause(c, target);
		break;
	case CL_F_PARTITION_LEADER:
	case CL_F_PARTITION_MINORITY:
		rc = cl_partition(c, &target, 1);
		break;
	case CL_F_NETEM_LEADER:
		rc = cl_netem(c, target, f->delay_ms, f->jitter_ms, f->loss_pct);
		break;
	case CL_F_RESTART:
		rc = cl_restart(c, target);
		break;
	case CL_F_HEAL:
		rc = cl_heal(c);
		break;
	case CL_F_RESUME:
		for (int i = 0; i < c->n; i++)
			if (c->m[i].state == CL_PAUSED) {
				int r2 = cl_resume(c, i);
				if (rc == 0)
					rc = r2;
			}
		break;
	}
	/* The injection time is when the fault took effect (kill reaped, pause confirmed). */
	if (rc == 0 && f->kind != CL_F_HEAL && f->kind != CL_F_RESUME && f->kind != CL_F_RESTART)
		e->injected_ns = cl_now_ns();
	if (rc == 0 && (f->kind == CL_F_KILL_LEADER || f->kind == CL_F_PAUSE_LEADER ||
			f->kind == CL_F_PARTITION_LEADER))
		s->watch_not = target;
out:
	e->rc = rc;
	if (rc < 0)
		snprintf(e->err, sizeof e->err, "%s", c->err);
	s->undo_member = target;
	s->watching = rc == 0;
	if (e->injected_ns == 0)
		e->injected_ns = cl_now_ns();
}

static void undo_fault(struct cl_cluster *c, struct cl_event_slot *s)
{
	const struct cl_fault *f = &s->ev.fault;
	int i = s->undo_member, rc = 0;
	if (s->ev.rc != 0 || i < 0)
		return;
	switch (f->kind) {
	case CL_F_PAUSE_LEADER:
	case CL_F_PAUSE_FOLLOWER:
		if (c->m[i].state == CL_PAUSED)
			rc = cl_resume(c, i);
		break;
	case CL_F_PARTITION_LEADER:
	case CL_F_PARTITION_MINORITY:
		rc = heal_one(c, i);
		break;
	case CL_F_NETEM_LEADER:
		rc = cl_netem(c, i, 0, 0, 0.0);
		break;
	default:
		return;
	}
	pthread_mutex_lock(&c->mu);
	s->ev.undone_ns = cl_now_ns();
	if (rc != 0 && s->ev.rc == 0) {
		s->ev.rc = rc;
		memcpy(s->ev.err, "undo: ", 7);
		copy_trunc(s->ev.err + 6, sizeof s->ev.err - 6, c->err);
	}
	pthread_mutex_unlock(&c->mu);
}

struct sched_act {
	int64_t at;
	int fault;
	int undo;
	int done;
};

static void *sched_main(void *arg)
{
	struct cl_cluster *c = arg;
	struct sched_act acts[2 * CL_MAX_FAULTS];
	int na = 0;
	int64_t end = c->t0;
	for (int k = 0; k < c->nf; k++) {
		acts[na++] = (struct sched_act){ c->t0 + c->faults[k].at_ns, k, 0, 0 };
		if (c->faults[k].dur_ns > 0)
			acts[na++] = (struct sched_act){
				c->t0 + c->faults[k].at_ns + c->faults[k].dur_ns, k, 1, 0
			};
		int64_t e = c->t0 + c->faults[k].at_ns + c->faults[k].dur_ns;
		if (e > end)
			end = e;
	}
	/* Each fault may spend up to ~6 s finding its target; then 30 s of leader watch. */
	int64_t hard_end = end + CL_WATCH_NS + (int64_t)c->nf * 7000000000LL + 5000000000LL;
	for (long iter = 0; iter < 50000000L; iter++) {
		int64_t now = cl_now_ns();
		if (now > hard_end)
			break;
		int cancel = sched_cancelled(c);
		/* The earliest pending action; undos still run after a cancel. */
		int next = -1;
		for (int a = 0; a < na; a++) {
			if (acts[a].done || (cancel && !acts[a].undo))
				continue;
			if (acts[a].undo && c->ev_of[acts[a].fault] < 0)
				continue; /* its fault has not run yet */
			if (cancel && acts[a].at > now)
				acts[a].at = now; /* a cancel ends pauses and cuts at once */
			if (next < 0 || acts[a].at < acts[next].at)
				next = a;
		}
		if (cancel)
			for (int a = 0; a < na; a++)
				if (!acts[a].undo)
					acts[a].done = 1;
		if (next >= 0 && acts[next].at <= now) {
			struct sched_act *a = &acts[next];
			a->done = 1;
			if (a->undo) {
				undo_fault(c, &c->ev[c->ev_of[a->fault]]);
			} else {
				struct cl_event_slot s;
				memset(&s, 0, sizeof s);
				s.ev.index = a->fault;
				s.ev.fault = c->faults[a->fault];
				s.ev.member = -1;
				s.ev.old_leader = -1;
				s.ev.new_leader = -1;
				apply_fault(c, a->fault, &s);
				/* The duration runs from when the fault took effect. */
				for (int u = 0; u < na; u++)
					if (acts[u].undo && acts[u].fault == a->fault)
						acts[u].at = s.ev.injected_ns +
							     c->faults[a->fault].dur_ns;
				pthread_mutex_lock(&c->mu);
				c->ev_of[a->fault] = c->nev;
				c->ev[c->nev++] = s;
				if (s.ev.rc < 0 && c->sched_rc == 0)
					c->sched_rc = s.ev.rc;
				pthread_mutex_unlock(&c->mu);
			}
			continue;
		}
		/* Leader watches: one status round serves all of them. */
		int watching = 0;
		for (int k = 0; k < c->nev; k++) {
			struct cl_event_slot *s = &c->ev[k];
			if (s->watching && now - s->ev.injected_ns > CL_WATCH_NS)
				s->watching = 0;
			watching += s->watching;
		}
		int64_t wake = next >= 0 ? acts[next].at : now + 50000000LL;
		if (watching > 0 && !cancel) {
			int64_t budget = (wake - now) / 1000000LL;
			budget = budget < 20 ? 20 : budget > 250 ? 250 : budget;
			int l = cl_leader(c, (int)budget);
			int64_t seen = cl_now_ns();
			pthread_mutex_lock(&c->mu);
			for (int k = 0; k < c->nev && l >= 0; k++) {
				struct cl_event_slot *s = &c->ev[k];
				if (!s->watching || l == s->watch_not)
					continue;
				s->watching = 0;
				s->ev.new_leader = l;
				s->ev.new_leader_ns = seen;
				s->ev.leader_changed = l != s->ev.old_leader;
			}
			pthread_mutex_unlock(&c->mu);
			int64_t nx = now + CL_POLL_NS;
			if (nx < wake)
				wake = nx;
		} else if (next < 0) {
			break; /* nothing pending, nothing watched */
		}
		now = cl_now_ns();
		if (wake > now)
			sleep_ns(wake - now < 50000000LL ? wake - now : 50000000LL);
	}
	return NULL;
}

int cl_schedule_start(struct cl_cluster *c, const struct cl_fault *faults, int n, int64_t t0_ns)
{
	if (c->sched_running)
		return seterr(c, CL_ESTATE, "a schedule is already running");
	if (!c->started || c->stopped)
		return seterr(c, CL_ESTATE, "schedule: the cluster is not running");
	if (n < 0 || n > CL_MAX_FAULTS)
		return seterr(c, CL_EINVAL, "schedule: %d faults (at most %d)", n, CL_MAX_FAULTS);
	pthread_mutex_lock(&c->mu);
	memcpy(c->faults, faults, (size_t)n * sizeof *faults);
	c->nf = n;
	c->nev = 0;
	c->cancel = 0;
	c->sched_rc = 0;
	c->t0 = t0_ns;
	for (int k = 0; k < CL_MAX_FAULTS; k++)
		c->ev_of[k] = -1;
	pthread_mutex_unlock(&c->mu);
	int e = pthread_create(&c->thr, NULL, sched_main, c);
	if (e != 0)
		return seterr(c, CL_ESYS, "schedule: pthread_create: %s", strerror(e));
	c->sched_running = 1;
	return 0;
}

static void sched_join(struct cl_cluster *c, int cancel)
{
	if (!c->sched_running)
		return;
	if (cancel) {
		pthread_mutex_lock(&c->mu);
		c->cancel = 1;
		pthread_mutex_unlock(&c->mu);
	}
	pthread_join(c->thr, NULL);
	c->sched_running = 0;
}

int cl_schedule_wait(struct cl_cluster *c)
{
	sched_join(c, 0);
	return c->sched_rc;
}

int cl_schedule_cancel(struct cl_cluster *c)
{
	sched_join(c, 1);
	return c->sched_rc;
}

int cl_schedule_events(struct cl_cluster *c, struct cl_event **events, int *n)
{
	*events = NULL;
	*n = 0;
	pthread_mutex_lock(&c->mu);
	int k = c->nev;
	struct cl_event *out = NULL;
	if (k > 0) {
		out = calloc((size_t)k, sizeof *out);
		if (out == NULL) {
			pthread_mutex_unlock(&c->mu);
			return CL_ENOMEM;
		}
		for (int j = 0; j < k; j++)
			out[j] = c->ev[j].ev;
	}
	pthread_mutex_unlock(&c->mu);
	*events = out;
	*n = k;
	return 0;
}
