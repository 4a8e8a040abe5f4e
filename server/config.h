/* config.h: a member's configuration, as etcd 3.4 defines it, from its three sources: the
 * command line, CAIRN_* environment variables and a YAML file named by --config-file.
 *
 * SOURCES AND PRECEDENCE (etcd's, from its configuration guide and etcdmain/config.go):
 *
 *   1. Flags are parsed first, always; an unknown flag, a missing or malformed value, or a
 *      positional argument is an error even when a config file is used.
 *   2. A config file, named by --config-file or else by CAIRN_CONFIG_FILE, replaces both: when
 *      it is given, every other flag and every CAIRN_* variable is ignored (each one ignored is
 *      reported in warnings[]) and the member starts from the defaults plus the file.
 *   3. Without a file, a flag given on the command line wins over its CAIRN_* variable (the
 *      variable is reported as shadowed), and a variable wins over the default. Empty
 *      variables count as unset, as in etcd.
 *
 * Variables are named CAIRN_<FLAG> with the flag's dashes as underscores (--data-dir is
 * CAIRN_DATA_DIR). etcd's ETCD_* names are not read: a machine that runs etcd beside Cairn (the
 * conformance tests and the benchmarks do) would otherwise configure both from one variable.
 *
 * Nothing here prints, exits or touches the network; the only I/O is reading the config file.
 * The caller (cmd/cairn) prints the error, the help or the version text and chooses the exit
 * status: SRV_CONFIG_EUSAGE is a command line mistake (exit 2, as etcd's flag parser does),
 * the others a configuration that cannot run (exit 1). */
#ifndef CAIRN_SERVER_CONFIG_H
#define CAIRN_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef SRV_API
#define SRV_API __attribute__((visibility("default")))
#endif

/* The version `cairn --version` reports, and the etcd API version served. */
#define SRV_CAIRN_VERSION "0.1.0"
#define SRV_ETCD_API_VERSION "3.4"

/* Defaults. Cairn binds and advertises 127.0.0.1 where etcd uses localhost (which may resolve
 * to ::1 first), and names its data directory "<name>.cairn" where etcd uses "<name>.etcd". */
#define SRV_CONFIG_DEFAULT_NAME "default"
#define SRV_CONFIG_DEFAULT_CLIENT_URL "http://127.0.0.1:2379"
#define SRV_CONFIG_DEFAULT_PEER_URL "http://127.0.0.1:2380"
#define SRV_CONFIG_DEFAULT_CLUSTER_TOKEN "cairn-cluster"
#define SRV_CONFIG_DEFAULT_HEARTBEAT_MS 100u
#define SRV_CONFIG_DEFAULT_ELECTION_MS 1000u
#define SRV_CONFIG_MAX_ELECTION_MS 50000u /* etcd's maxElectionMs */
#define SRV_CONFIG_DEFAULT_SNAPSHOT_COUNT 100000u
#define SRV_CONFIG_DEFAULT_QUOTA_BYTES (2ull * 1024 * 1024 * 1024) /* --quota-backend-bytes 0 */
#define SRV_CONFIG_MAX_QUOTA_BYTES (8ull * 1024 * 1024 * 1024)     /* etcd's suggested maximum */
#define SRV_CONFIG_DEFAULT_MAX_REQUEST_BYTES (1536u * 1024)        /* 1.5 MiB */
#define SRV_CONFIG_MAX_MAX_REQUEST_BYTES (64u * 1024 * 1024)
#define SRV_CONFIG_DEFAULT_MAX_TXN_OPS 128u
#define SRV_CONFIG_MAX_MAX_TXN_OPS 65536u
#define SRV_CONFIG_DEFAULT_GOSSIP_LISTEN "127.0.0.1:7946" /* memberlist's usual port */
/* Without --gossip-listen a server gossips on this port of its first client URL's host (so
 * 127.0.0.1:7946 with the default URLs); `cairn agent` on every address of its host. */
#define SRV_CONFIG_DEFAULT_GOSSIP_PORT 7946u
#define SRV_CONFIG_DEFAULT_AGENT_GOSSIP_LISTEN "0.0.0.0:7946"
/* Gossip timings, in milliseconds: memberlist's LAN configuration (gossip/gossip.h). */
#define SRV_CONFIG_DEFAULT_GOSSIP_PROBE_INTERVAL_MS 1000u
#define SRV_CONFIG_DEFAULT_GOSSIP_PROBE_TIMEOUT_MS 500u
#define SRV_CONFIG_DEFAULT_GOSSIP_INTERVAL_MS 200u
#define SRV_CONFIG_DEFAULT_GOSSIP_SUSPICION_MULT 4u
#define SRV_CONFIG_DEFAULT_GOSSIP_PUSHPULL_INTERVAL_MS 30000u
#define SRV_CONFIG_DEFAULT_GOSSIP_REAP_DEAD_MS 86400000ull /* a day */
#define SRV_CONFIG_DEFAULT_GOSSIP_REAP_LEFT_MS 3600000ull  /* an hour */

