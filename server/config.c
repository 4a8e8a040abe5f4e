/* config.c: a member's configuration from flags, CAIRN_* variables and a YAML file, with
 * etcd 3.4's names, defaults, precedence and checks (config.h says which and why). One table
 * of options drives all three sources, so a flag, its variable and its file key cannot drift
 * apart. The YAML file is read with libyaml's document loader, which keeps the line of every
 * node for the messages. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

/* ---- the options ---- */

enum opt_kind {
	K_STRING,     /* any non-empty text */
	K_PATH,       /* a file or directory; empty means not given */
	K_BOOL,       /* true or false */
	K_UINT,       /* decimal, within [min, max] */
	K_URLS_BIND,  /* comma-separated URLs to listen on: numeric IP or localhost */
	K_URLS_HOST,  /* comma-separated URLs to advertise: any host */
	K_CLUSTER,    /* name=url[,name=url...] */
	K_STATE,      /* new | existing */
	K_LOG_LEVEL,  /* debug | info | warn | error | panic | fatal */
	K_ADDR_BIND,  /* host:port to listen on */
	K_ADDRS_HOST, /* comma-separated host:port */
	K_TAGS,       /* comma-separated key=value */
};

enum opt_id {
	O_NAME,
	O_DATA_DIR,
	O_LISTEN_CLIENT_URLS,
	O_LISTEN_PEER_URLS,
	O_HEARTBEAT,
	O_ELECTION,
	O_SNAPSHOT_COUNT,
	O_QUOTA,
	O_MAX_REQUEST_BYTES,
	O_MAX_TXN_OPS,
	O_ADVERTISE_CLIENT_URLS,
	O_INITIAL_ADVERTISE_PEER_URLS,
	O_INITIAL_CLUSTER,
	O_INITIAL_CLUSTER_STATE,
	O_INITIAL_CLUSTER_TOKEN,
	O_CERT_FILE,
	O_KEY_FILE,
	O_TRUSTED_CA_FILE,
	O_CLIENT_CERT_AUTH,
	O_PEER_CERT_FILE,
	O_PEER_KEY_FILE,
	O_PEER_TRUSTED_CA_FILE,
	O_PEER_CLIENT_CERT_AUTH,
	O_LOG_LEVEL,
	O_GOSSIP_LISTEN,
	O_GOSSIP_JOIN,
	O_GOSSIP_KEY_FILE,
	O_GOSSIP_LABEL,
	O_GOSSIP_TAG,
	O_GOSSIP_PROBE_INTERVAL,
	O_GOSSIP_PROBE_TIMEOUT,
	O_GOSSIP_INTERVAL,
	O_GOSSIP_SUSPICION_MULT,
	O_GOSSIP_PUSHPULL_INTERVAL,
	O_GOSSIP_REAP_DEAD,
	O_GOSSIP_REAP_LEFT,
	O_GOSSIP_STORE_MEMBERS,
	O_CONFIG_FILE,
	O__COUNT
};

/* TLS options live in the file under client-transport-security / peer-transport-security,
 * named there without the "peer-" prefix, as in etcd's file format. */
enum opt_file {
	F_TOP,    /* a top-level key named like the flag */
	F_CLIENT, /* a key of client-transport-security */
	F_PEER,   /* a key of peer-transport-security */
	F_NONE,   /* not in the file (--config-file) */
};

struct opt {
	const char *flag;     /* the flag without dashes, and the top-level file key */
	const char *env;      /* the environment variable */
	const char *file_key; /* the key inside a *-transport-security mapping, or NULL */
	enum opt_kind kind;
	enum opt_file file;
	uint64_t min, max; /* K_UINT */
};

static const struct opt opts[O__COUNT] = {
	[O_NAME] = { "name", "CAIRN_NAME", NULL, K_STRING, F_TOP, 0, 0 },
	[O_DATA_DIR] = { "data-dir", "CAIRN_DATA_DIR", NULL, K_PATH, F_TOP, 0, 0 },
	[O_LISTEN_CLIENT_URLS] = { "listen-client-urls", "CAIRN_LISTEN_CLIENT_URLS", NULL,
				   K_URLS_BIND, F_TOP, 0, 0 },
	[O_LISTEN_PEER_URLS] = { "listen-peer-urls", "CAIRN_LISTEN_PEER_URLS", NULL, K_URLS_BIND,
				 F_TOP, 0, 0 },
	[O_HEARTBEAT] = { "heartbeat-interval", "CAIRN_HEARTBEAT_INTERVAL", NULL, K_UINT, F_TOP, 0,
			  UINT32_MAX },
	[O_ELECTION] = { "election-timeout", "CAIRN_ELECTION_TIMEOUT", NULL, K_UINT, F_TOP, 0,
			 UINT32_MAX },
	[O_SNAPSHOT_COUNT] = { "snapshot-count", "CAIRN_SNAPSHOT_COUNT", NULL, K_UINT, F_TOP, 0,
			       UINT64_MAX },
	[O_QUOTA] = { "quota-backend-bytes", "CAIRN_QUOTA_BACKEND_BYTES", NULL, K_UINT, F_TOP, 0,
		      SRV_CONFIG_MAX_QUOTA_BYTES },
	[O_MAX_REQUEST_BYTES] = { "max-request-bytes", "CAIRN_MAX_REQUEST_BYTES", NULL, K_UINT,
				  F_TOP, 1, SRV_CONFIG_MAX_MAX_REQUEST_BYTES },
	[O_MAX_TXN_OPS] = { "max-txn-ops", "CAIRN_MAX_TXN_OPS", NULL, K_UINT, F_TOP, 1,
			    SRV_CONFIG_MAX_MAX_TXN_OPS },
	[O_ADVERTISE_CLIENT_URLS] = { "advertise-client-urls", "CAIRN_ADVERTISE_CLIENT_URLS", NULL,
				      K_URLS_HOST, F_TOP, 0, 0 },
	[O_INITIAL_ADVERTISE_PEER_URLS] = { "initial-advertise-peer-urls",
					    "CAIRN_INITIAL_ADVERTISE_PEER_URLS", NULL, K_URLS_HOST,
					    F_TOP, 0, 0 },
	[O_INITIAL_CLUSTER] = { "initial-cluster", "CAIRN_INITIAL_CLUSTER", NULL, K_CLUSTER, F_TOP,
				0, 0 },
	[O_INITIAL_CLUSTER_STATE] = { "initial-cluster-state", "CAIRN_INITIAL_CLUSTER_STATE", NULL,
				      K_STATE, F_TOP, 0, 0 },
	[O_INITIAL_CLUSTER_TOKEN] = { "initial-cluster-token", "CAIRN_INITIAL_CLUSTER_TOKEN", NULL,
				      K_STRING, F_TOP, 0, 0 },
	[O_CERT_FILE] = { "cert-file", "CAIRN_CERT_FILE", "cert-file", K_PATH, F_CLIENT, 0, 0 },
	[O_KEY_FILE] = { "key-file", "CAIRN_KEY_FILE", "key-file", K_PATH, F_CLIENT, 0, 0 },
	[O_TRUSTED_CA_FILE] = { "trusted-ca-file", "CAIRN_TRUSTED_CA_FILE", "trusted-ca-file",
				K_PATH, F_CLIENT, 0, 0 },
	[O_CLIENT_CERT_AUTH] = { "client-cert-auth", "CAIRN_CLIENT_CERT_AUTH", "client-cert-auth",
				 K_BOOL, F_CLIENT, 0, 0 },
	[O_PEER_CERT_FILE] = { "peer-cert-file", "CAIRN_PEER_CERT_FILE", "cert-file", K_PATH,
			       F_PEER, 0, 0 },
	[O_PEER_KEY_FILE] = { "peer-key-file", "CAIRN_PEER_KEY_FILE", "key-file", K_PATH, F_PEER, 0,
			      0 },
	[O_PEER_TRUSTED_CA_FILE] = { "peer-trusted-ca-file", "CAIRN_PEER_TRUSTED_CA_FILE",
				     "trusted-ca-file", K_PATH, F_PEER, 0, 0 },
	[O_PEER_CLIENT_CERT_AUTH] = { "peer-client-cert-auth", "CAIRN_PEER_CLIENT_CERT_AUTH",
				      "client-cert-auth", K_BOOL, F_PEER, 0, 0 },
	[O_LOG_LEVEL] = { "log-level", "CAIRN_LOG_LEVEL", NULL, K_LOG_LEVEL, F_TOP, 0, 0 },
	[O_GOSSIP_LISTEN] = { "gossip-listen", "CAIRN_GOSSIP_LISTEN", NULL, K_ADDR_BIND, F_TOP, 0,
			      0 },
	[O_GOSSIP_JOIN] = { "gossip-join", "CAIRN_GOSSIP_JOIN", NULL, K_ADDRS_HOST, F_TOP, 0, 0 },
	[O_GOSSIP_KEY_FILE] = { "gossip-key-file", "CAIRN_GOSSIP_KEY_FILE", NULL, K_PATH, F_TOP, 0,
				0 },
	[O_GOSSIP_LABEL] = { "gossip-label", "CAIRN_GOSSIP_LABEL", NULL, K_STRING, F_TOP, 0, 0 },
	[O_GOSSIP_TAG] = { "gossip-tag", "CAIRN_GOSSIP_TAG", NULL, K_TAGS, F_TOP, 0, 0 },
	[O_GOSSIP_PROBE_INTERVAL] = { "gossip-probe-interval", "CAIRN_GOSSIP_PROBE_INTERVAL", NULL,
				      K_UINT, F_TOP, 50, 60000 },
	[O_GOSSIP_PROBE_TIMEOUT] = { "gossip-probe-timeout", "CAIRN_GOSSIP_PROBE_TIMEOUT", NULL,
				     K_UINT, F_TOP, 10, 60000 },
	[O_GOSSIP_INTERVAL] = { "gossip-interval", "CAIRN_GOSSIP_INTERVAL", NULL, K_UINT, F_TOP, 10,
				60000 },
	[O_GOSSIP_SUSPICION_MULT] = { "gossip-suspicion-mult", "CAIRN_GOSSIP_SUSPICION_MULT", NULL,
				      K_UINT, F_TOP, 1, 100 },
	[O_GOSSIP_PUSHPULL_INTERVAL] = { "gossip-pushpull-interval",
					 "CAIRN_GOSSIP_PUSHPULL_INTERVAL", NULL, K_UINT, F_TOP, 0,
					 86400000 },
	[O_GOSSIP_REAP_DEAD] = { "gossip-reap-dead", "CAIRN_GOSSIP_REAP_DEAD", NULL, K_UINT, F_TOP,
				 1000, 30ull * 86400000 },
	[O_GOSSIP_REAP_LEFT] = { "gossip-reap-left", "CAIRN_GOSSIP_REAP_LEFT", NULL, K_UINT, F_TOP,
				 1000, 30ull * 86400000 },
	[O_GOSSIP_STORE_MEMBERS] = { "gossip-store-members", "CAIRN_GOSSIP_STORE_MEMBERS", NULL,
				     K_BOOL, F_TOP, 0, 0 },
	[O_CONFIG_FILE] = { "config-file", "CAIRN_CONFIG_FILE", NULL, K_PATH, F_NONE, 0, 0 },
};