/* Bounds on what the sources may hold. */
#define SRV_CONFIG_MAX_URLS 16            /* URLs in one list */
#define SRV_CONFIG_MAX_CLUSTER_URLS 256   /* name=url entries in --initial-cluster */
#define SRV_CONFIG_MAX_VALUE 4096         /* bytes in one value */
#define SRV_CONFIG_MAX_GOSSIP_JOIN 64     /* addresses in --gossip-join */
#define SRV_CONFIG_MAX_GOSSIP_TAGS 32     /* --gossip-tag pairs */
#define SRV_CONFIG_MAX_GOSSIP_LABEL 255   /* bytes in --gossip-label */
#define SRV_CONFIG_MAX_FILE (1024 * 1024) /* bytes in a config file */
#define SRV_CONFIG_MAX_WARNINGS 64

/* Error codes: 0, or one of these (negative). */
#define SRV_CONFIG_ERRNO_MAP(X)                \
	X(NOMEM, 1, "out of memory")           \
	X(USAGE, 2, "invalid command line")    \
	X(INVALID, 3, "invalid configuration") \
	X(FILE, 4, "cannot read the configuration file")

enum srv_config_errno {
#define SRV_CONFIG__ERRNO_ENUM(name, num, msg) SRV_CONFIG_E##name = -(num),
	SRV_CONFIG_ERRNO_MAP(SRV_CONFIG__ERRNO_ENUM)
#undef SRV_CONFIG__ERRNO_ENUM
};

/* What the command line asked for. HELP and VERSION are answered before the environment or a
 * config file is read, so a broken configuration never hides them. */
enum srv_config_action {
	SRV_CONFIG_RUN = 0,
	SRV_CONFIG_HELP,    /* print srv_config_help() and exit 0 */
	SRV_CONFIG_VERSION, /* print srv_config_version() and exit 0 */
};

enum srv_cluster_state {
	SRV_CLUSTER_NEW = 0, /* --initial-cluster-state new */
	SRV_CLUSTER_EXISTING,
};

enum srv_log_level {
	SRV_LOG_DEBUG = 0,
	SRV_LOG_INFO,
	SRV_LOG_WARN,
	SRV_LOG_ERROR,
	SRV_LOG_PANIC,
	SRV_LOG_FATAL,
};

/* One URL: http or https, a host and a port, no path. */
struct srv_url {
	char *text; /* normalised: lower-case scheme and host, "http://127.0.0.1:2379" */
	char *host; /* "127.0.0.1", "::1" (no brackets), "localhost", or a DNS name */
	uint16_t port;
	bool https;
};

struct srv_url_list {
	struct srv_url *v;
	size_t n;
};

/* One entry of --initial-cluster: a member's name and one of its peer URLs. A member with
 * several peer URLs has several entries, in the order given. */
struct srv_cluster_entry {
	char *name;
	struct srv_url url;
};

struct srv_tls {
	char *cert_file;       /* NULL when not given */
	char *key_file;        /* NULL when not given */
	char *trusted_ca_file; /* NULL when not given */
	bool client_cert_auth;
};

/* host:port, for gossip addresses. */
struct srv_hostport {
	char *text; /* as given: "127.0.0.1:7946", "[::1]:7946", "node-3.example:7946" */
	char *host; /* without brackets */
	uint16_t port;
};

struct srv_tag {
	char *key;
	char *value;
};

/* Gossip timings (--gossip-probe-interval ...), in milliseconds; the ranges are checked by
 * srv_config_load(), the probe timeout below the probe interval. */
struct srv_gossip_timing {
	uint32_t probe_interval_ms;    /* 50 .. 60000 */
	uint32_t probe_timeout_ms;     /* 10 .. 60000, below probe_interval_ms */
	uint32_t gossip_interval_ms;   /* 10 .. 60000 */
	uint32_t suspicion_mult;       /* 1 .. 100 */
	uint32_t pushpull_interval_ms; /* 0 (never) or 1000 .. 86400000 */
	uint64_t reap_dead_ms;         /* 1000 .. 30 days */
	uint64_t reap_left_ms;         /* 1000 .. 30 days */
};

/* A loaded configuration. Every pointer is owned by the struct and freed by
 * srv_config_free(); strings are NUL-terminated copies, never borrowed from argv, envp or the
 * file. Optional strings are NULL when not given. */
struct srv_config {
	enum srv_config_action action;

	/* member */
	char *name;                             /* --name, default "default" */
	char *data_dir;                         /* --data-dir, default "<name>.cairn" */
	struct srv_url_list listen_client_urls; /* bind: numeric IP or localhost */
	struct srv_url_list listen_peer_urls;   /* bind: numeric IP or localhost */
	uint32_t heartbeat_ms;                  /* --heartbeat-interval */
	uint32_t election_ms;                   /* --election-timeout */
	uint64_t snapshot_count;                /* 0 given means the default */
	uint64_t quota_backend_bytes;           /* 0 given means the default 2 GiB */
	uint32_t max_request_bytes;
	uint32_t max_txn_ops;