static int opt_by_flag(const char *name, size_t len)
{
	for (int i = 0; i < O__COUNT; i++) {
		if (strlen(opts[i].flag) == len && memcmp(opts[i].flag, name, len) == 0) {
			return i;
		}
	}
	return -1;
}

static int opt_by_env(const char *name, size_t len)
{
	for (int i = 0; i < O__COUNT; i++) {
		if (strlen(opts[i].env) == len && memcmp(opts[i].env, name, len) == 0) {
			return i;
		}
	}
	return -1;
}

/* ---- the loader's state and its messages ---- */

enum src_type { SRC_FLAG, SRC_ENV, SRC_FILE };

/* Where a value came from, for messages. */
struct src {
	enum src_type type;
	const char *file; /* SRC_FILE */
	size_t line;      /* SRC_FILE, 1-based */
	const char *key;  /* SRC_FILE: the key as written ("cert-file" inside a mapping) */
};

struct ld {
	struct srv_config *cfg;
	char *err;
	size_t err_len;
	bool by_flag[O__COUNT]; /* given on the command line */
	bool by_env[O__COUNT];  /* given by a CAIRN_* variable */
	bool by_file[O__COUNT]; /* given in the config file */
	bool tags_by_flag;      /* a --gossip-tag was seen: later ones append */
	bool agent;             /* `cairn agent`: gossip options only (agent_opt) */
	bool version;           /* --version was given */
};

static void errf(struct ld *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void errf(struct ld *ld, const char *fmt, ...)
{
	if (ld->err == NULL || ld->err_len == 0) {
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ld->err, ld->err_len, fmt, ap);
	va_end(ap);
}

static int nomem(struct ld *ld)
{
	errf(ld, "out of memory");
	return SRV_CONFIG_ENOMEM;
}

/* A value refused: the message names the flag, variable or file line it came from. A bad
 * flag value is a usage error (exit 2, as Go's flag parser does for etcd). */
static int bad_value(struct ld *ld, int id, const struct src *s, const char *value, const char *why)
{
	switch (s->type) {
	case SRC_FLAG:
		errf(ld, "invalid value \"%s\" for flag --%s: %s", value, opts[id].flag, why);
		return SRV_CONFIG_EUSAGE;
	case SRC_ENV:
		errf(ld, "invalid value \"%s\" for %s: %s", value, opts[id].env, why);
		return SRV_CONFIG_EINVALID;
	case SRC_FILE:
	default:
		errf(ld, "%s:%zu: invalid value \"%s\" for %s: %s", s->file, s->line, value, s->key,
		     why);
		return SRV_CONFIG_EINVALID;
	}
}

static int warn(struct ld *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int warn(struct ld *ld, const char *fmt, ...)
{
	struct srv_config *cfg = ld->cfg;
	if (cfg->warnings_n >= SRV_CONFIG_MAX_WARNINGS) {
		return 0;
	}
	if (cfg->warnings == NULL) {
		cfg->warnings = calloc(SRV_CONFIG_MAX_WARNINGS, sizeof *cfg->warnings);
		if (cfg->warnings == NULL) {
			return nomem(ld);
		}
	}
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	char *w = strdup(buf);
	if (w == NULL) {
		return nomem(ld);
	}
	cfg->warnings[cfg->warnings_n++] = w;
	return 0;
}

/* ---- small parsers (locale-free) ---- */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool eq_nocase(const char *a, size_t alen, const char *b)
{
	if (alen != strlen(b)) {
		return false;
	}
	for (size_t i = 0; i < alen; i++) {
		if (lower(a[i]) != lower(b[i])) {
			return false;
		}
	}
	return true;
}

/* Decimal digits only: no sign, no spaces, no base prefix. */
static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
	if (len == 0) {
		return false;
	}
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (!is_digit(s[i])) {
			return false;
		}
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10) {
			return false;
		}
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* Go's strconv.ParseBool forms, plus YAML 1.1's yes/no/on/off for files. */
static bool parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1",   "t",   "T",  "true", "True", "TRUE", "yes",
					   "Yes", "YES", "on", "On",   "ON",   "y",    "Y" };
	static const char *const no[] = { "0",  "f",  "F",   "false", "False", "FALSE", "no",
					  "No", "NO", "off", "Off",   "OFF",   "n",     "N" };
	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
		if (strcmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
	}
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
		if (strcmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

static char *dup_n(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (d != NULL) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

/* Trim spaces and tabs around [*s, *s + *len), as etcd's strings.TrimSpace. */
static void trim(const char **s, size_t *len)
{
	while (*len > 0 && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t')) {
		(*len)--;
	}
}

/* A DNS name: letters, digits, '-' and '.', at most 253 bytes. */
static bool is_dns_name(const char *h, size_t n)
{
	if (n == 0 || n > 253) {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		if (!is_alnum(h[i]) && h[i] != '-' && h[i] != '.') {
			return false;
		}
	}
	return true;
}

enum addr_err {
	A_OK = 0,
	A_FORM,  /* not host:port */
	A_PORT,  /* port not 1..65535 */
	A_BIND,  /* a name where an IP is needed */
	A_EMPTY, /* empty host */
	A_HOST,  /* neither IP nor DNS name */
	A_NOMEM,
};

/* Split "host:port" or "[v6]:port"; checks the host (numeric IP or localhost when bind, else
 * also a DNS name) and the port. On success *host is a malloc'd copy without brackets, *v6 says
 * whether it was bracketed. */
static enum addr_err parse_hostport(const char *s, size_t n, bool bind, char **host, uint16_t *port,
				    bool *v6)
{
	const char *h;
	size_t hlen;
	const char *p;
	*v6 = false;
	if (n > 0 && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (close == NULL || (size_t)(close - s) + 1 >= n || close[1] != ':') {
			return A_FORM;
		}
		h = s + 1;
		hlen = (size_t)(close - h);
		p = close + 2;
		*v6 = true;
	} else {
		const char *colon = NULL;
		for (size_t i = 0; i < n; i++) {
			if (s[i] == ':') {
				if (colon != NULL) {
					return A_FORM; /* IPv6 needs brackets */
				}
				colon = s + i;
			}
		}
		if (colon == NULL) {
			return A_FORM;
		}
		h = s;
		hlen = (size_t)(colon - s);
		p = colon + 1;
	}
	uint64_t pv;
	if (!parse_u64(p, (size_t)(s + n - p), &pv) || pv == 0 || pv > 65535) {
		return A_PORT;
	}
	if (hlen == 0) {
		return bind ? A_BIND : A_EMPTY;
	}
	char buf[256];
	if (hlen >= sizeof buf) {
		return bind ? A_BIND : A_HOST;
	}
	memcpy(buf, h, hlen);
	buf[hlen] = '\0';
	unsigned char addr[16];
	bool ip = *v6 ? inet_pton(AF_INET6, buf, addr) == 1 : inet_pton(AF_INET, buf, addr) == 1;
	if (*v6 && !ip) {
		return A_HOST;
	}
	if (!ip) {
		if (bind && !eq_nocase(buf, hlen, "localhost")) {
			return A_BIND;
		}
		if (!is_dns_name(buf, hlen)) {
			return A_HOST;
		}
		for (size_t i = 0; i < hlen; i++) {
			buf[i] = lower(buf[i]);
		}
	}
	*host = dup_n(buf, hlen);
	if (*host == NULL) {
		return A_NOMEM;
	}
	*port = (uint16_t)pv;
	return A_OK;
}

static void url_free(struct srv_url *u)
{
	free(u->text);
	free(u->host);
	memset(u, 0, sizeof *u);
}

static void urls_free(struct srv_url_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		url_free(&l->v[i]);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* What the parsers below return for a value they refuse (the reason is in their why buffer);
 * distinct from every SRV_CONFIG_E* code, which are negative. */
#define REFUSED 1

/* Parse one URL ("http://127.0.0.1:2379"); why gets the reason on failure, in etcd's words
 * where etcd has them. Returns 0, REFUSED or SRV_CONFIG_ENOMEM. */
static int url_parse(const char *s, size_t n, bool bind, struct srv_url *out, char *why,
		     size_t why_len)
{
	memset(out, 0, sizeof *out);
	const char *sep = NULL;
	for (size_t i = 0; i + 2 < n; i++) {
		if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
			sep = s + i;
			break;
		}
	}
	bool https;
	if (sep != NULL && eq_nocase(s, (size_t)(sep - s), "http")) {
		https = false;
	} else if (sep != NULL && eq_nocase(s, (size_t)(sep - s), "https")) {
		https = true;
	} else {
		snprintf(why, why_len, "URL scheme must be http or https: %.*s", (int)n, s);
		return REFUSED;
	}
	const char *a = sep + 3;
	size_t alen = (size_t)(s + n - a);
	for (size_t i = 0; i < alen; i++) {
		if (a[i] == '/' || a[i] == '?' || a[i] == '#') {
			snprintf(why, why_len, "URL must not contain a path: %.*s", (int)n, s);
			return REFUSED;
		}
		if (a[i] == '@') {
			snprintf(why, why_len, "URL must not contain user information: %.*s",
				 (int)n, s);
			return REFUSED;
		}
	}
	char *host = NULL;
	uint16_t port = 0;
	bool v6;
	switch (parse_hostport(a, alen, bind, &host, &port, &v6)) {
	case A_OK:
		break;
	case A_FORM:
		snprintf(why, why_len, "URL address does not have the form \"host:port\": %.*s",
			 (int)n, s);
		return REFUSED;
	case A_PORT:
		snprintf(why, why_len, "URL port must be a number from 1 to 65535: %.*s", (int)n,
			 s);
		return REFUSED;
	case A_BIND:
		snprintf(why, why_len, "expected IP in URL for binding (%.*s)", (int)n, s);
		return REFUSED;
	case A_EMPTY:
		snprintf(why, why_len, "unexpected empty host (%.*s)", (int)n, s);
		return REFUSED;
	case A_HOST:
		snprintf(why, why_len, "URL host is not an IP address or a DNS name: %.*s", (int)n,
			 s);
		return REFUSED;
	case A_NOMEM:
	default:
		return SRV_CONFIG_ENOMEM;
	}
	size_t tlen = strlen(host) + 16;
	char *text = malloc(tlen);
	if (text == NULL) {
		free(host);
		return SRV_CONFIG_ENOMEM;
	}
	snprintf(text, tlen, "%s://%s%s%s:%u", https ? "https" : "http", v6 ? "[" : "", host,
		 v6 ? "]" : "", (unsigned)port);
	out->text = text;
	out->host = host;
	out->port = port;
	out->https = https;
	return 0;
}

/* Calls fn for each comma-separated item of value, trimmed; stops at the first non-zero. */
typedef int (*item_fn)(void *arg, const char *item, size_t len);

static int for_each_item(const char *value, item_fn fn, void *arg)
{
	const char *s = value;
	for (;;) {
		const char *comma = strchr(s, ',');
		size_t len = comma != NULL ? (size_t)(comma - s) : strlen(s);
		const char *item = s;
		trim(&item, &len);
		int rc = fn(arg, item, len);
		if (rc != 0) {
			return rc;
		}
		if (comma == NULL) {
			return 0;
		}
		s = comma + 1;
	}
}

struct urls_acc {
	struct srv_url_list list;
	bool bind;
	char why[512];
};

static int urls_item(void *arg, const char *item, size_t len)
{
	struct urls_acc *acc = arg;
	if (acc->list.n >= SRV_CONFIG_MAX_URLS) {
		snprintf(acc->why, sizeof acc->why, "more than %d URLs", SRV_CONFIG_MAX_URLS);
		return REFUSED;
	}
	struct srv_url u;
	int rc = url_parse(item, len, acc->bind, &u, acc->why, sizeof acc->why);
	if (rc != 0) {
		return rc;
	}
	/* Duplicates are dropped, as etcd's unique URL flags do. */
	for (size_t i = 0; i < acc->list.n; i++) {
		if (strcmp(acc->list.v[i].text, u.text) == 0) {
			url_free(&u);
			return 0;
		}
	}
	acc->list.v[acc->list.n++] = u;
	return 0;
}

struct cluster_acc {
	struct srv_cluster_entry *v;
	size_t n;
	char why[512];
};

static int cluster_item(void *arg, const char *item, size_t len)
{
	struct cluster_acc *acc = arg;
	if (acc->n >= SRV_CONFIG_MAX_CLUSTER_URLS) {
		snprintf(acc->why, sizeof acc->why, "more than %d entries",
			 SRV_CONFIG_MAX_CLUSTER_URLS);
		return REFUSED;
	}
	const char *eq = memchr(item, '=', len);
	if (eq == NULL || eq == item) {
		snprintf(acc->why, sizeof acc->why, "\"%.*s\" is not of the form name=url",
			 (int)len, item);
		return REFUSED;
	}
	const char *u = eq + 1;
	size_t ulen = (size_t)(item + len - u);
	struct srv_cluster_entry *e = &acc->v[acc->n];
	int rc = url_parse(u, ulen, false, &e->url, acc->why, sizeof acc->why);
	if (rc != 0) {
		return rc;
	}
	e->name = dup_n(item, (size_t)(eq - item));
	if (e->name == NULL) {
		url_free(&e->url);
		return SRV_CONFIG_ENOMEM;
	}
	acc->n++;
	return 0;
}

static void cluster_free(struct srv_cluster_entry *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].name);
		url_free(&v[i].url);
	}
	free(v);
}

/* The normalised "name=url,..." text of a cluster. NULL when out of memory. */
static char *cluster_text(const struct srv_cluster_entry *v, size_t n)
{
	size_t len = 1;
	for (size_t i = 0; i < n; i++) {
		len += strlen(v[i].name) + 1 + strlen(v[i].url.text) + 1;
	}
	char *t = malloc(len);
	if (t == NULL) {
		return NULL;
	}
	t[0] = '\0';
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		off += (size_t)snprintf(t + off, len - off, "%s%s=%s", i > 0 ? "," : "", v[i].name,
					v[i].url.text);
	}
	return t;
}

static void hostport_free(struct srv_hostport *h)
{
	free(h->text);
	free(h->host);
	memset(h, 0, sizeof *h);
}

static const char *addr_why(enum addr_err e)
{
	switch (e) {
	case A_FORM:
		return "address does not have the form \"host:port\"";
	case A_PORT:
		return "port must be a number from 1 to 65535";
	case A_BIND:
		return "expected an IP address or localhost to listen on";
	case A_EMPTY:
		return "unexpected empty host";
	case A_HOST:
	default:
		return "host is not an IP address or a DNS name";
	}
}

static int hostport_make(const char *s, size_t n, bool bind, struct srv_hostport *out, char *why,
			 size_t why_len)
{
	memset(out, 0, sizeof *out);
	bool v6;
	enum addr_err e = parse_hostport(s, n, bind, &out->host, &out->port, &v6);
	if (e == A_NOMEM) {
		return SRV_CONFIG_ENOMEM;
	}
	if (e != A_OK) {
		snprintf(why, why_len, "%s: %.*s", addr_why(e), (int)n, s);
		return REFUSED;
	}
	out->text = dup_n(s, n);
	if (out->text == NULL) {
		hostport_free(out);
		return SRV_CONFIG_ENOMEM;
	}
	return 0;
}

struct join_acc {
	struct srv_hostport *v;
	size_t n;
	char why[512];
};

static int join_item(void *arg, const char *item, size_t len)
{
	struct join_acc *acc = arg;
	if (acc->n >= SRV_CONFIG_MAX_GOSSIP_JOIN) {
		snprintf(acc->why, sizeof acc->why, "more than %d addresses",
			 SRV_CONFIG_MAX_GOSSIP_JOIN);
		return REFUSED;
	}
	int rc = hostport_make(item, len, false, &acc->v[acc->n], acc->why, sizeof acc->why);
	if (rc == 0) {
		acc->n++;
	}
	return rc;
}

static void hostports_free(struct srv_hostport *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		hostport_free(&v[i]);
	}
	free(v);
}

struct tags_acc {
	struct srv_tag *v;
	size_t n;
	char why[512];
};

/* A tag key: letters, digits, '_', '-', '.', '/', at most 64 bytes; a value at most 256
 * bytes without ',' (the separator). */
static int tag_item(void *arg, const char *item, size_t len)
{
	struct tags_acc *acc = arg;
	const char *eq = memchr(item, '=', len);
	if (eq == NULL || eq == item) {
		snprintf(acc->why, sizeof acc->why, "\"%.*s\" is not of the form key=value",
			 (int)len, item);
		return REFUSED;
	}
	size_t klen = (size_t)(eq - item);
	size_t vlen = len - klen - 1;
	if (klen > 64 || vlen > 256) {
		snprintf(acc->why, sizeof acc->why,
			 "a tag's key is at most 64 bytes and its value at most 256: %.*s",
			 (int)len, item);
		return REFUSED;
	}
	for (size_t i = 0; i < klen; i++) {
		char c = item[i];
		if (!is_alnum(c) && c != '_' && c != '-' && c != '.' && c != '/') {
			snprintf(acc->why, sizeof acc->why,
				 "a tag's key holds letters, digits and _ - . / only: %.*s",
				 (int)klen, item);
			return REFUSED;
		}
	}
	for (size_t i = 0; i < acc->n; i++) {
		if (strlen(acc->v[i].key) == klen && memcmp(acc->v[i].key, item, klen) == 0) {
			snprintf(acc->why, sizeof acc->why, "tag \"%.*s\" given twice", (int)klen,
				 item);
			return REFUSED;
		}
	}
	if (acc->n >= SRV_CONFIG_MAX_GOSSIP_TAGS) {
		snprintf(acc->why, sizeof acc->why, "more than %d tags",
			 SRV_CONFIG_MAX_GOSSIP_TAGS);
		return REFUSED;
	}
	struct srv_tag *t = &acc->v[acc->n];
	t->key = dup_n(item, klen);
	t->value = dup_n(eq + 1, vlen);
	if (t->key == NULL || t->value == NULL) {
		free(t->key);
		free(t->value);
		return SRV_CONFIG_ENOMEM;
	}
	acc->n++;
	return 0;
}

static void tags_free(struct srv_tag *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].key);
		free(v[i].value);
	}
	free(v);
}

/* ---- setting one option from text ---- */

static void set_str(char **field, char *value)
{
	free(*field);
	*field = value;
}

static struct srv_tls *tls_of(struct srv_config *cfg, int id)
{
	return opts[id].file == F_PEER ? &cfg->peer_tls : &cfg->client_tls;
}

static struct srv_url_list *urls_of(struct srv_config *cfg, int id)
{
	switch (id) {
	case O_LISTEN_CLIENT_URLS:
		return &cfg->listen_client_urls;
	case O_LISTEN_PEER_URLS:
		return &cfg->listen_peer_urls;
	case O_ADVERTISE_CLIENT_URLS:
		return &cfg->advertise_client_urls;
	case O_INITIAL_ADVERTISE_PEER_URLS:
	default:
		return &cfg->initial_advertise_peer_urls;
	}
}

static int set_uint(struct srv_config *cfg, int id, uint64_t v)
{
	switch (id) {
	case O_HEARTBEAT:
		cfg->heartbeat_ms = (uint32_t)v;
		break;
	case O_ELECTION:
		cfg->election_ms = (uint32_t)v;
		break;
	case O_SNAPSHOT_COUNT:
		cfg->snapshot_count = v == 0 ? SRV_CONFIG_DEFAULT_SNAPSHOT_COUNT : v;
		break;
	case O_QUOTA:
		cfg->quota_backend_bytes = v == 0 ? SRV_CONFIG_DEFAULT_QUOTA_BYTES : v;
		break;
	case O_MAX_REQUEST_BYTES:
		cfg->max_request_bytes = (uint32_t)v;
		break;
	case O_GOSSIP_PROBE_INTERVAL:
		cfg->gossip_timing.probe_interval_ms = (uint32_t)v;
		break;
	case O_GOSSIP_PROBE_TIMEOUT:
		cfg->gossip_timing.probe_timeout_ms = (uint32_t)v;
		break;
	case O_GOSSIP_INTERVAL:
		cfg->gossip_timing.gossip_interval_ms = (uint32_t)v;
		break;
	case O_GOSSIP_SUSPICION_MULT:
		cfg->gossip_timing.suspicion_mult = (uint32_t)v;
		break;
	case O_GOSSIP_PUSHPULL_INTERVAL:
		cfg->gossip_timing.pushpull_interval_ms = (uint32_t)v;
		break;
	case O_GOSSIP_REAP_DEAD:
		cfg->gossip_timing.reap_dead_ms = v;
		break;
	case O_GOSSIP_REAP_LEFT:
		cfg->gossip_timing.reap_left_ms = v;
		break;
	case O_MAX_TXN_OPS:
	default:
		cfg->max_txn_ops = (uint32_t)v;
		break;
	}
	return 0;
}