	/* clustering */
	struct srv_url_list advertise_client_urls;
	struct srv_url_list initial_advertise_peer_urls;
	char *initial_cluster; /* normalised text, "name=url,..."; derived when not given */
	struct srv_cluster_entry *initial_cluster_entries;
	size_t initial_cluster_n;
	enum srv_cluster_state initial_cluster_state;
	char *initial_cluster_token;

	/* security */
	struct srv_tls
		client_tls; /* --cert-file, --key-file, --trusted-ca-file, --client-cert-auth */
	struct srv_tls peer_tls; /* the --peer-* forms */

	/* logging */
	enum srv_log_level log_level;

	/* gossip */
	struct srv_hostport gossip_listen; /* bind: numeric IP or localhost */
	struct srv_hostport *gossip_join;  /* addresses of members to join through */
	size_t gossip_join_n;
	char *gossip_key_file;
	char *gossip_label;
	struct srv_tag *gossip_tags; /* unique keys, in the order given */
	size_t gossip_tags_n;
	struct srv_gossip_timing gossip_timing;
	bool gossip_store_members; /* the leader writes /cairn/members/ (default true) */

	/* where the values came from */
	char *config_file; /* the file read, or NULL */

	/* Things worth a log line once logging is up: ignored or shadowed flags and variables,
	 * unrecognised CAIRN_* variables, TLS files given for an http URL. At most
	 * SRV_CONFIG_MAX_WARNINGS; later ones are dropped. */
	char **warnings;
	size_t warnings_n;
};

/* Load the configuration from argv[1..argc) (argv[0] is the program and is skipped), envp (a
 * NULL-terminated "NAME=value" array like environ; NULL means none) and the config file if one
 * is named. Flags are etcd's: "--flag value", "--flag=value", one dash or two; a boolean takes
 * "--flag" or "--flag=true|false" (never a separate value, as in Go's flag package).
 *
 * On success returns 0 and fills *cfg; cfg->action says whether to run, or print the help or
 * the version (then nothing but action is meaningful, though cfg must still be freed). On
 * failure returns a negative SRV_CONFIG_E* code and writes a one-line message naming the flag,
 * variable or file line into err (always NUL-terminated, truncated to err_len); *cfg is then
 * left empty, so srv_config_free() is still safe. The caller owns *cfg in both cases and
 * releases it with srv_config_free(). argv and envp are only read.
 *
 * The checks that etcd makes only when a member bootstraps (its name in --initial-cluster, its
 * peer URLs matching) are in srv_config_verify_bootstrap(): a member restarting from its data
 * directory does not need them. */
SRV_API int srv_config_load(struct srv_config *cfg, int argc, char *const argv[],
			    char *const envp[], char *err, size_t err_len);

/* `cairn agent`'s configuration: the same rules and checks, but only --name (required),
 * --log-level, the --gossip-* flags and their CAIRN_* variables (other CAIRN_* variables,
 * meant for a server on the same host, are ignored); no config file. --gossip-listen
 * defaults to SRV_CONFIG_DEFAULT_AGENT_GOSSIP_LISTEN. The fields a server alone uses keep
 * their defaults or stay NULL (data_dir, initial_cluster ...). HELP means print
 * srv_config_agent_help(). */
SRV_API int srv_config_load_agent(struct srv_config *cfg, int argc, char *const argv[],
				  char *const envp[], char *err, size_t err_len);

/* The checks etcd makes before a member with an empty data directory starts: its name appears
 * in --initial-cluster; with --initial-cluster-state new, its URLs there are exactly
 * --initial-advertise-peer-urls (compared as normalised text, without resolving names); no
 * URL appears twice. Returns 0 or SRV_CONFIG_EINVALID with the message in err. */
SRV_API int srv_config_verify_bootstrap(const struct srv_config *cfg, char *err, size_t err_len);

/* Free everything *cfg owns and zero it. Safe on a zeroed or already freed struct. */
SRV_API void srv_config_free(struct srv_config *cfg);

/* `cairn --help`: static text, ends with a newline; never NULL. */
SRV_API const char *srv_config_help(void);

/* `cairn agent --help`: static text, ends with a newline; never NULL. */
SRV_API const char *srv_config_agent_help(void);

/* `cairn --version`: static text, "cairn Version: ...\nAPI version: ...\n"; never NULL. */
SRV_API const char *srv_config_version(void);

/* Message for an error code; never NULL. */
SRV_API const char *srv_config_strerror(int err);

/* Names for logs: "debug" ..., "new"/"existing". Never NULL. */
SRV_API const char *srv_log_level_name(enum srv_log_level level);
SRV_API const char *srv_cluster_state_name(enum srv_cluster_state state);

#endif /* CAIRN_SERVER_CONFIG_H */