/* Set option id from value (NUL-terminated), which came from s. Replaces what the option
 * held, except --gossip-tag given again on the command line, which adds to it. */
static int opt_set(struct ld *ld, int id, const char *value, const struct src *s)
{
	struct srv_config *cfg = ld->cfg;
	const struct opt *o = &opts[id];
	char why[600];
	if (strlen(value) > SRV_CONFIG_MAX_VALUE) {
		snprintf(why, sizeof why, "longer than %d bytes", SRV_CONFIG_MAX_VALUE);
		return bad_value(ld, id, s, "...", why);
	}
	switch (o->kind) {
	case K_STRING: {
		if (value[0] == '\0') {
			return bad_value(ld, id, s, value, "must not be empty");
		}
		if (id == O_NAME && strpbrk(value, ",=") != NULL) {
			return bad_value(ld, id, s, value,
					 "a member name cannot hold ',' or '=' (it must fit in "
					 "--initial-cluster)");
		}
		if (id == O_GOSSIP_LABEL && strlen(value) > SRV_CONFIG_MAX_GOSSIP_LABEL) {
			snprintf(why, sizeof why, "longer than %d bytes",
				 SRV_CONFIG_MAX_GOSSIP_LABEL);
			return bad_value(ld, id, s, value, why);
		}
		char *d = strdup(value);
		if (d == NULL) {
			return nomem(ld);
		}
		char **field = id == O_NAME                  ? &cfg->name :
			       id == O_INITIAL_CLUSTER_TOKEN ? &cfg->initial_cluster_token :
							       &cfg->gossip_label;
		set_str(field, d);
		return 0;
	}
	case K_PATH: {
		char *d = NULL;
		if (value[0] != '\0') {
			d = strdup(value);
			if (d == NULL) {
				return nomem(ld);
			}
		}
		switch (id) {
		case O_DATA_DIR:
			set_str(&cfg->data_dir, d);
			break;
		case O_CERT_FILE:
		case O_PEER_CERT_FILE:
			set_str(&tls_of(cfg, id)->cert_file, d);
			break;
		case O_KEY_FILE:
		case O_PEER_KEY_FILE:
			set_str(&tls_of(cfg, id)->key_file, d);
			break;
		case O_TRUSTED_CA_FILE:
		case O_PEER_TRUSTED_CA_FILE:
			set_str(&tls_of(cfg, id)->trusted_ca_file, d);
			break;
		case O_GOSSIP_KEY_FILE:
			set_str(&cfg->gossip_key_file, d);
			break;
		case O_CONFIG_FILE:
		default:
			set_str(&cfg->config_file, d);
			break;
		}
		return 0;
	}
	case K_BOOL: {
		bool b;
		if (!parse_bool(value, &b)) {
			return bad_value(ld, id, s, value, "expected true or false");
		}
		if (id == O_GOSSIP_STORE_MEMBERS)
			cfg->gossip_store_members = b;
		else
			tls_of(cfg, id)->client_cert_auth = b;
		return 0;
	}
	case K_UINT: {
		uint64_t v;
		if (!parse_u64(value, strlen(value), &v)) {
			return bad_value(ld, id, s, value, "expected an unsigned decimal integer");
		}
		if (v < o->min || v > o->max) {
			snprintf(why, sizeof why, "must be from %llu to %llu",
				 (unsigned long long)o->min, (unsigned long long)o->max);
			return bad_value(ld, id, s, value, why);
		}
		return set_uint(cfg, id, v);
	}
	case K_URLS_BIND:
	case K_URLS_HOST: {
		struct urls_acc acc = { .bind = o->kind == K_URLS_BIND };
		acc.list.v = calloc(SRV_CONFIG_MAX_URLS, sizeof *acc.list.v);
		if (acc.list.v == NULL) {
			return nomem(ld);
		}
		int rc = for_each_item(value, urls_item, &acc);
		if (rc != 0) {
			urls_free(&acc.list);
			return rc == SRV_CONFIG_ENOMEM ? nomem(ld) :
							 bad_value(ld, id, s, value, acc.why);
		}
		struct srv_url_list *l = urls_of(cfg, id);
		urls_free(l);
		*l = acc.list;
		return 0;
	}
	case K_CLUSTER: {
		struct cluster_acc acc = { 0 };
		acc.v = calloc(SRV_CONFIG_MAX_CLUSTER_URLS, sizeof *acc.v);
		if (acc.v == NULL) {
			return nomem(ld);
		}
		int rc = for_each_item(value, cluster_item, &acc);
		char *text = rc == 0 ? cluster_text(acc.v, acc.n) : NULL;
		if (rc != 0 || text == NULL) {
			cluster_free(acc.v, acc.n);
			return rc == REFUSED ? bad_value(ld, id, s, value, acc.why) : nomem(ld);
		}
		cluster_free(cfg->initial_cluster_entries, cfg->initial_cluster_n);
		cfg->initial_cluster_entries = acc.v;
		cfg->initial_cluster_n = acc.n;
		set_str(&cfg->initial_cluster, text);
		return 0;
	}
	case K_STATE:
		if (strcmp(value, "new") == 0) {
			cfg->initial_cluster_state = SRV_CLUSTER_NEW;
		} else if (strcmp(value, "existing") == 0) {
			cfg->initial_cluster_state = SRV_CLUSTER_EXISTING;
		} else {
			return bad_value(ld, id, s, value, "must be \"new\" or \"existing\"");
		}
		return 0;
	case K_LOG_LEVEL:
		for (int l = SRV_LOG_DEBUG; l <= SRV_LOG_FATAL; l++) {
			if (strcmp(value, srv_log_level_name((enum srv_log_level)l)) == 0) {
				cfg->log_level = (enum srv_log_level)l;
				return 0;
			}
		}
		return bad_value(ld, id, s, value,
				 "must be one of debug, info, warn, error, panic, fatal");
	case K_ADDR_BIND: {
		struct srv_hostport h;
		int rc = hostport_make(value, strlen(value), true, &h, why, sizeof why);
		if (rc != 0) {
			return rc == REFUSED ? bad_value(ld, id, s, value, why) : nomem(ld);
		}
		hostport_free(&cfg->gossip_listen);
		cfg->gossip_listen = h;
		return 0;
	}
	case K_ADDRS_HOST: {
		struct join_acc acc = { 0 };
		acc.v = calloc(SRV_CONFIG_MAX_GOSSIP_JOIN, sizeof *acc.v);
		if (acc.v == NULL) {
			return nomem(ld);
		}
		int rc = value[0] == '\0' ? 0 : for_each_item(value, join_item, &acc);
		if (rc != 0) {
			hostports_free(acc.v, acc.n);
			return rc == REFUSED ? bad_value(ld, id, s, value, acc.why) : nomem(ld);
		}
		hostports_free(cfg->gossip_join, cfg->gossip_join_n);
		cfg->gossip_join = acc.v;
		cfg->gossip_join_n = acc.n;
		return 0;
	}
	case K_TAGS:
	default: {
		/* A repeated --gossip-tag adds to the tags before it; any other source replaces. */
		bool append = s->type == SRC_FLAG && ld->tags_by_flag;
		struct tags_acc acc = { 0 };
		acc.v = calloc(SRV_CONFIG_MAX_GOSSIP_TAGS, sizeof *acc.v);
		if (acc.v == NULL) {
			return nomem(ld);
		}
		for (size_t i = 0; append && i < cfg->gossip_tags_n; i++) {
			acc.v[i] = cfg->gossip_tags[i];
		}
		acc.n = append ? cfg->gossip_tags_n : 0;
		size_t kept = acc.n;
		int rc = value[0] == '\0' ? 0 : for_each_item(value, tag_item, &acc);
		if (rc != 0) {
			for (size_t i = kept; i < acc.n; i++) {
				free(acc.v[i].key);
				free(acc.v[i].value);
			}
			free(acc.v);
			return rc == REFUSED ? bad_value(ld, id, s, value, acc.why) : nomem(ld);
		}
		if (append) {
			free(cfg->gossip_tags); /* the pairs moved into acc.v */
		} else {
			tags_free(cfg->gossip_tags, cfg->gossip_tags_n);
		}
		cfg->gossip_tags = acc.v;
		cfg->gossip_tags_n = acc.n;
		if (s->type == SRC_FLAG) {
			ld->tags_by_flag = true;
		}
		return 0;
	}
	}
}

/* ---- defaults, derived values, checks ---- */

static int set_defaults(struct ld *ld)
{
	struct srv_config *cfg = ld->cfg;
	static const struct src dflt = { .type = SRC_FLAG };
	cfg->heartbeat_ms = SRV_CONFIG_DEFAULT_HEARTBEAT_MS;
	cfg->election_ms = SRV_CONFIG_DEFAULT_ELECTION_MS;
	cfg->snapshot_count = SRV_CONFIG_DEFAULT_SNAPSHOT_COUNT;
	cfg->quota_backend_bytes = SRV_CONFIG_DEFAULT_QUOTA_BYTES;
	cfg->max_request_bytes = SRV_CONFIG_DEFAULT_MAX_REQUEST_BYTES;
	cfg->max_txn_ops = SRV_CONFIG_DEFAULT_MAX_TXN_OPS;
	cfg->initial_cluster_state = SRV_CLUSTER_NEW;
	cfg->log_level = SRV_LOG_INFO;
	cfg->gossip_store_members = true;
	cfg->gossip_timing = (struct srv_gossip_timing){
		.probe_interval_ms = SRV_CONFIG_DEFAULT_GOSSIP_PROBE_INTERVAL_MS,
		.probe_timeout_ms = SRV_CONFIG_DEFAULT_GOSSIP_PROBE_TIMEOUT_MS,
		.gossip_interval_ms = SRV_CONFIG_DEFAULT_GOSSIP_INTERVAL_MS,
		.suspicion_mult = SRV_CONFIG_DEFAULT_GOSSIP_SUSPICION_MULT,
		.pushpull_interval_ms = SRV_CONFIG_DEFAULT_GOSSIP_PUSHPULL_INTERVAL_MS,
		.reap_dead_ms = SRV_CONFIG_DEFAULT_GOSSIP_REAP_DEAD_MS,
		.reap_left_ms = SRV_CONFIG_DEFAULT_GOSSIP_REAP_LEFT_MS,
	};
	int rc;
	if ((rc = opt_set(ld, O_NAME, SRV_CONFIG_DEFAULT_NAME, &dflt)) != 0 ||
	    (rc = opt_set(ld, O_LISTEN_CLIENT_URLS, SRV_CONFIG_DEFAULT_CLIENT_URL, &dflt)) != 0 ||
	    (rc = opt_set(ld, O_ADVERTISE_CLIENT_URLS, SRV_CONFIG_DEFAULT_CLIENT_URL, &dflt)) !=
		    0 ||
	    (rc = opt_set(ld, O_LISTEN_PEER_URLS, SRV_CONFIG_DEFAULT_PEER_URL, &dflt)) != 0 ||
	    (rc = opt_set(ld, O_INITIAL_ADVERTISE_PEER_URLS, SRV_CONFIG_DEFAULT_PEER_URL, &dflt)) !=
		    0 ||
	    (rc = opt_set(ld, O_INITIAL_CLUSTER_TOKEN, SRV_CONFIG_DEFAULT_CLUSTER_TOKEN, &dflt)) !=
		    0 ||
	    (rc = opt_set(ld, O_GOSSIP_LISTEN, SRV_CONFIG_DEFAULT_GOSSIP_LISTEN, &dflt)) != 0) {
		return rc;
	}
	return 0;
}

/* Free every value but keep the warnings: a config file starts again from the defaults. */
static void clear_values(struct srv_config *cfg)
{
	char **warnings = cfg->warnings;
	size_t warnings_n = cfg->warnings_n;
	cfg->warnings = NULL;
	cfg->warnings_n = 0;
	srv_config_free(cfg);
	cfg->warnings = warnings;
	cfg->warnings_n = warnings_n;
}

/* --gossip-listen when not given: SRV_CONFIG_DEFAULT_GOSSIP_PORT on the host of the first
 * client URL, so a server reachable by clients on an address gossips on that address too. */
static int derive_gossip_listen(struct ld *ld)
{
	struct srv_config *cfg = ld->cfg;
	if (cfg->listen_client_urls.n == 0) {
		return 0;
	}
	const char *host = cfg->listen_client_urls.v[0].host;
	char text[300];
	snprintf(text, sizeof text, strchr(host, ':') != NULL ? "[%s]:%u" : "%s:%u", host,
		 SRV_CONFIG_DEFAULT_GOSSIP_PORT);
	static const struct src dflt = { .type = SRC_FLAG };
	return opt_set(ld, O_GOSSIP_LISTEN, text, &dflt);
}

/* data-dir and initial-cluster when not given, as etcd derives them. */
static int derive(struct ld *ld, bool cluster_given, bool gossip_listen_given)
{
	struct srv_config *cfg = ld->cfg;
	if (!gossip_listen_given) {
		int rc = derive_gossip_listen(ld);
		if (rc != 0) {
			return rc;
		}
	}
	if (cfg->data_dir == NULL) {
		size_t len = strlen(cfg->name) + sizeof ".cairn";
		cfg->data_dir = malloc(len);
		if (cfg->data_dir == NULL) {
			return nomem(ld);
		}
		snprintf(cfg->data_dir, len, "%s.cairn", cfg->name);
	}
	if (!cluster_given) {
		const struct srv_url_list *ap = &cfg->initial_advertise_peer_urls;
		struct srv_cluster_entry *v = calloc(ap->n, sizeof *v);
		if (v == NULL) {
			return nomem(ld);
		}
		for (size_t i = 0; i < ap->n; i++) {
			v[i].name = strdup(cfg->name);
			v[i].url.text = strdup(ap->v[i].text);
			v[i].url.host = strdup(ap->v[i].host);
			v[i].url.port = ap->v[i].port;
			v[i].url.https = ap->v[i].https;
			if (v[i].name == NULL || v[i].url.text == NULL || v[i].url.host == NULL) {
				cluster_free(v, i + 1);
				return nomem(ld);
			}
		}
		char *text = cluster_text(v, ap->n);
		if (text == NULL) {
			cluster_free(v, ap->n);
			return nomem(ld);
		}
		cluster_free(cfg->initial_cluster_entries, cfg->initial_cluster_n);
		cfg->initial_cluster_entries = v;
		cfg->initial_cluster_n = ap->n;
		set_str(&cfg->initial_cluster, text);
	}
	return 0;
}

static int invalid(struct ld *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int invalid(struct ld *ld, const char *fmt, ...)
{
	if (ld->err != NULL && ld->err_len > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(ld->err, ld->err_len, fmt, ap);
		va_end(ap);
	}
	return SRV_CONFIG_EINVALID;
}

/* TLS settings of one port against its listen URLs. */
static int check_tls(struct ld *ld, const struct srv_tls *t, const struct srv_url_list *urls,
		     bool peer)
{
	const char *p = peer ? "peer-" : "";
	if (t->cert_file != NULL && t->key_file == NULL) {
		return invalid(ld, "--%skey-file is required with --%scert-file", p, p);
	}
	if (t->key_file != NULL && t->cert_file == NULL) {
		return invalid(ld, "--%scert-file is required with --%skey-file", p, p);
	}
	for (size_t i = 0; i < urls->n; i++) {
		const struct srv_url *u = &urls->v[i];
		if (u->https && t->cert_file == NULL) {
			return invalid(
				ld,
				"TLS key/cert (--%scert-file, --%skey-file) must be provided "
				"for %s url %s with HTTPS scheme",
				p, p, peer ? "peer" : "client", u->text);
		}
		if (u->https && t->client_cert_auth && t->trusted_ca_file == NULL) {
			return invalid(
				ld, "--%sclient-cert-auth needs --%strusted-ca-file for %s url %s",
				p, p, peer ? "peer" : "client", u->text);
		}
		if (!u->https && t->cert_file != NULL) {
			int rc =
				warn(ld,
				     "the scheme of %s url %s is HTTP while key and cert files are "
				     "present; ignoring key and cert files for this URL",
				     peer ? "peer" : "client", u->text);
			if (rc != 0) {
				return rc;
			}
		}
		if (!u->https && t->client_cert_auth) {
			int rc = warn(
				ld,
				"the scheme of %s url %s is HTTP while --%sclient-cert-auth is "
				"enabled; ignoring client cert auth for this URL",
				peer ? "peer" : "client", u->text, p);
			if (rc != 0) {
				return rc;
			}
		}
	}
	return 0;
}

/* The gossip timings against each other (each alone is checked by its range). */
static int validate_gossip(struct ld *ld)
{
	const struct srv_gossip_timing *t = &ld->cfg->gossip_timing;
	if (t->probe_timeout_ms >= t->probe_interval_ms) {
		return invalid(ld,
			       "--gossip-probe-timeout[%ums] must be less than "
			       "--gossip-probe-interval[%ums]",
			       (unsigned)t->probe_timeout_ms, (unsigned)t->probe_interval_ms);
	}
	if (t->pushpull_interval_ms != 0 && t->pushpull_interval_ms < 1000) {
		return invalid(ld,
			       "--gossip-pushpull-interval[%ums] must be 0 (never) or at least "
			       "1000ms",
			       (unsigned)t->pushpull_interval_ms);
	}
	return 0;
}

/* etcd's embed.Config.Validate, in its order, with its messages; then gossip's. */
static int validate(struct ld *ld, bool from_file)
{
	struct srv_config *cfg = ld->cfg;
	if (cfg->heartbeat_ms == 0) {
		return invalid(ld, "--heartbeat-interval must be >0 (set to %ums)",
			       (unsigned)cfg->heartbeat_ms);
	}
	if (cfg->election_ms == 0) {
		return invalid(ld, "--election-timeout must be >0 (set to %ums)",
			       (unsigned)cfg->election_ms);
	}
	if (5ull * cfg->heartbeat_ms > cfg->election_ms) {
		return invalid(ld,
			       "--election-timeout[%ums] should be at least as 5 times as "
			       "--heartbeat-interval[%ums]",
			       (unsigned)cfg->election_ms, (unsigned)cfg->heartbeat_ms);
	}
	if (cfg->election_ms > SRV_CONFIG_MAX_ELECTION_MS) {
		return invalid(
			ld,
			"--election-timeout[%ums] is too long, and should be set less than %ums",
			(unsigned)cfg->election_ms, SRV_CONFIG_MAX_ELECTION_MS);
	}
	/* On the command line and in the environment, a listen URL given without an advertised
	 * one is refused; etcd's file loader keeps the default advertised URL instead. */
	bool listen_given = ld->by_flag[O_LISTEN_CLIENT_URLS] || ld->by_env[O_LISTEN_CLIENT_URLS];
	bool advertise_given =
		ld->by_flag[O_ADVERTISE_CLIENT_URLS] || ld->by_env[O_ADVERTISE_CLIENT_URLS];
	if (!from_file && listen_given && !advertise_given) {
		return invalid(ld, "--advertise-client-urls is required when --listen-client-urls "
				   "is set explicitly");
	}
	int rc = check_tls(ld, &cfg->client_tls, &cfg->listen_client_urls, false);
	if (rc == 0) {
		rc = check_tls(ld, &cfg->peer_tls, &cfg->listen_peer_urls, true);
	}
	if (rc == 0) {
		rc = validate_gossip(ld);
	}
	return rc;
}

/* ---- the YAML file ---- */

static int file_error(struct ld *ld, const char *path, size_t line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int file_error(struct ld *ld, const char *path, size_t line, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	errf(ld, "%s:%zu: %s", path, line, msg);
	return SRV_CONFIG_EINVALID;
}

static const char *node_kind(const yaml_node_t *n)
{
	return n->type == YAML_MAPPING_NODE ? "a mapping" : "a list";
}

static bool scalar_is_null(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
		return false;
	}
	const char *v = (const char *)n->data.scalar.value;
	return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
	       strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* One key: value pair whose key names option id. */
static int file_value(struct ld *ld, const char *path, int id, const char *key,
		      const yaml_node_t *v)
{
	size_t line = v->start_mark.line + 1;
	if (scalar_is_null(v)) {
		return 0; /* no value: the default stays, as in etcd */
	}
	const char *want = opts[id].kind == K_BOOL ? "true or false" :
			   opts[id].kind == K_UINT ? "an unsigned integer" :
						     "a string";
	if (v->type != YAML_SCALAR_NODE) {
		return file_error(ld, path, line, "%s: expected %s, got %s", key, want,
				  node_kind(v));
	}
	const char *text = (const char *)v->data.scalar.value;
	if (strlen(text) != v->data.scalar.length) {
		return file_error(ld, path, line, "%s: the value holds a NUL byte", key);
	}
	if ((opts[id].kind == K_BOOL || opts[id].kind == K_UINT) &&
	    v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
		return file_error(ld, path, line, "%s: expected %s, got the quoted string \"%s\"",
				  key, want, text);
	}
	struct src s = { .type = SRC_FILE, .file = path, .line = line, .key = key };
	int rc = opt_set(ld, id, text, &s);
	if (rc == 0) {
		ld->by_file[id] = true;
	}
	return rc;
}

/* client-transport-security / peer-transport-security: a mapping of TLS keys. */
static int file_security(struct ld *ld, const char *path, yaml_document_t *doc, const char *section,
			 enum opt_file which, const yaml_node_t *m)
{
	if (scalar_is_null(m)) {
		return 0;
	}
	if (m->type != YAML_MAPPING_NODE) {
		return file_error(ld, path, m->start_mark.line + 1,
				  "%s: expected a mapping of cert-file, key-file, trusted-ca-file "
				  "and client-cert-auth",
				  section);
	}
	bool seen[O__COUNT] = { false };
	for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *v = yaml_document_get_node(doc, p->value);
		size_t line = k->start_mark.line + 1;
		if (k->type != YAML_SCALAR_NODE) {
			return file_error(ld, path, line, "%s: keys must be strings", section);
		}
		const char *name = (const char *)k->data.scalar.value;
		int id = -1;
		for (int i = 0; i < O__COUNT; i++) {
			if (opts[i].file == which && strcmp(opts[i].file_key, name) == 0) {
				id = i;
			}
		}
		if (id < 0) {
			return file_error(ld, path, line, "unknown key \"%s\" in %s", name,
					  section);
		}
		if (seen[id]) {
			return file_error(ld, path, line, "key \"%s\" given twice in %s", name,
					  section);
		}
		seen[id] = true;
		int rc = file_value(ld, path, id, name, v);
		if (rc != 0) {
			return rc;
		}
	}
	return 0;
}

static int file_walk(struct ld *ld, const char *path, yaml_document_t *doc)
{
	yaml_node_t *root = yaml_document_get_root_node(doc);
	if (root == NULL || scalar_is_null(root)) {
		return 0; /* an empty file: the defaults */
	}
	if (root->type != YAML_MAPPING_NODE) {
		return file_error(ld, path, root->start_mark.line + 1,
				  "the top level must be a mapping of keys to values");
	}
	bool seen[O__COUNT] = { false };
	bool seen_client = false;
	bool seen_peer = false;
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *v = yaml_document_get_node(doc, p->value);
		size_t line = k->start_mark.line + 1;
		if (k->type != YAML_SCALAR_NODE) {
			return file_error(ld, path, line, "keys must be strings, not %s",
					  node_kind(k));
		}
		const char *name = (const char *)k->data.scalar.value;
		bool client = strcmp(name, "client-transport-security") == 0;
		bool peer = strcmp(name, "peer-transport-security") == 0;
		if (client || peer) {
			bool *seen_sec = client ? &seen_client : &seen_peer;
			if (*seen_sec) {
				return file_error(ld, path, line, "key \"%s\" given twice", name);
			}
			*seen_sec = true;
			int rc = file_security(ld, path, doc, name, client ? F_CLIENT : F_PEER, v);
			if (rc != 0) {
				return rc;
			}
			continue;
		}
		int id = opt_by_flag(name, strlen(name));
		if (id >= 0 && opts[id].file != F_TOP) {
			if (opts[id].file == F_NONE) {
				return file_error(ld, path, line, "unknown key \"%s\"", name);
			}
			return file_error(ld, path, line,
					  "unknown key \"%s\" (TLS settings go under %s as \"%s\")",
					  name,
					  opts[id].file == F_PEER ? "peer-transport-security" :
								    "client-transport-security",
					  opts[id].file_key);
		}
		if (id < 0) {
			return file_error(ld, path, line, "unknown key \"%s\"", name);
		}
		if (seen[id]) {
			return file_error(ld, path, line, "key \"%s\" given twice", name);
		}
		seen[id] = true;
		int rc = file_value(ld, path, id, name, v);
		if (rc != 0) {
			return rc;
		}
	}
	return 0;
}

static int read_file(struct ld *ld, const char *path, char **out, size_t *out_len)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		errf(ld, "cannot read config file %s: %s", path, strerror(errno));
		return SRV_CONFIG_EFILE;
	}
	char *buf = malloc(SRV_CONFIG_MAX_FILE + 1);
	if (buf == NULL) {
		fclose(f);
		return nomem(ld);
	}
	size_t n = fread(buf, 1, SRV_CONFIG_MAX_FILE + 1, f);
	int failed = ferror(f);
	int saved = errno;
	fclose(f);
	if (failed) {
		free(buf);
		errf(ld, "cannot read config file %s: %s", path, strerror(saved));
		return SRV_CONFIG_EFILE;
	}
	if (n > SRV_CONFIG_MAX_FILE) {
		free(buf);
		errf(ld, "config file %s is larger than %d bytes", path, SRV_CONFIG_MAX_FILE);
		return SRV_CONFIG_EFILE;
	}
	*out = buf;
	*out_len = n;
	return 0;
}

static int load_file(struct ld *ld, const char *path)
{
	char *buf;
	size_t len;
	int rc = read_file(ld, path, &buf, &len);
	if (rc != 0) {
		return rc;
	}
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&parser)) {
		free(buf);
		return nomem(ld);
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	if (!yaml_parser_load(&parser, &doc)) {
		if (parser.error == YAML_MEMORY_ERROR) {
			rc = nomem(ld);
		} else {
			const yaml_mark_t *m = parser.problem != NULL ? &parser.problem_mark :
									&parser.context_mark;
			rc = file_error(ld, path, m->line + 1, "invalid YAML: %s%s%s (column %zu)",
					parser.problem != NULL ? parser.problem : "syntax error",
					parser.context != NULL ? " " : "",
					parser.context != NULL ? parser.context : "",
					m->column + 1);
		}
		goto out_parser;
	}
	rc = file_walk(ld, path, &doc);
	yaml_document_delete(&doc);
	if (rc != 0) {
		goto out_parser;
	}
	/* One document only: a second one would be silently ignored otherwise. */
	if (!yaml_parser_load(&parser, &doc)) {
		rc = file_error(ld, path, parser.problem_mark.line + 1, "invalid YAML: %s",
				parser.problem != NULL ? parser.problem : "syntax error");
		goto out_parser;
	}
	if (yaml_document_get_root_node(&doc) != NULL) {
		rc = file_error(ld, path, doc.start_mark.line + 1,
				"only one YAML document is allowed in a config file");
	}
	yaml_document_delete(&doc);
out_parser:
	yaml_parser_delete(&parser);
	free(buf);
	return rc;
}

/* ---- the command line and the environment ---- */

static int positional(struct ld *ld, const char *arg)
{
	errf(ld, "'%s' is not a valid flag", arg);
	return SRV_CONFIG_EUSAGE;
}

/* The options `cairn agent` takes: its name, its log level and gossip. */
static bool agent_opt(int id)
{
	return id == O_NAME || id == O_LOG_LEVEL ||
	       (id >= O_GOSSIP_LISTEN && id <= O_GOSSIP_REAP_LEFT);
}

/* Go's flag package rules, which etcd's users know: "-f" and "--f" alike, "--f=v" or
 * "--f v", booleans only as "--f" or "--f=v", "--" ends the flags, the first non-flag
 * argument ends them too (and is refused here, as etcd refuses it). */
static int parse_flags(struct ld *ld, int argc, char *const argv[])
{
	static const struct src from_flag = { .type = SRC_FLAG };
	for (int i = 1; i < argc && argv[i] != NULL; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			return i + 1 < argc && argv[i + 1] != NULL ? positional(ld, argv[i + 1]) :
								     0;
		}
		if (a[0] != '-' || a[1] == '\0') {
			return positional(ld, a);
		}
		const char *name = a[1] == '-' ? a + 2 : a + 1;
		if (name[0] == '\0' || name[0] == '-' || name[0] == '=') {
			errf(ld, "bad flag syntax: %s", a);
			return SRV_CONFIG_EUSAGE;
		}
		const char *eq = strchr(name, '=');
		size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
		if ((nlen == 1 && name[0] == 'h') || (nlen == 4 && memcmp(name, "help", 4) == 0)) {
			ld->cfg->action = SRV_CONFIG_HELP;
			return 0;
		}
		if (nlen == 7 && memcmp(name, "version", 7) == 0) {
			bool b = true;
			if (eq != NULL && !parse_bool(eq + 1, &b)) {
				errf(ld, "invalid boolean value \"%s\" for flag --version", eq + 1);
				return SRV_CONFIG_EUSAGE;
			}
			ld->version = b;
			continue;
		}
		int id = opt_by_flag(name, nlen);
		if (id < 0 || (ld->agent && !agent_opt(id))) {
			errf(ld, "flag provided but not defined: -%.*s", (int)nlen, name);
			return SRV_CONFIG_EUSAGE;
		}
		const char *value;
		if (eq != NULL) {
			value = eq + 1;
		} else if (opts[id].kind == K_BOOL) {
			value = "true";
		} else if (i + 1 < argc && argv[i + 1] != NULL) {
			value = argv[++i];
		} else {
			errf(ld, "flag needs an argument: -%.*s", (int)nlen, name);
			return SRV_CONFIG_EUSAGE;
		}
		int rc = opt_set(ld, id, value, &from_flag);
		if (rc != 0) {
			return rc;
		}
		ld->by_flag[id] = true;
	}
	return 0;
}

/* The value of a CAIRN_* variable in envp (the first one, as getenv), or NULL. */
static const char *env_get(char *const envp[], const char *name)
{
	size_t len = strlen(name);
	for (char *const *e = envp; e != NULL && *e != NULL; e++) {
		if (strncmp(*e, name, len) == 0 && (*e)[len] == '=') {
			return *e + len + 1;
		}
	}
	return NULL;
}

static int parse_env(struct ld *ld, char *const envp[])
{
	bool seen[O__COUNT] = { false };
	for (char *const *e = envp; e != NULL && *e != NULL; e++) {
		if (strncmp(*e, "CAIRN_", 6) != 0) {
			continue;
		}
		const char *eq = strchr(*e, '=');
		if (eq == NULL) {
			continue;
		}
		size_t nlen = (size_t)(eq - *e);
		int id = opt_by_env(*e, nlen);
		if (id < 0) {
			int rc = warn(ld, "unrecognized environment variable %.*s", (int)nlen, *e);
			if (rc != 0) {
				return rc;
			}
			continue;
		}
		if (ld->agent && !agent_opt(id)) {
			continue; /* a server's setting on the same host */
		}
		if (id == O_CONFIG_FILE || seen[id] || eq[1] == '\0') {
			continue;
		}
		seen[id] = true;
		if (ld->by_flag[id]) {
			int rc = warn(ld,
				      "recognized environment variable %s, but unused: shadowed by "
				      "corresponding flag",
				      opts[id].env);
			if (rc != 0) {
				return rc;
			}
			continue;
		}
		struct src s = { .type = SRC_ENV };
		int rc = opt_set(ld, id, eq + 1, &s);
		if (rc != 0) {
			return rc;
		}
		ld->by_env[id] = true;
	}
	return 0;
}

/* Flags and variables that a config file makes the member ignore, one warning each. */
static int warn_ignored(struct ld *ld, char *const envp[], const char *path)
{
	for (int id = 0; id < O__COUNT; id++) {
		if (id != O_CONFIG_FILE && ld->by_flag[id]) {
			int rc = warn(ld, "flag --%s ignored: the configuration file %s is used",
				      opts[id].flag, path);
			if (rc != 0) {
				return rc;
			}
		}
	}
	for (char *const *e = envp; e != NULL && *e != NULL; e++) {
		const char *eq = strchr(*e, '=');
		if (strncmp(*e, "CAIRN_", 6) != 0 || eq == NULL || eq[1] == '\0') {
			continue;
		}
		int id = opt_by_env(*e, (size_t)(eq - *e));
		if (id < 0 || id == O_CONFIG_FILE) {
			continue;
		}
		int rc = warn(ld,
			      "environment variable %s ignored: the configuration file %s is used",
			      opts[id].env, path);
		if (rc != 0) {
			return rc;
		}
	}
	return 0;
}

/* ---- public ---- */

int srv_config_load(struct srv_config *cfg, int argc, char *const argv[], char *const envp[],
		    char *err, size_t err_len)
{
	struct ld ld = { .cfg = cfg, .err = err, .err_len = err_len };
	memset(cfg, 0, sizeof *cfg);
	if (err != NULL && err_len > 0) {
		err[0] = '\0';
	}
	int rc = set_defaults(&ld);
	if (rc == 0) {
		rc = parse_flags(&ld, argc, argv);
	}
	if (rc != 0) {
		goto fail;
	}
	if (cfg->action == SRV_CONFIG_HELP) {
		return 0;
	}
	if (ld.version) {
		cfg->action = SRV_CONFIG_VERSION;
		return 0;
	}

	/* The file's name is read before the rest of the environment: a file means the other
	 * variables are not used at all (etcdmain/config.go does the same). */
	if (cfg->config_file == NULL) {
		const char *f = env_get(envp, "CAIRN_CONFIG_FILE");
		if (f != NULL && f[0] != '\0') {
			struct src s = { .type = SRC_ENV };
			if ((rc = opt_set(&ld, O_CONFIG_FILE, f, &s)) != 0) {
				goto fail;
			}
		}
	}
	bool from_file = cfg->config_file != NULL;
	if (from_file) {
		char *path = cfg->config_file;
		cfg->config_file = NULL;
		clear_values(cfg);
		cfg->config_file = path;
		if ((rc = set_defaults(&ld)) != 0 || (rc = warn_ignored(&ld, envp, path)) != 0 ||
		    (rc = load_file(&ld, path)) != 0) {
			goto fail;
		}
	} else if ((rc = parse_env(&ld, envp)) != 0) {
		goto fail;
	}
	bool cluster_given = from_file ?
				     ld.by_file[O_INITIAL_CLUSTER] :
				     ld.by_flag[O_INITIAL_CLUSTER] || ld.by_env[O_INITIAL_CLUSTER];
	bool gossip_listen_given =
		from_file ? ld.by_file[O_GOSSIP_LISTEN] :
			    ld.by_flag[O_GOSSIP_LISTEN] || ld.by_env[O_GOSSIP_LISTEN];
	if ((rc = derive(&ld, cluster_given, gossip_listen_given)) != 0 ||
	    (rc = validate(&ld, from_file)) != 0) {
		goto fail;
	}
	return 0;
fail:
	srv_config_free(cfg);
	return rc;
}

int srv_config_load_agent(struct srv_config *cfg, int argc, char *const argv[], char *const envp[],
			  char *err, size_t err_len)
{
	struct ld ld = { .cfg = cfg, .err = err, .err_len = err_len, .agent = true };
	static const struct src dflt = { .type = SRC_FLAG };
	memset(cfg, 0, sizeof *cfg);
	if (err != NULL && err_len > 0) {
		err[0] = '\0';
	}
	int rc = set_defaults(&ld);
	if (rc == 0) {
		rc = opt_set(&ld, O_GOSSIP_LISTEN, SRV_CONFIG_DEFAULT_AGENT_GOSSIP_LISTEN, &dflt);
	}
	if (rc == 0) {
		rc = parse_flags(&ld, argc, argv);
	}
	if (rc != 0) {
		goto fail;
	}
	if (cfg->action == SRV_CONFIG_HELP) {
		return 0;
	}
	if (ld.version) {
		cfg->action = SRV_CONFIG_VERSION;
		return 0;
	}
	if ((rc = parse_env(&ld, envp)) != 0) {
		goto fail;
	}
	/* Every agent of a pool needs its own name: no default that two could share. */
	if (!ld.by_flag[O_NAME] && !ld.by_env[O_NAME]) {
		errf(&ld, "--name is required");
		rc = SRV_CONFIG_EUSAGE;
		goto fail;
	}
	if ((rc = validate_gossip(&ld)) != 0) {
		goto fail;
	}
	return 0;
fail:
	srv_config_free(cfg);
	return rc;
}

static bool url_in(const char *text, const struct srv_url_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->v[i].text, text) == 0) {
			return true;
		}
	}
	return false;
}

/* Appends "prefix+text" to buf with a comma between items. */
static void list_add(char *buf, size_t len, const char *prefix, const char *text)
{
	size_t off = strlen(buf);
	if (off + 1 < len) {
		snprintf(buf + off, len - off, "%s%s%s", off > 0 ? "," : "", prefix, text);
	}
}

int srv_config_verify_bootstrap(const struct srv_config *cfg, char *err, size_t err_len)
{
	struct ld ld = { .err = err, .err_len = err_len };
	size_t mine = 0;
	for (size_t i = 0; i < cfg->initial_cluster_n; i++) {
		mine += strcmp(cfg->initial_cluster_entries[i].name, cfg->name) == 0;
	}
	if (mine == 0) {
		return invalid(&ld,
			       "couldn't find local name \"%s\" in the initial cluster "
			       "configuration",
			       cfg->name);
	}
	if (cfg->initial_cluster_state == SRV_CLUSTER_NEW) {
		const struct srv_url_list *ap = &cfg->initial_advertise_peer_urls;
		char missing[1024] = "";
		char name_eq[300];
		snprintf(name_eq, sizeof name_eq, "%s=", cfg->name);
		for (size_t i = 0; i < cfg->initial_cluster_n; i++) {
			const struct srv_cluster_entry *e = &cfg->initial_cluster_entries[i];
			if (strcmp(e->name, cfg->name) == 0 && !url_in(e->url.text, ap)) {
				list_add(missing, sizeof missing, name_eq, e->url.text);
			}
		}
		char aps[1024] = "";
		char mapped[1024] = "";
		for (size_t i = 0; i < ap->n; i++) {
			list_add(aps, sizeof aps, "", ap->v[i].text);
			list_add(mapped, sizeof mapped, name_eq, ap->v[i].text);
		}
		if (missing[0] != '\0') {
			return invalid(&ld,
				       "--initial-cluster has %s but missing from "
				       "--initial-advertise-peer-urls=%s",
				       missing, aps);
		}
		for (size_t i = 0; i < ap->n; i++) {
			bool found = false;
			for (size_t j = 0; j < cfg->initial_cluster_n && !found; j++) {
				const struct srv_cluster_entry *e =
					&cfg->initial_cluster_entries[j];
				found = strcmp(e->name, cfg->name) == 0 &&
					strcmp(e->url.text, ap->v[i].text) == 0;
			}
			if (!found) {
				list_add(missing, sizeof missing, "", ap->v[i].text);
			}
		}
		if (missing[0] != '\0') {
			return invalid(&ld,
				       "--initial-advertise-peer-urls has %s but missing from "
				       "--initial-cluster=%s",
				       missing, mapped);
		}
	}
	for (size_t i = 0; i < cfg->initial_cluster_n; i++) {
		for (size_t j = i + 1; j < cfg->initial_cluster_n; j++) {
			if (strcmp(cfg->initial_cluster_entries[i].url.text,
				   cfg->initial_cluster_entries[j].url.text) == 0) {
				return invalid(&ld, "initial cluster %s has duplicate url",
					       cfg->initial_cluster);
			}
		}
	}
	return 0;
}

static void tls_free(struct srv_tls *t)
{
	free(t->cert_file);
	free(t->key_file);
	free(t->trusted_ca_file);
}

void srv_config_free(struct srv_config *cfg)
{
	free(cfg->name);
	free(cfg->data_dir);
	urls_free(&cfg->listen_client_urls);
	urls_free(&cfg->listen_peer_urls);
	urls_free(&cfg->advertise_client_urls);
	urls_free(&cfg->initial_advertise_peer_urls);
	free(cfg->initial_cluster);
	cluster_free(cfg->initial_cluster_entries, cfg->initial_cluster_n);
	free(cfg->initial_cluster_token);
	tls_free(&cfg->client_tls);
	tls_free(&cfg->peer_tls);
	hostport_free(&cfg->gossip_listen);
	hostports_free(cfg->gossip_join, cfg->gossip_join_n);
	free(cfg->gossip_key_file);
	free(cfg->gossip_label);
	tags_free(cfg->gossip_tags, cfg->gossip_tags_n);
	free(cfg->config_file);
	for (size_t i = 0; i < cfg->warnings_n; i++) {
		free(cfg->warnings[i]);
	}
	free(cfg->warnings);
	memset(cfg, 0, sizeof *cfg);
}

const char *srv_config_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
#define SRV_CONFIG__ERRNO_STR(name, num, msg) \
	case SRV_CONFIG_E##name:              \
		return msg;
		SRV_CONFIG_ERRNO_MAP(SRV_CONFIG__ERRNO_STR)
#undef SRV_CONFIG__ERRNO_STR
	default:
		return "unknown error";
	}
}

const char *srv_log_level_name(enum srv_log_level level)
{
	switch (level) {
	case SRV_LOG_DEBUG:
		return "debug";
	case SRV_LOG_INFO:
		return "info";
	case SRV_LOG_WARN:
		return "warn";
	case SRV_LOG_ERROR:
		return "error";
	case SRV_LOG_PANIC:
		return "panic";
	case SRV_LOG_FATAL:
		return "fatal";
	default:
		return "unknown";
	}
}

const char *srv_cluster_state_name(enum srv_cluster_state state)
{
	return state == SRV_CLUSTER_EXISTING ? "existing" : "new";
}

const char *srv_config_version(void)
{
	return "cairn Version: " SRV_CAIRN_VERSION "\n"
	       "API version: " SRV_ETCD_API_VERSION "\n";
}

/* The gossip flags but --gossip-listen, shared by the server's and the agent's help. */
#define GOSSIP_HELP                                                                                \
	"  --gossip-join ''\n"                                                                     \
	"    Comma-separated host:port addresses of gossip members to join through; tried\n"       \
	"    again (every 2 s, backing off to 30 s) until one answers.\n"                          \
	"  --gossip-key-file ''\n"                                                                 \
	"    File of base64 keys (one a line, the first encrypts) for gossip; gossip is not\n"     \
	"    encrypted without it. Read again on SIGHUP.\n"                                        \
	"  --gossip-label ''\n"                                                                    \
	"    Label sent with every gossip message; messages with another label are dropped.\n"     \
	"  --gossip-tag ''\n"                                                                      \
	"    A key=value tag this member publishes in gossip; repeat the flag, or separate\n"      \
	"    pairs with commas, for several.\n"                                                    \
	"  --gossip-probe-interval '1000'\n"                                                       \
	"    Milliseconds between two probes of a random member (50 to 60000).\n"                  \
	"  --gossip-probe-timeout '500'\n"                                                         \
	"    Milliseconds to wait for a direct probe's answer before asking others to probe\n"     \
	"    (10 to 60000, less than --gossip-probe-interval).\n"                                  \
	"  --gossip-interval '200'\n"                                                              \
	"    Milliseconds between two rounds of gossip to a few random members (10 to 60000).\n"   \
	"  --gossip-suspicion-mult '4'\n"                                                          \
	"    A suspected member is declared dead after at least this many times\n"                 \
	"    log10(members) probe intervals (1 to 100).\n"                                         \
	"  --gossip-pushpull-interval '30000'\n"                                                   \
	"    Milliseconds between two full state exchanges with a random member over TCP\n"        \
	"    (0: never, else 1000 to 86400000).\n"                                                 \
	"  --gossip-reap-dead '86400000'\n"                                                        \
	"    Milliseconds a dead member is remembered before it is forgotten (1000 to 30 days).\n" \
	"  --gossip-reap-left '3600000'\n"                                                         \
	"    Milliseconds a member that left is remembered (1000 to 30 days).\n"

/* Grouped as etcd's own help is: member, clustering, security, logging, then Cairn's gossip. */
static const char help_text[] =
	"Usage:\n"
	"\n"
	"  cairn [flags]\n"
	"    Start a Cairn member: a cluster store that serves the etcd v3 API.\n"
	"\n"
	"  cairn --version\n"
	"    Print the version of cairn and of the etcd API it serves.\n"
	"\n"
	"  cairn -h | --help\n"
	"    Print this text.\n"
	"\n"
	"Flags are written --flag value or --flag=value; a boolean flag alone means true.\n"
	"Every flag can also be set by an environment variable named CAIRN_ and the flag in\n"
	"upper case with underscores (--data-dir is CAIRN_DATA_DIR); a flag wins over its\n"
	"variable.\n"
	"\n"
	"  --config-file ''\n"
	"    Path of a YAML configuration file with keys named like the flags, in etcd's format.\n"
	"    When it is given, every other flag and CAIRN_* variable is ignored.\n"
	"\n"
	"Member:\n"
	"\n"
	"  --name 'default'\n"
	"    Human-readable name of this member, unique in the cluster; it names this member\n"
	"    in --initial-cluster.\n"
	"  --data-dir '${name}.cairn'\n"
	"    Directory of this member's log and store.\n"
	"  --listen-client-urls '" SRV_CONFIG_DEFAULT_CLIENT_URL "'\n"
	"    Comma-separated URLs to serve clients on (http or https, a numeric IP or localhost,\n"
	"    and a port).\n"
	"  --listen-peer-urls '" SRV_CONFIG_DEFAULT_PEER_URL "'\n"
	"    Comma-separated URLs to serve the other members on.\n"
	"  --heartbeat-interval '100'\n"
	"    Milliseconds between the leader's heartbeats.\n"
	"  --election-timeout '1000'\n"
	"    Milliseconds a follower waits for the leader before it stands for election; at\n"
	"    least 5 times --heartbeat-interval and at most 50000.\n"
	"  --snapshot-count '100000'\n"
	"    Committed entries between two snapshots of the store (0 means the default).\n"
	"  --quota-backend-bytes '0'\n"
	"    Size of the store at which writes are refused with an alarm; 0 means 2 GiB, the\n"
	"    maximum is 8 GiB.\n"
	"  --max-request-bytes '1572864'\n"
	"    Largest client request accepted, in bytes (at most 64 MiB).\n"
	"  --max-txn-ops '128'\n"
	"    Most operations allowed in one transaction.\n"
	"\n"
	"Clustering:\n"
	"\n"
	"  --advertise-client-urls '" SRV_CONFIG_DEFAULT_CLIENT_URL "'\n"
	"    Comma-separated client URLs this member tells clients about; required when\n"
	"    --listen-client-urls is given.\n"
	"  --initial-advertise-peer-urls '" SRV_CONFIG_DEFAULT_PEER_URL "'\n"
	"    Comma-separated peer URLs this member tells the other members about.\n"
	"  --initial-cluster '${name}=<each --initial-advertise-peer-urls>'\n"
	"    Members of the cluster when it is formed, as name=url[,name=url...].\n"
	"  --initial-cluster-state 'new'\n"
	"    'new' to form a new cluster, 'existing' to join one (after `etcdctl member add`).\n"
	"  --initial-cluster-token '" SRV_CONFIG_DEFAULT_CLUSTER_TOKEN "'\n"
	"    A token unique to the cluster, so that two clusters formed from the same member\n"
	"    list get different ids.\n"
	"\n"
	"Security:\n"
	"\n"
	"  --cert-file ''\n"
	"    PEM certificate of the client port; required for https client URLs.\n"
	"  --key-file ''\n"
	"    PEM private key of the client port.\n"
	"  --trusted-ca-file ''\n"
	"    PEM certificate authorities that client certificates must chain to.\n"
	"  --client-cert-auth 'false'\n"
	"    Require every client to present a certificate from --trusted-ca-file.\n"
	"  --peer-cert-file ''\n"
	"    PEM certificate of the peer port; required for https peer URLs.\n"
	"  --peer-key-file ''\n"
	"    PEM private key of the peer port.\n"
	"  --peer-trusted-ca-file ''\n"
	"    PEM certificate authorities that other members' certificates must chain to.\n"
	"  --peer-client-cert-auth 'false'\n"
	"    Require every member that connects to present a certificate.\n"
	"\n"
	"Logging:\n"
	"\n"
	"  --log-level 'info'\n"
	"    Least severe level logged: debug, info, warn, error, panic or fatal.\n"
	"\n"
	"Gossip:\n"
	"\n"
	"  --gossip-listen '" SRV_CONFIG_DEFAULT_GOSSIP_LISTEN "'\n"
	"    UDP and TCP address (numeric IP or localhost, and a port) for membership gossip;\n"
	"    when not given, port 7946 on the host of the first --listen-client-urls.\n"
	GOSSIP_HELP
	"  --gossip-store-members 'true'\n"
	"    While this member leads, write the gossip view under /cairn/members/.\n";

_Static_assert(SRV_CONFIG_DEFAULT_HEARTBEAT_MS == 100, "help text shows 100");
_Static_assert(SRV_CONFIG_DEFAULT_ELECTION_MS == 1000, "help text shows 1000");
_Static_assert(SRV_CONFIG_MAX_ELECTION_MS == 50000, "help text shows 50000");
_Static_assert(SRV_CONFIG_DEFAULT_SNAPSHOT_COUNT == 100000, "help text shows 100000");
_Static_assert(SRV_CONFIG_DEFAULT_MAX_REQUEST_BYTES == 1572864, "help text shows 1572864");
_Static_assert(SRV_CONFIG_DEFAULT_MAX_TXN_OPS == 128, "help text shows 128");
_Static_assert(SRV_CONFIG_DEFAULT_GOSSIP_PORT == 7946, "help text shows 7946");
_Static_assert(SRV_CONFIG_DEFAULT_GOSSIP_PROBE_INTERVAL_MS == 1000, "help text shows 1000");
_Static_assert(SRV_CONFIG_DEFAULT_GOSSIP_PROBE_TIMEOUT_MS == 500, "help text shows 500");
_Static_assert(SRV_CONFIG_DEFAULT_GOSSIP_INTERVAL_MS == 200, "help text shows 200");
_Static_assert(SRV_CONFIG_DEFAULT_GOSSIP_SUSPICION_MULT == 4, "help text shows 4");
_Static_assert(SRV_CONFIG_DEFAULT_GOSSIP_PUSHPULL_INTERVAL_MS == 30000, "help text shows 30000");
_Static_assert(SRV_CONFIG_DEFAULT_GOSSIP_REAP_DEAD_MS == 86400000, "help text shows 86400000");
_Static_assert(SRV_CONFIG_DEFAULT_GOSSIP_REAP_LEFT_MS == 3600000, "help text shows 3600000");

const char *srv_config_help(void)
{
	return help_text;
}

static const char agent_help_text[] =
	"Usage:\n"
	"\n"
	"  cairn agent --name NAME [flags]\n"
	"    Run a gossip-only member for a node agent: it joins the gossip pool of the cairn\n"
	"    servers, so that their leader records this node's liveness and tags under\n"
	"    /cairn/members/NAME. No Raft and no store. SIGTERM or SIGINT leaves the pool\n"
	"    gracefully; SIGHUP reads --gossip-key-file again.\n"
	"\n"
	"  cairn gossip-keygen\n"
	"    Print a new random key for --gossip-key-file (base64, 32 bytes).\n"
	"\n"
	"Flags are written --flag value or --flag=value; each can also be set by an environment\n"
	"variable named CAIRN_ and the flag in upper case with underscores (--gossip-join is\n"
	"CAIRN_GOSSIP_JOIN); a flag wins over its variable.\n"
	"\n"
	"  --name ''\n"
	"    Name of this node in the gossip pool, unique in the pool (required).\n"
	"  --log-level 'info'\n"
	"    Least severe level logged: debug, info, warn, error, panic or fatal.\n"
	"  --gossip-listen '" SRV_CONFIG_DEFAULT_AGENT_GOSSIP_LISTEN "'\n"
	"    UDP and TCP address (numeric IP or localhost, and a port) for gossip; on 0.0.0.0\n"
	"    or ::, the address of the first network interface that is not a loopback is\n"
	"    advertised.\n"
	GOSSIP_HELP;

const char *srv_config_agent_help(void)
{
	return agent_help_text;
}
