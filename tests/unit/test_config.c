/* test_config.c: the member's configuration (server/config.h): the defaults, every flag in
 * each of its forms, the CAIRN_* variables, the YAML file (written into a temporary
 * directory), etcd's precedence between the three, and the exact message of every refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "tmpdir.h"

#define ERR_LEN 512

/* argv and envp as NULL-terminated compound literals. */
#define ARGV(...) ((char *const[]){ "cairn", __VA_ARGS__, NULL })
#define NOARGS ((char *const[]){ "cairn", NULL })
#define ENV(...) ((char *const[]){ __VA_ARGS__, NULL })
#define NOENV ((char *const[]){ NULL })

static char g_dir[256];
static char g_err[ERR_LEN];

static int load(struct srv_config *c, char *const argv[], char *const envp[])
{
	int argc = 0;
	while (argv[argc] != NULL) {
		argc++;
	}
	return srv_config_load(c, argc, argv, envp, g_err, sizeof g_err);
}

/* Loads, expects failure with code rc and exactly message msg, and checks *c is empty. */
static void expect_error(char *const argv[], char *const envp[], int rc, const char *msg)
{
	struct srv_config c;
	int got = load(&c, argv, envp);
	if (got != rc || strcmp(g_err, msg) != 0) {
		fail_msg("got %d \"%s\"\nwant %d \"%s\"", got, g_err, rc, msg);
	}
	assert_null(c.name);
	assert_int_equal(c.warnings_n, 0);
	srv_config_free(&c);
}

static const char *write_file(const char *name, const char *text)
{
	static char path[512];
	snprintf(path, sizeof path, "%s/%s", g_dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	return path;
}

static bool has_warning(const struct srv_config *c, const char *text)
{
	for (size_t i = 0; i < c->warnings_n; i++) {
		if (strcmp(c->warnings[i], text) == 0) {
			return true;
		}
	}
	return false;
}

static int group_setup(void **state)
{
	(void)state;
	h_tmpdir_make(g_dir, sizeof g_dir, "cairn-config");
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	h_tmpdir_remove(g_dir);
	return 0;
}

/* ---- defaults ---- */

static void check_defaults(const struct srv_config *c)
{
	assert_int_equal(c->action, SRV_CONFIG_RUN);
	assert_string_equal(c->name, "default");
	assert_string_equal(c->data_dir, "default.cairn");
	assert_int_equal(c->listen_client_urls.n, 1);
	assert_string_equal(c->listen_client_urls.v[0].text, "http://127.0.0.1:2379");
	assert_string_equal(c->listen_client_urls.v[0].host, "127.0.0.1");
	assert_int_equal(c->listen_client_urls.v[0].port, 2379);
	assert_false(c->listen_client_urls.v[0].https);
	assert_int_equal(c->advertise_client_urls.n, 1);
	assert_string_equal(c->advertise_client_urls.v[0].text, "http://127.0.0.1:2379");
	assert_int_equal(c->listen_peer_urls.n, 1);
	assert_string_equal(c->listen_peer_urls.v[0].text, "http://127.0.0.1:2380");
	assert_int_equal(c->initial_advertise_peer_urls.n, 1);
	assert_string_equal(c->initial_advertise_peer_urls.v[0].text, "http://127.0.0.1:2380");
	assert_string_equal(c->initial_cluster, "default=http://127.0.0.1:2380");
	assert_int_equal(c->initial_cluster_n, 1);
	assert_string_equal(c->initial_cluster_entries[0].name, "default");
	assert_string_equal(c->initial_cluster_entries[0].url.text, "http://127.0.0.1:2380");
	assert_int_equal(c->initial_cluster_state, SRV_CLUSTER_NEW);
	assert_string_equal(c->initial_cluster_token, "cairn-cluster");
	assert_int_equal(c->heartbeat_ms, 100);
	assert_int_equal(c->election_ms, 1000);
	assert_int_equal(c->snapshot_count, 100000);
	assert_int_equal(c->quota_backend_bytes, 2ull << 30);
	assert_int_equal(c->max_request_bytes, 1572864);
	assert_int_equal(c->max_txn_ops, 128);
	assert_null(c->client_tls.cert_file);
	assert_null(c->client_tls.key_file);
	assert_null(c->client_tls.trusted_ca_file);
	assert_false(c->client_tls.client_cert_auth);
	assert_null(c->peer_tls.cert_file);
	assert_null(c->peer_tls.key_file);
	assert_null(c->peer_tls.trusted_ca_file);
	assert_false(c->peer_tls.client_cert_auth);
	assert_int_equal(c->log_level, SRV_LOG_INFO);
	assert_string_equal(c->gossip_listen.text, "127.0.0.1:7946");
	assert_string_equal(c->gossip_listen.host, "127.0.0.1");
	assert_int_equal(c->gossip_listen.port, 7946);
	assert_int_equal(c->gossip_join_n, 0);
	assert_null(c->gossip_key_file);
	assert_null(c->gossip_label);
	assert_int_equal(c->gossip_tags_n, 0);
	assert_null(c->config_file);
}

static void test_defaults(void **state)
{
	(void)state;
	struct srv_config c;
	assert_int_equal(load(&c, NOARGS, NOENV), 0);
	assert_string_equal(g_err, "");
	check_defaults(&c);
	assert_int_equal(c.warnings_n, 0);
	assert_int_equal(srv_config_verify_bootstrap(&c, g_err, sizeof g_err), 0);
	srv_config_free(&c);
	/* Freeing twice, or a zeroed struct, is harmless. */
	srv_config_free(&c);

	/* A NULL envp is no environment; argc 0 is no flags. */
	assert_int_equal(srv_config_load(&c, 0, NOARGS, NULL, g_err, sizeof g_err), 0);
	check_defaults(&c);
	srv_config_free(&c);
}

/* ---- flags ---- */

static void test_every_flag(void **state)
{
	(void)state;
	struct srv_config c;
	int rc = load(
		&c,
		ARGV("--name", "n1", "--data-dir=/var/lib/n1", "--listen-client-urls",
		     "https://10.0.0.1:2379,http://127.0.0.1:2379",
		     "--advertise-client-urls=https://n1.example:2379", "-listen-peer-urls",
		     "https://10.0.0.1:2380", "--initial-advertise-peer-urls",
		     "https://10.0.0.1:2380", "--initial-cluster",
		     "n1=https://10.0.0.1:2380,n2=https://10.0.0.2:2380,n3=https://10.0.0.3:2380",
		     "--initial-cluster-state=existing", "--initial-cluster-token", "tok",
		     "--heartbeat-interval", "50", "--election-timeout=500", "--snapshot-count",
		     "2000", "--quota-backend-bytes", "4294967296", "--max-request-bytes",
		     "1048576", "--max-txn-ops", "64", "--cert-file", "/c.pem", "--key-file=/c.key",
		     "--trusted-ca-file", "/ca.pem", "--client-cert-auth", "--peer-cert-file",
		     "/p.pem", "--peer-key-file", "/p.key", "--peer-trusted-ca-file", "/pca.pem",
		     "--peer-client-cert-auth=true", "--log-level", "debug", "--gossip-listen",
		     "10.0.0.1:7946", "--gossip-join", "10.0.0.2:7946, node-3.example:7946",
		     "--gossip-key-file", "/g.key", "--gossip-label", "prod", "--gossip-tag",
		     "rack=r1", "--gossip-tag=zone=z1,role=db"),
		NOENV);
	assert_int_equal(rc, 0);
	assert_int_equal(c.action, SRV_CONFIG_RUN);
	assert_string_equal(c.name, "n1");
	assert_string_equal(c.data_dir, "/var/lib/n1");
	assert_int_equal(c.listen_client_urls.n, 2);
	assert_string_equal(c.listen_client_urls.v[0].text, "https://10.0.0.1:2379");
	assert_true(c.listen_client_urls.v[0].https);
	assert_string_equal(c.listen_client_urls.v[1].text, "http://127.0.0.1:2379");
	assert_int_equal(c.advertise_client_urls.n, 1);
	assert_string_equal(c.advertise_client_urls.v[0].host, "n1.example");
	assert_string_equal(c.listen_peer_urls.v[0].text, "https://10.0.0.1:2380");
	assert_string_equal(c.initial_advertise_peer_urls.v[0].text, "https://10.0.0.1:2380");
	assert_int_equal(c.initial_cluster_n, 3);
	assert_string_equal(c.initial_cluster_entries[2].name, "n3");
	assert_string_equal(c.initial_cluster_entries[2].url.host, "10.0.0.3");
	assert_int_equal(c.initial_cluster_entries[2].url.port, 2380);
	assert_string_equal(c.initial_cluster, "n1=https://10.0.0.1:2380,n2=https://10.0.0.2:2380,"
					       "n3=https://10.0.0.3:2380");
	assert_int_equal(c.initial_cluster_state, SRV_CLUSTER_EXISTING);
	assert_string_equal(c.initial_cluster_token, "tok");
	assert_int_equal(c.heartbeat_ms, 50);
	assert_int_equal(c.election_ms, 500);
	assert_int_equal(c.snapshot_count, 2000);
	assert_int_equal(c.quota_backend_bytes, 4294967296ull);
	assert_int_equal(c.max_request_bytes, 1048576);
	assert_int_equal(c.max_txn_ops, 64);
	assert_string_equal(c.client_tls.cert_file, "/c.pem");
	assert_string_equal(c.client_tls.key_file, "/c.key");
	assert_string_equal(c.client_tls.trusted_ca_file, "/ca.pem");
	assert_true(c.client_tls.client_cert_auth);
	assert_string_equal(c.peer_tls.cert_file, "/p.pem");
	assert_string_equal(c.peer_tls.key_file, "/p.key");
	assert_string_equal(c.peer_tls.trusted_ca_file, "/pca.pem");
	assert_true(c.peer_tls.client_cert_auth);
	assert_int_equal(c.log_level, SRV_LOG_DEBUG);
	assert_string_equal(c.gossip_listen.text, "10.0.0.1:7946");
	assert_int_equal(c.gossip_join_n, 2);
	assert_string_equal(c.gossip_join[0].text, "10.0.0.2:7946");
	assert_string_equal(c.gossip_join[1].host, "node-3.example");
	assert_int_equal(c.gossip_join[1].port, 7946);
	assert_string_equal(c.gossip_key_file, "/g.key");
	assert_string_equal(c.gossip_label, "prod");
	assert_int_equal(c.gossip_tags_n, 3);
	assert_string_equal(c.gossip_tags[0].key, "rack");
	assert_string_equal(c.gossip_tags[0].value, "r1");
	assert_string_equal(c.gossip_tags[1].key, "zone");
	assert_string_equal(c.gossip_tags[2].key, "role");
	assert_string_equal(c.gossip_tags[2].value, "db");
	/* https client URL with cert files: no warning; the http one gets one. */
	assert_int_equal(c.warnings_n, 2);
	assert_true(has_warning(&c, "the scheme of client url http://127.0.0.1:2379 is HTTP while "
				    "key and cert files are present; ignoring key and cert files "
				    "for this URL"));
	assert_true(has_warning(&c, "the scheme of client url http://127.0.0.1:2379 is HTTP while "
				    "--client-cert-auth is enabled; ignoring client cert auth for "
				    "this URL"));
	/* existing: only the local name and duplicates are checked. */
	assert_int_equal(srv_config_verify_bootstrap(&c, g_err, sizeof g_err), 0);
	srv_config_free(&c);
}

static void test_flag_forms(void **state)
{
	(void)state;
	struct srv_config c;
	/* Booleans: alone, =true, =false, Go's other spellings. */
	const char *forms[][2] = {
		{ "--client-cert-auth", "1" },      { "-client-cert-auth", "1" },
		{ "--client-cert-auth=true", "1" }, { "--client-cert-auth=1", "1" },
		{ "--client-cert-auth=T", "1" },    { "--client-cert-auth=false", "0" },
		{ "--client-cert-auth=0", "0" },    { "--client-cert-auth=FALSE", "0" }
	};
	for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
		char *argv[] = { "cairn", (char *)forms[i][0], NULL };
		assert_int_equal(load(&c, argv, NOENV), 0);
		assert_int_equal(c.client_tls.client_cert_auth, forms[i][1][0] == '1');
		srv_config_free(&c);
	}
	/* The last of a repeated flag wins; --gossip-tag accumulates. */
	assert_int_equal(
		load(&c,
		     ARGV("--name", "a", "--name=b", "--gossip-tag", "a=1", "--gossip-tag", "b=2"),
		     NOENV),
		0);
	assert_string_equal(c.name, "b");
	assert_int_equal(c.gossip_tags_n, 2);
	assert_string_equal(c.gossip_tags[1].value, "2");
	srv_config_free(&c);
	/* A value may start with a dash, as Go's flag package takes the next argument. */
	assert_int_equal(load(&c, ARGV("--data-dir", "-odd"), NOENV), 0);
	assert_string_equal(c.data_dir, "-odd");
	srv_config_free(&c);
	/* "--" ends the flags; nothing after it is fine. */
	assert_int_equal(load(&c, ARGV("--name", "x", "--"), NOENV), 0);
	assert_string_equal(c.name, "x");
	srv_config_free(&c);
	/* snapshot-count and quota-backend-bytes 0 mean their defaults. */
	assert_int_equal(load(&c, ARGV("--snapshot-count=0", "--quota-backend-bytes", "0"), NOENV),
			 0);
	assert_int_equal(c.snapshot_count, 100000);
	assert_int_equal(c.quota_backend_bytes, 2ull << 30);
	srv_config_free(&c);
	/* Every log level by name. */
	for (int l = SRV_LOG_DEBUG; l <= SRV_LOG_FATAL; l++) {
		char arg[64];
		snprintf(arg, sizeof arg, "--log-level=%s",
			 srv_log_level_name((enum srv_log_level)l));
		char *argv[] = { "cairn", arg, NULL };
		assert_int_equal(load(&c, argv, NOENV), 0);
		assert_int_equal(c.log_level, l);
		srv_config_free(&c);
	}
	assert_string_equal(srv_cluster_state_name(SRV_CLUSTER_NEW), "new");
	assert_string_equal(srv_cluster_state_name(SRV_CLUSTER_EXISTING), "existing");
}

static void test_derived(void **state)
{
	(void)state;
	struct srv_config c;
	/* data-dir and initial-cluster follow --name and the advertised peer URLs. */
	assert_int_equal(load(&c,
			      ARGV("--name", "n2", "--initial-advertise-peer-urls",
				   "http://10.0.0.2:2380,http://10.0.0.2:2390"),
			      NOENV),
			 0);
	assert_string_equal(c.data_dir, "n2.cairn");
	assert_string_equal(c.initial_cluster, "n2=http://10.0.0.2:2380,n2=http://10.0.0.2:2390");
	assert_int_equal(c.initial_cluster_n, 2);
	assert_int_equal(srv_config_verify_bootstrap(&c, g_err, sizeof g_err), 0);
	srv_config_free(&c);
	/* An empty --data-dir is the default too. */
	assert_int_equal(load(&c, ARGV("--data-dir="), NOENV), 0);
	assert_string_equal(c.data_dir, "default.cairn");
	srv_config_free(&c);
	/* URLs are normalised; duplicates dropped; spaces around items trimmed. */
	assert_int_equal(load(&c,
			      ARGV("--listen-client-urls",
				   "HTTP://LocalHost:2379, http://[::1]:2379,http://localhost:2379",
				   "--advertise-client-urls", "http://[::1]:2379"),
			      NOENV),
			 0);
	assert_int_equal(c.listen_client_urls.n, 2);
	assert_string_equal(c.listen_client_urls.v[0].text, "http://localhost:2379");
	assert_string_equal(c.listen_client_urls.v[1].text, "http://[::1]:2379");
	assert_string_equal(c.listen_client_urls.v[1].host, "::1");
	srv_config_free(&c);
}

/* ---- environment ---- */

static void test_env(void **state)
{
	(void)state;
	struct srv_config c;
	int rc = load(&c, NOARGS,
		      ENV("PATH=/usr/bin", "CAIRN_NAME=e1", "CAIRN_DATA_DIR=/d/e1",
			  "CAIRN_LISTEN_CLIENT_URLS=http://10.1.0.1:2379",
			  "CAIRN_ADVERTISE_CLIENT_URLS=http://10.1.0.1:2379",
			  "CAIRN_LISTEN_PEER_URLS=http://10.1.0.1:2380",
			  "CAIRN_INITIAL_ADVERTISE_PEER_URLS=http://10.1.0.1:2380",
			  "CAIRN_INITIAL_CLUSTER=e1=http://10.1.0.1:2380,e2=http://10.1.0.2:2380",
			  "CAIRN_INITIAL_CLUSTER_STATE=existing", "CAIRN_INITIAL_CLUSTER_TOKEN=t2",
			  "CAIRN_HEARTBEAT_INTERVAL=200", "CAIRN_ELECTION_TIMEOUT=2000",
			  "CAIRN_SNAPSHOT_COUNT=5", "CAIRN_QUOTA_BACKEND_BYTES=1024",
			  "CAIRN_MAX_REQUEST_BYTES=2048", "CAIRN_MAX_TXN_OPS=8",
			  "CAIRN_CERT_FILE=/c", "CAIRN_KEY_FILE=/k", "CAIRN_TRUSTED_CA_FILE=/ca",
			  "CAIRN_CLIENT_CERT_AUTH=true", "CAIRN_PEER_CERT_FILE=/pc",
			  "CAIRN_PEER_KEY_FILE=/pk", "CAIRN_PEER_TRUSTED_CA_FILE=/pca",
			  "CAIRN_PEER_CLIENT_CERT_AUTH=1", "CAIRN_LOG_LEVEL=warn",
			  "CAIRN_GOSSIP_LISTEN=10.1.0.1:7000", "CAIRN_GOSSIP_JOIN=10.1.0.2:7000",
			  "CAIRN_GOSSIP_KEY_FILE=/gk", "CAIRN_GOSSIP_LABEL=l",
			  "CAIRN_GOSSIP_TAG=a=1,b=2", "ETCD_NAME=ignored", "CAIRN_NAME=second"));
	assert_int_equal(rc, 0);
	assert_string_equal(c.name, "e1"); /* the first of two, as getenv */
	assert_string_equal(c.data_dir, "/d/e1");
	assert_string_equal(c.listen_client_urls.v[0].text, "http://10.1.0.1:2379");
	assert_string_equal(c.advertise_client_urls.v[0].text, "http://10.1.0.1:2379");
	assert_string_equal(c.listen_peer_urls.v[0].text, "http://10.1.0.1:2380");
	assert_string_equal(c.initial_advertise_peer_urls.v[0].text, "http://10.1.0.1:2380");
	assert_int_equal(c.initial_cluster_n, 2);
	assert_int_equal(c.initial_cluster_state, SRV_CLUSTER_EXISTING);
	assert_string_equal(c.initial_cluster_token, "t2");
	assert_int_equal(c.heartbeat_ms, 200);
	assert_int_equal(c.election_ms, 2000);
	assert_int_equal(c.snapshot_count, 5);
	assert_int_equal(c.quota_backend_bytes, 1024);
	assert_int_equal(c.max_request_bytes, 2048);
	assert_int_equal(c.max_txn_ops, 8);
	assert_string_equal(c.client_tls.cert_file, "/c");
	assert_string_equal(c.client_tls.key_file, "/k");
	assert_string_equal(c.client_tls.trusted_ca_file, "/ca");
	assert_true(c.client_tls.client_cert_auth);
	assert_string_equal(c.peer_tls.cert_file, "/pc");
	assert_string_equal(c.peer_tls.key_file, "/pk");
	assert_string_equal(c.peer_tls.trusted_ca_file, "/pca");
	assert_true(c.peer_tls.client_cert_auth);
	assert_int_equal(c.log_level, SRV_LOG_WARN);
	assert_string_equal(c.gossip_listen.text, "10.1.0.1:7000");
	assert_int_equal(c.gossip_join_n, 1);
	assert_string_equal(c.gossip_key_file, "/gk");
	assert_string_equal(c.gossip_label, "l");
	assert_int_equal(c.gossip_tags_n, 2);
	assert_null(c.config_file);
	srv_config_free(&c);

	/* Empty variables are unset; unknown CAIRN_* ones are reported, not refused. */
	assert_int_equal(load(&c, NOARGS, ENV("CAIRN_NAME=", "CAIRN_NMAE=x")), 0);
	assert_string_equal(c.name, "default");
	assert_int_equal(c.warnings_n, 1);
	assert_string_equal(c.warnings[0], "unrecognized environment variable CAIRN_NMAE");
	srv_config_free(&c);

	/* ETCD_* names are not read. */
	assert_int_equal(load(&c, NOARGS, ENV("ETCD_NAME=etcd1", "ETCD_DATA_DIR=/x")), 0);
	check_defaults(&c);
	assert_int_equal(c.warnings_n, 0);
	srv_config_free(&c);
}

/* ---- precedence ---- */

static void test_flag_over_env(void **state)
{
	(void)state;
	struct srv_config c;
	assert_int_equal(load(&c, ARGV("--name", "flag"),
			      ENV("CAIRN_NAME=env", "CAIRN_HEARTBEAT_INTERVAL=150")),
			 0);
	assert_string_equal(c.name, "flag");
	assert_int_equal(c.heartbeat_ms, 150); /* not given as a flag: the variable applies */
	assert_string_equal(c.data_dir, "flag.cairn");
	assert_int_equal(c.warnings_n, 1);
	assert_string_equal(c.warnings[0], "recognized environment variable CAIRN_NAME, but "
					   "unused: shadowed by corresponding flag");
	srv_config_free(&c);
	/* A shadowed variable is not even parsed: its bad value does not matter. */
	assert_int_equal(
		load(&c, ARGV("--heartbeat-interval=100"), ENV("CAIRN_HEARTBEAT_INTERVAL=fast")),
		0);
	srv_config_free(&c);
}

static void test_file_replaces_flags_and_env(void **state)
{
	(void)state;
	struct srv_config c;
	const char *path = write_file("prec.yml", "name: file\nheartbeat-interval: 120\n");
	char path_copy[512];
	snprintf(path_copy, sizeof path_copy, "%s", path);
	char *argv[] = { "cairn", "--config-file", path_copy, "--name",
			 "flag",  "--data-dir",    "/flag",   NULL };
	assert_int_equal(
		load(&c, argv,
		     ENV("CAIRN_NAME=env", "CAIRN_ELECTION_TIMEOUT=bad", "CAIRN_UNKNOWN=1")),
		0);
	assert_string_equal(c.name, "file");
	assert_string_equal(c.data_dir, "file.cairn");
	assert_int_equal(c.heartbeat_ms, 120);
	assert_int_equal(c.election_ms, 1000); /* the variable's bad value is never read */
	assert_string_equal(c.config_file, path_copy);
	assert_string_equal(c.initial_cluster, "file=http://127.0.0.1:2380");
	char w[700];
	snprintf(w, sizeof w, "flag --name ignored: the configuration file %s is used", path_copy);
	assert_true(has_warning(&c, w));
	snprintf(w, sizeof w, "flag --data-dir ignored: the configuration file %s is used",
		 path_copy);
	assert_true(has_warning(&c, w));
	snprintf(w, sizeof w,
		 "environment variable CAIRN_NAME ignored: the configuration file %s is used",
		 path_copy);
	assert_true(has_warning(&c, w));
	snprintf(w, sizeof w,
		 "environment variable CAIRN_ELECTION_TIMEOUT ignored: the configuration file %s "
		 "is used",
		 path_copy);
	assert_true(has_warning(&c, w));
	assert_int_equal(c.warnings_n, 4);
	srv_config_free(&c);

	/* CAIRN_CONFIG_FILE names the file when the flag does not. */
	char env[600];
	snprintf(env, sizeof env, "CAIRN_CONFIG_FILE=%s", path_copy);
	char *envp[] = { env, "CAIRN_NAME=env", NULL };
	assert_int_equal(load(&c, NOARGS, envp), 0);
	assert_string_equal(c.name, "file");
	srv_config_free(&c);

	/* The flag wins over the variable for the file's name too. */
	const char *other = write_file("other.yml", "name: other\n");
	char other_copy[512];
	snprintf(other_copy, sizeof other_copy, "%s", other);
	char *argv2[] = { "cairn", "--config-file", other_copy, NULL };
	assert_int_equal(load(&c, argv2, envp), 0);
	assert_string_equal(c.name, "other");
	srv_config_free(&c);

	/* Flags are still parsed with a file: a malformed one is an error. */
	char *argv3[] = { "cairn", "--config-file", other_copy, "--heartbeat-interval", "x", NULL };
	expect_error(argv3, NOENV, SRV_CONFIG_EUSAGE,
		     "invalid value \"x\" for flag --heartbeat-interval: expected an unsigned "
		     "decimal integer");
}

/* ---- the file ---- */

static void test_file_every_key(void **state)
{
	(void)state;
	struct srv_config c;
	const char *path = write_file(
		"all.yml", "# etcd's format: keys named like the flags\n"
			   "name: 'y1'\n"
			   "data-dir: /data/y1\n"
			   "listen-client-urls: https://10.2.0.1:2379,http://127.0.0.1:2379\n"
			   "advertise-client-urls: https://10.2.0.1:2379\n"
			   "listen-peer-urls: https://10.2.0.1:2380\n"
			   "initial-advertise-peer-urls: https://10.2.0.1:2380\n"
			   "initial-cluster: y1=https://10.2.0.1:2380,y2=https://10.2.0.2:2380\n"
			   "initial-cluster-state: new\n"
			   "initial-cluster-token: \"tok-y\"\n"
			   "heartbeat-interval: 20\n"
			   "election-timeout: 100\n"
			   "snapshot-count: 7\n"
			   "quota-backend-bytes: 0\n"
			   "max-request-bytes: 4096\n"
			   "max-txn-ops: 16\n"
			   "log-level: error\n"
			   "gossip-listen: 10.2.0.1:7946\n"
			   "gossip-join: 10.2.0.2:7946,10.2.0.3:7946\n"
			   "gossip-key-file: /g\n"
			   "gossip-label: lab\n"
			   "gossip-tag: dc=eu,rack=3\n"
			   "client-transport-security:\n"
			   "  cert-file: /tls/c.pem\n"
			   "  key-file: /tls/c.key\n"
			   "  trusted-ca-file: /tls/ca.pem\n"
			   "  client-cert-auth: true\n"
			   "peer-transport-security:\n"
			   "  cert-file: /tls/p.pem\n"
			   "  key-file: /tls/p.key\n"
			   "  trusted-ca-file: /tls/pca.pem\n"
			   "  client-cert-auth: yes\n");
	char *argv[] = { "cairn", "--config-file", (char *)path, NULL };
	assert_int_equal(load(&c, argv, NOENV), 0);
	assert_string_equal(c.name, "y1");
	assert_string_equal(c.data_dir, "/data/y1");
	assert_int_equal(c.listen_client_urls.n, 2);
	assert_string_equal(c.advertise_client_urls.v[0].text, "https://10.2.0.1:2379");
	assert_string_equal(c.listen_peer_urls.v[0].text, "https://10.2.0.1:2380");
	assert_string_equal(c.initial_advertise_peer_urls.v[0].text, "https://10.2.0.1:2380");
	assert_int_equal(c.initial_cluster_n, 2);
	assert_int_equal(c.initial_cluster_state, SRV_CLUSTER_NEW);
	assert_string_equal(c.initial_cluster_token, "tok-y");
	assert_int_equal(c.heartbeat_ms, 20);
	assert_int_equal(c.election_ms, 100);
	assert_int_equal(c.snapshot_count, 7);
	assert_int_equal(c.quota_backend_bytes, 2ull << 30);
	assert_int_equal(c.max_request_bytes, 4096);
	assert_int_equal(c.max_txn_ops, 16);
	assert_int_equal(c.log_level, SRV_LOG_ERROR);
	assert_string_equal(c.gossip_listen.text, "10.2.0.1:7946");
	assert_int_equal(c.gossip_join_n, 2);
	assert_string_equal(c.gossip_key_file, "/g");
	assert_string_equal(c.gossip_label, "lab");
	assert_int_equal(c.gossip_tags_n, 2);
	assert_string_equal(c.gossip_tags[1].key, "rack");
	assert_string_equal(c.client_tls.cert_file, "/tls/c.pem");
	assert_string_equal(c.client_tls.key_file, "/tls/c.key");
	assert_string_equal(c.client_tls.trusted_ca_file, "/tls/ca.pem");
	assert_true(c.client_tls.client_cert_auth);
	assert_string_equal(c.peer_tls.cert_file, "/tls/p.pem");
	assert_string_equal(c.peer_tls.key_file, "/tls/p.key");
	assert_string_equal(c.peer_tls.trusted_ca_file, "/tls/pca.pem");
	assert_true(c.peer_tls.client_cert_auth);
	assert_int_equal(srv_config_verify_bootstrap(&c, g_err, sizeof g_err), 0);
	srv_config_free(&c);

	/* An empty file, a file of comments, and null values: the defaults. etcd's file loader
	 * keeps the default advertised client URL when only the listen one is given. */
	const char *files[] = { "", "# nothing\n",
				"name:\ndata-dir: ~\nclient-transport-security:\n",
				"listen-client-urls: http://127.0.0.1:2379\n" };
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		const char *p = write_file("empty.yml", files[i]);
		char *argv2[] = { "cairn", "--config-file", (char *)p, NULL };
		assert_int_equal(load(&c, argv2, NOENV), 0);
		assert_string_equal(c.name, "default");
		assert_string_equal(c.advertise_client_urls.v[0].text, "http://127.0.0.1:2379");
		srv_config_free(&c);
	}
}

/* Writes text to a file, loads it, and expects the message "<path>:<msg>". */
static void expect_file_error(const char *text, int rc, const char *msg)
{
	const char *path = write_file("bad.yml", text);
	char path_copy[512];
	snprintf(path_copy, sizeof path_copy, "%s", path);
	char want[1024];
	snprintf(want, sizeof want, "%s:%s", path_copy, msg);
	char *argv[] = { "cairn", "--config-file", path_copy, NULL };
	expect_error(argv, NOENV, rc, want);
}

static void test_file_errors(void **state)
{
	(void)state;
	const int E = SRV_CONFIG_EINVALID;
	/* Syntax errors, with their line. */
	expect_file_error("name: a\ndata-dir: [unclosed\n", E,
			  "3: invalid YAML: did not find expected ',' or ']' while parsing a flow "
			  "sequence (column 1)");
	expect_file_error("name: a\n  bad: indent\n", E,
			  "2: invalid YAML: mapping values are not allowed in this context "
			  "(column 6)");
	expect_file_error("name: \"unterminated\n", E,
			  "2: invalid YAML: found unexpected end of stream while scanning a quoted "
			  "scalar (column 1)");
	/* Unknown keys, with their line; TLS keys at the top level get a hint. */
	expect_file_error("name: a\nnmae: b\n", E, "2: unknown key \"nmae\"");
	expect_file_error("wal-dir: /w\n", E, "1: unknown key \"wal-dir\"");
	expect_file_error("config-file: /x\n", E, "1: unknown key \"config-file\"");
	expect_file_error("\n\ncert-file: /c\n", E,
			  "3: unknown key \"cert-file\" (TLS settings go under "
			  "client-transport-security as \"cert-file\")");
	expect_file_error("peer-client-cert-auth: true\n", E,
			  "1: unknown key \"peer-client-cert-auth\" (TLS settings go under "
			  "peer-transport-security as \"client-cert-auth\")");
	expect_file_error("client-transport-security:\n  cert-file: /c\n  auto-tls: true\n", E,
			  "3: unknown key \"auto-tls\" in client-transport-security");
	/* Wrong types. */
	expect_file_error("name: [a, b]\n", E, "1: name: expected a string, got a list");
	expect_file_error("name:\n  x: 1\n", E, "2: name: expected a string, got a mapping");
	expect_file_error("heartbeat-interval: fast\n", E,
			  "1: invalid value \"fast\" for heartbeat-interval: expected an unsigned "
			  "decimal integer");
	expect_file_error("heartbeat-interval: '100'\n", E,
			  "1: heartbeat-interval: expected an unsigned integer, got the quoted "
			  "string \"100\"");
	expect_file_error("listen-client-urls:\n  - http://127.0.0.1:2379\n", E,
			  "2: listen-client-urls: expected a string, got a list");
	expect_file_error(
		"client-transport-security: yes\n", E,
		"1: client-transport-security: expected a mapping of cert-file, key-file, "
		"trusted-ca-file and client-cert-auth");
	expect_file_error(
		"peer-transport-security:\n  client-cert-auth: maybe\n", E,
		"2: invalid value \"maybe\" for client-cert-auth: expected true or false");
	expect_file_error("- name\n", E, "1: the top level must be a mapping of keys to values");
	expect_file_error("[a]: b\n", E, "1: keys must be strings, not a list");
	/* Duplicates, and a second document. */
	expect_file_error("name: a\nname: b\n", E, "2: key \"name\" given twice");
	expect_file_error("name: a\n---\nname: b\n", E,
			  "2: only one YAML document is allowed in a config file");
	/* Values refused as they would be on the command line, with the file's line. */
	expect_file_error("name: a\nlisten-peer-urls: http://peer.example:2380\n", E,
			  "2: invalid value \"http://peer.example:2380\" for listen-peer-urls: "
			  "expected IP in URL for binding (http://peer.example:2380)");

	/* A file that cannot be read. */
	char missing[600];
	snprintf(missing, sizeof missing, "%s/missing.yml", g_dir);
	char want[700];
	snprintf(want, sizeof want, "cannot read config file %s: No such file or directory",
		 missing);
	char *argv[] = { "cairn", "--config-file", missing, NULL };
	expect_error(argv, NOENV, SRV_CONFIG_EFILE, want);
}

/* ---- the command line's refusals ---- */

static void test_usage_errors(void **state)
{
	(void)state;
	const int U = SRV_CONFIG_EUSAGE;
	expect_error(ARGV("--nmae", "x"), NOENV, U, "flag provided but not defined: -nmae");
	expect_error(ARGV("--wal-dir=/w"), NOENV, U, "flag provided but not defined: -wal-dir");
	expect_error(ARGV("--name"), NOENV, U, "flag needs an argument: -name");
	expect_error(ARGV("start"), NOENV, U, "'start' is not a valid flag");
	expect_error(ARGV("--name", "a", "extra"), NOENV, U, "'extra' is not a valid flag");
	expect_error(ARGV("--client-cert-auth", "true"), NOENV, U, "'true' is not a valid flag");
	expect_error(ARGV("--", "x"), NOENV, U, "'x' is not a valid flag");
	expect_error(ARGV("-"), NOENV, U, "'-' is not a valid flag");
	expect_error(ARGV("---name=x"), NOENV, U, "bad flag syntax: ---name=x");
	expect_error(ARGV("--=x"), NOENV, U, "bad flag syntax: --=x");
	expect_error(ARGV("--client-cert-auth=maybe"), NOENV, U,
		     "invalid value \"maybe\" for flag --client-cert-auth: expected true or false");
	expect_error(ARGV("--version=maybe"), NOENV, U,
		     "invalid boolean value \"maybe\" for flag --version");
}

struct verr {
	const char *arg1, *arg2, *arg3, *arg4;
	int rc;
	const char *msg;
};

static void test_validation_messages(void **state)
{
	(void)state;
	const int U = SRV_CONFIG_EUSAGE;
	const int I = SRV_CONFIG_EINVALID;
	static const struct verr cases[] = {
		/* etcd's Validate, with etcd's messages */
		{ "--heartbeat-interval=0", NULL, NULL, NULL, I,
		  "--heartbeat-interval must be >0 (set to 0ms)" },
		{ "--election-timeout=0", NULL, NULL, NULL, I,
		  "--election-timeout must be >0 (set to 0ms)" },
		{ "--heartbeat-interval=300", NULL, NULL, NULL, I,
		  "--election-timeout[1000ms] should be at least as 5 times as "
		  "--heartbeat-interval[300ms]" },
		{ "--election-timeout=50001", NULL, NULL, NULL, I,
		  "--election-timeout[50001ms] is too long, and should be set less than 50000ms" },
		{ "--listen-client-urls=http://10.0.0.1:2379", NULL, NULL, NULL, I,
		  "--advertise-client-urls is required when --listen-client-urls is set "
		  "explicitly" },
		/* URLs */
		{ "--listen-client-urls=ftp://10.0.0.1:2379", NULL, NULL, NULL, U,
		  "invalid value \"ftp://10.0.0.1:2379\" for flag --listen-client-urls: URL scheme "
		  "must be http or https: ftp://10.0.0.1:2379" },
		{ "--listen-client-urls=10.0.0.1:2379", NULL, NULL, NULL, U,
		  "invalid value \"10.0.0.1:2379\" for flag --listen-client-urls: URL scheme must "
		  "be http or https: 10.0.0.1:2379" },
		{ "--listen-client-urls=unix://x:1", NULL, NULL, NULL, U,
		  "invalid value \"unix://x:1\" for flag --listen-client-urls: URL scheme must be "
		  "http or https: unix://x:1" },
		{ "--listen-peer-urls=http://10.0.0.1:2380/", NULL, NULL, NULL, U,
		  "invalid value \"http://10.0.0.1:2380/\" for flag --listen-peer-urls: URL must "
		  "not contain a path: http://10.0.0.1:2380/" },
		{ "--listen-peer-urls=http://10.0.0.1", NULL, NULL, NULL, U,
		  "invalid value \"http://10.0.0.1\" for flag --listen-peer-urls: URL address does "
		  "not have the form \"host:port\": http://10.0.0.1" },
		{ "--listen-peer-urls=http://::1:2380", NULL, NULL, NULL, U,
		  "invalid value \"http://::1:2380\" for flag --listen-peer-urls: URL address does "
		  "not have the form \"host:port\": http://::1:2380" },
		{ "--listen-peer-urls=http://10.0.0.1:0", NULL, NULL, NULL, U,
		  "invalid value \"http://10.0.0.1:0\" for flag --listen-peer-urls: URL port must be "
		  "a number from 1 to 65535: http://10.0.0.1:0" },
		{ "--listen-peer-urls=http://10.0.0.1:65536", NULL, NULL, NULL, U,
		  "invalid value \"http://10.0.0.1:65536\" for flag --listen-peer-urls: URL port "
		  "must be a number from 1 to 65535: http://10.0.0.1:65536" },
		{ "--listen-peer-urls=http://host.example:2380", NULL, NULL, NULL, U,
		  "invalid value \"http://host.example:2380\" for flag --listen-peer-urls: expected "
		  "IP in URL for binding (http://host.example:2380)" },
		{ "--listen-peer-urls=http://u@10.0.0.1:2380", NULL, NULL, NULL, U,
		  "invalid value \"http://u@10.0.0.1:2380\" for flag --listen-peer-urls: URL must "
		  "not contain user information: http://u@10.0.0.1:2380" },
		{ "--listen-peer-urls=", NULL, NULL, NULL, U,
		  "invalid value \"\" for flag --listen-peer-urls: URL scheme must be http or "
		  "https: " },
		{ "--advertise-client-urls=http://:2379", NULL, NULL, NULL, U,
		  "invalid value \"http://:2379\" for flag --advertise-client-urls: unexpected "
		  "empty host (http://:2379)" },
		{ "--advertise-client-urls=http://a_b:2379", NULL, NULL, NULL, U,
		  "invalid value \"http://a_b:2379\" for flag --advertise-client-urls: URL host is "
		  "not an IP address or a DNS name: http://a_b:2379" },
		{ "--initial-advertise-peer-urls=http://[zz]:2380", NULL, NULL, NULL, U,
		  "invalid value \"http://[zz]:2380\" for flag --initial-advertise-peer-urls: URL "
		  "host is not an IP address or a DNS name: http://[zz]:2380" },
		{ "--advertise-client-urls",
		  "http://a:1,http://b:1,http://c:1,http://d:1,http://e:1,http://f:1,http://g:1,"
		  "http://h:1,http://i:1,http://j:1,http://k:1,http://l:1,http://m:1,http://n:1,"
		  "http://o:1,http://p:1,http://q:1",
		  NULL, NULL, U,
		  "invalid value \"http://a:1,http://b:1,http://c:1,http://d:1,http://e:1,"
		  "http://f:1,http://g:1,http://h:1,http://i:1,http://j:1,http://k:1,http://l:1,"
		  "http://m:1,http://n:1,http://o:1,http://p:1,http://q:1\" for flag "
		  "--advertise-client-urls: more than 16 URLs" },
		/* --initial-cluster's form */
		{ "--initial-cluster=n1", NULL, NULL, NULL, U,
		  "invalid value \"n1\" for flag --initial-cluster: \"n1\" is not of the form "
		  "name=url" },
		{ "--initial-cluster==http://10.0.0.1:2380", NULL, NULL, NULL, U,
		  "invalid value \"=http://10.0.0.1:2380\" for flag --initial-cluster: "
		  "\"=http://10.0.0.1:2380\" is not of the form name=url" },
		{ "--initial-cluster=a=http://10.0.0.1:2380,b=10.0.0.2:2380", NULL, NULL, NULL, U,
		  "invalid value \"a=http://10.0.0.1:2380,b=10.0.0.2:2380\" for flag "
		  "--initial-cluster: URL scheme must be http or https: 10.0.0.2:2380" },
		/* https needs certificates */
		{ "--listen-client-urls=https://10.0.0.1:2379",
		  "--advertise-client-urls=https://10.0.0.1:2379", NULL, NULL, I,
		  "TLS key/cert (--cert-file, --key-file) must be provided for client url "
		  "https://10.0.0.1:2379 with HTTPS scheme" },
		{ "--listen-peer-urls=https://10.0.0.1:2380", NULL, NULL, NULL, I,
		  "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url "
		  "https://10.0.0.1:2380 with HTTPS scheme" },
		{ "--cert-file=/c", NULL, NULL, NULL, I,
		  "--key-file is required with --cert-file" },
		{ "--peer-key-file=/k", NULL, NULL, NULL, I,
		  "--peer-cert-file is required with --peer-key-file" },
		{ "--listen-peer-urls=https://10.0.0.1:2380", "--peer-cert-file=/c",
		  "--peer-key-file=/k", "--peer-client-cert-auth", I,
		  "--peer-client-cert-auth needs --peer-trusted-ca-file for peer url "
		  "https://10.0.0.1:2380" },
		/* numbers */
		{ "--heartbeat-interval=-1", NULL, NULL, NULL, U,
		  "invalid value \"-1\" for flag --heartbeat-interval: expected an unsigned "
		  "decimal integer" },
		{ "--heartbeat-interval=4294967296", NULL, NULL, NULL, U,
		  "invalid value \"4294967296\" for flag --heartbeat-interval: must be from 0 to "
		  "4294967295" },
		{ "--snapshot-count=18446744073709551616", NULL, NULL, NULL, U,
		  "invalid value \"18446744073709551616\" for flag --snapshot-count: expected an "
		  "unsigned decimal integer" },
		{ "--quota-backend-bytes=8589934593", NULL, NULL, NULL, U,
		  "invalid value \"8589934593\" for flag --quota-backend-bytes: must be from 0 to "
		  "8589934592" },
		{ "--max-request-bytes=0", NULL, NULL, NULL, U,
		  "invalid value \"0\" for flag --max-request-bytes: must be from 1 to 67108864" },
		{ "--max-txn-ops=0", NULL, NULL, NULL, U,
		  "invalid value \"0\" for flag --max-txn-ops: must be from 1 to 65536" },
		{ "--max-txn-ops= 5", NULL, NULL, NULL, U,
		  "invalid value \" 5\" for flag --max-txn-ops: expected an unsigned decimal "
		  "integer" },
		/* words */
		{ "--initial-cluster-state=old", NULL, NULL, NULL, U,
		  "invalid value \"old\" for flag --initial-cluster-state: must be \"new\" or "
		  "\"existing\"" },
		{ "--log-level=loud", NULL, NULL, NULL, U,
		  "invalid value \"loud\" for flag --log-level: must be one of debug, info, warn, "
		  "error, panic, fatal" },
		{ "--name=", NULL, NULL, NULL, U,
		  "invalid value \"\" for flag --name: must not be empty" },
		{ "--name=a=b", NULL, NULL, NULL, U,
		  "invalid value \"a=b\" for flag --name: a member name cannot hold ',' or '=' (it "
		  "must fit in --initial-cluster)" },
		{ "--initial-cluster-token=", NULL, NULL, NULL, U,
		  "invalid value \"\" for flag --initial-cluster-token: must not be empty" },
		/* gossip */
		{ "--gossip-listen=node.example:7946", NULL, NULL, NULL, U,
		  "invalid value \"node.example:7946\" for flag --gossip-listen: expected an IP "
		  "address or localhost to listen on: node.example:7946" },
		{ "--gossip-join=10.0.0.1", NULL, NULL, NULL, U,
		  "invalid value \"10.0.0.1\" for flag --gossip-join: address does not have the "
		  "form \"host:port\": 10.0.0.1" },
		{ "--gossip-tag=novalue", NULL, NULL, NULL, U,
		  "invalid value \"novalue\" for flag --gossip-tag: \"novalue\" is not of the form "
		  "key=value" },
		{ "--gossip-tag=a b=1", NULL, NULL, NULL, U,
		  "invalid value \"a b=1\" for flag --gossip-tag: a tag's key holds letters, digits "
		  "and _ - . / only: a b" },
		{ "--gossip-tag=a=1", "--gossip-tag=a=2", NULL, NULL, U,
		  "invalid value \"a=2\" for flag --gossip-tag: tag \"a\" given twice" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct verr *v = &cases[i];
		char *argv[6] = { "cairn",         (char *)v->arg1, (char *)v->arg2,
				  (char *)v->arg3, (char *)v->arg4, NULL };
		expect_error(argv, NOENV, v->rc, v->msg);
	}

	/* The same refusals name the variable when the value came from the environment. */
	expect_error(NOARGS, ENV("CAIRN_HEARTBEAT_INTERVAL=fast"), I,
		     "invalid value \"fast\" for CAIRN_HEARTBEAT_INTERVAL: expected an unsigned "
		     "decimal integer");
	expect_error(NOARGS, ENV("CAIRN_LISTEN_CLIENT_URLS=http://10.0.0.1:2379"), I,
		     "--advertise-client-urls is required when --listen-client-urls is set "
		     "explicitly");
	expect_error(NOARGS, ENV("CAIRN_CLIENT_CERT_AUTH=sure"), I,
		     "invalid value \"sure\" for CAIRN_CLIENT_CERT_AUTH: expected true or false");

	/* Boundaries that pass: election exactly 5 x heartbeat, and exactly 50000. */
	struct srv_config c;
	assert_int_equal(
		load(&c, ARGV("--heartbeat-interval=200", "--election-timeout=1000"), NOENV), 0);
	srv_config_free(&c);
	assert_int_equal(
		load(&c, ARGV("--heartbeat-interval=10000", "--election-timeout=50000"), NOENV), 0);
	srv_config_free(&c);
}

/* ---- the bootstrap checks ---- */

static void test_verify_bootstrap(void **state)
{
	(void)state;
	struct srv_config c;
	assert_int_equal(load(&c,
			      ARGV("--name", "n9", "--initial-cluster",
				   "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380"),
			      NOENV),
			 0);
	assert_int_equal(srv_config_verify_bootstrap(&c, g_err, sizeof g_err), SRV_CONFIG_EINVALID);
	assert_string_equal(g_err,
			    "couldn't find local name \"n9\" in the initial cluster configuration");
	srv_config_free(&c);

	assert_int_equal(load(&c,
			      ARGV("--name", "n1", "--initial-cluster",
				   "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380"),
			      NOENV),
			 0);
	assert_int_equal(srv_config_verify_bootstrap(&c, g_err, sizeof g_err), SRV_CONFIG_EINVALID);
	assert_string_equal(g_err, "--initial-cluster has n1=http://10.0.0.1:2380 but missing from "
				   "--initial-advertise-peer-urls=http://127.0.0.1:2380");
	srv_config_free(&c);

	assert_int_equal(load(&c,
			      ARGV("--name", "n1", "--initial-cluster", "n1=http://10.0.0.1:2380",
				   "--initial-advertise-peer-urls",
				   "http://10.0.0.1:2380,http://10.0.0.1:2390"),
			      NOENV),
			 0);
	assert_int_equal(srv_config_verify_bootstrap(&c, g_err, sizeof g_err), SRV_CONFIG_EINVALID);
	assert_string_equal(g_err, "--initial-advertise-peer-urls has http://10.0.0.1:2390 but "
				   "missing from --initial-cluster=n1=http://10.0.0.1:2380,"
				   "n1=http://10.0.0.1:2390");
	srv_config_free(&c);

	assert_int_equal(load(&c,
			      ARGV("--name", "n1", "--initial-cluster",
				   "n1=http://127.0.0.1:2380,n2=http://127.0.0.1:2380"),
			      NOENV),
			 0);
	assert_int_equal(srv_config_verify_bootstrap(&c, g_err, sizeof g_err), SRV_CONFIG_EINVALID);
	assert_string_equal(g_err, "initial cluster n1=http://127.0.0.1:2380,"
				   "n2=http://127.0.0.1:2380 has duplicate url");
	srv_config_free(&c);

	/* Joining an existing cluster: the advertised URLs are not compared, as in etcd. */
	assert_int_equal(load(&c,
			      ARGV("--name", "n1", "--initial-cluster-state", "existing",
				   "--initial-cluster", "n1=http://10.0.0.1:2380"),
			      NOENV),
			 0);
	assert_int_equal(srv_config_verify_bootstrap(&c, g_err, sizeof g_err), 0);
	srv_config_free(&c);
}

/* ---- help and version ---- */

static void test_help_and_version(void **state)
{
	(void)state;
	struct srv_config c;
	const char *helps[] = { "--help", "-help", "-h", "--h" };
	for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
		/* Nothing after the help flag is looked at, the environment included. */
		char *argv[] = { "cairn", (char *)helps[i], "--bogus", NULL };
		assert_int_equal(load(&c, argv, ENV("CAIRN_HEARTBEAT_INTERVAL=x")), 0);
		assert_int_equal(c.action, SRV_CONFIG_HELP);
		srv_config_free(&c);
	}
	/* A mistake before --help is still reported, as Go's flag parser does. */
	expect_error(ARGV("--bogus", "--help"), NOENV, SRV_CONFIG_EUSAGE,
		     "flag provided but not defined: -bogus");

	const char *help = srv_config_help();
	static const char *const flags[] = {
		"--name 'default'",
		"--data-dir '${name}.cairn'",
		"--listen-client-urls 'http://127.0.0.1:2379'",
		"--advertise-client-urls 'http://127.0.0.1:2379'",
		"--listen-peer-urls 'http://127.0.0.1:2380'",
		"--initial-advertise-peer-urls 'http://127.0.0.1:2380'",
		"--initial-cluster '",
		"--initial-cluster-state 'new'",
		"--initial-cluster-token 'cairn-cluster'",
		"--heartbeat-interval '100'",
		"--election-timeout '1000'",
		"--snapshot-count '100000'",
		"--quota-backend-bytes '0'",
		"--max-request-bytes '1572864'",
		"--max-txn-ops '128'",
		"--cert-file ''",
		"--key-file ''",
		"--trusted-ca-file ''",
		"--client-cert-auth 'false'",
		"--peer-cert-file ''",
		"--peer-key-file ''",
		"--peer-trusted-ca-file ''",
		"--peer-client-cert-auth 'false'",
		"--log-level 'info'",
		"--gossip-listen '127.0.0.1:7946'",
		"--gossip-join ''",
		"--gossip-key-file ''",
		"--gossip-label ''",
		"--gossip-tag ''",
		"--config-file ''",
		"--version",
		"--help",
		"\nMember:\n",
		"\nClustering:\n",
		"\nSecurity:\n",
		"\nLogging:\n",
		"\nGossip:\n",
		"CAIRN_DATA_DIR",
	};
	for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
		if (strstr(help, flags[i]) == NULL) {
			fail_msg("the help text lacks \"%s\"", flags[i]);
		}
	}
	assert_int_equal(help[strlen(help) - 1], '\n');

	/* --version: answered without the environment or the file, after all flags parse. */
	assert_int_equal(load(&c, ARGV("--version", "--config-file", "/nonexistent/x.yml"),
			      ENV("CAIRN_NAME=")),
			 0);
	assert_int_equal(c.action, SRV_CONFIG_VERSION);
	srv_config_free(&c);
	assert_int_equal(load(&c, ARGV("-version=true"), NOENV), 0);
	assert_int_equal(c.action, SRV_CONFIG_VERSION);
	srv_config_free(&c);
	assert_int_equal(load(&c, ARGV("--version=false"), NOENV), 0);
	assert_int_equal(c.action, SRV_CONFIG_RUN);
	srv_config_free(&c);
	expect_error(ARGV("--version", "--bogus"), NOENV, SRV_CONFIG_EUSAGE,
		     "flag provided but not defined: -bogus");
	assert_string_equal(srv_config_version(), "cairn Version: 0.1.0\nAPI version: 3.4\n");
}

/* ---- gossip timings, the derived gossip address, `cairn agent` ---- */

static void test_gossip_timings(void **state)
{
	(void)state;
	struct srv_config c;
	assert_int_equal(load(&c, NOARGS, NOENV), 0);
	assert_int_equal(c.gossip_timing.probe_interval_ms, 1000);
	assert_int_equal(c.gossip_timing.probe_timeout_ms, 500);
	assert_int_equal(c.gossip_timing.gossip_interval_ms, 200);
	assert_int_equal(c.gossip_timing.suspicion_mult, 4);
	assert_int_equal(c.gossip_timing.pushpull_interval_ms, 30000);
	assert_int_equal(c.gossip_timing.reap_dead_ms, 86400000ull);
	assert_int_equal(c.gossip_timing.reap_left_ms, 3600000ull);
	srv_config_free(&c);

	assert_int_equal(load(&c,
			      ARGV("--gossip-probe-interval", "2000", "--gossip-probe-timeout=300",
				   "--gossip-interval", "100", "--gossip-suspicion-mult=6",
				   "--gossip-pushpull-interval=0", "--gossip-reap-dead", "60000",
				   "--gossip-reap-left=5000"),
			      ENV("CAIRN_GOSSIP_INTERVAL=50")),
			 0);
	assert_int_equal(c.gossip_timing.probe_interval_ms, 2000);
	assert_int_equal(c.gossip_timing.probe_timeout_ms, 300);
	assert_int_equal(c.gossip_timing.gossip_interval_ms, 100); /* the flag wins */
	assert_int_equal(c.gossip_timing.suspicion_mult, 6);
	assert_int_equal(c.gossip_timing.pushpull_interval_ms, 0);
	assert_int_equal(c.gossip_timing.reap_dead_ms, 60000);
	assert_int_equal(c.gossip_timing.reap_left_ms, 5000);
	assert_true(has_warning(&c, "recognized environment variable CAIRN_GOSSIP_INTERVAL, but "
				    "unused: shadowed by corresponding flag"));
	srv_config_free(&c);

	const char *path = write_file("timings.yml", "gossip-probe-interval: 700\n"
						     "gossip-probe-timeout: 200\n"
						     "gossip-reap-left: 10000\n");
	char *argv[] = { "cairn", "--config-file", (char *)path, NULL };
	assert_int_equal(load(&c, argv, NOENV), 0);
	assert_int_equal(c.gossip_timing.probe_interval_ms, 700);
	assert_int_equal(c.gossip_timing.probe_timeout_ms, 200);
	assert_int_equal(c.gossip_timing.reap_left_ms, 10000);
	assert_int_equal(c.gossip_timing.gossip_interval_ms, 200);
	srv_config_free(&c);

	const int U = SRV_CONFIG_EUSAGE;
	const int I = SRV_CONFIG_EINVALID;
	expect_error(ARGV("--gossip-probe-interval=10"), NOENV, U,
		     "invalid value \"10\" for flag --gossip-probe-interval: must be from 50 to "
		     "60000");
	expect_error(
		ARGV("--gossip-probe-timeout=5"), NOENV, U,
		"invalid value \"5\" for flag --gossip-probe-timeout: must be from 10 to 60000");
	expect_error(
		ARGV("--gossip-interval=60001"), NOENV, U,
		"invalid value \"60001\" for flag --gossip-interval: must be from 10 to 60000");
	expect_error(ARGV("--gossip-suspicion-mult=0"), NOENV, U,
		     "invalid value \"0\" for flag --gossip-suspicion-mult: must be from 1 to 100");
	expect_error(ARGV("--gossip-reap-dead=999"), NOENV, U,
		     "invalid value \"999\" for flag --gossip-reap-dead: must be from 1000 to "
		     "2592000000");
	expect_error(ARGV("--gossip-reap-left=1s"), NOENV, U,
		     "invalid value \"1s\" for flag --gossip-reap-left: expected an unsigned "
		     "decimal integer");
	expect_error(ARGV("--gossip-probe-timeout=1000"), NOENV, I,
		     "--gossip-probe-timeout[1000ms] must be less than "
		     "--gossip-probe-interval[1000ms]");
	expect_error(ARGV("--gossip-pushpull-interval=500"), NOENV, I,
		     "--gossip-pushpull-interval[500ms] must be 0 (never) or at least 1000ms");
	expect_error(
		NOARGS, ENV("CAIRN_GOSSIP_SUSPICION_MULT=101"), I,
		"invalid value \"101\" for CAIRN_GOSSIP_SUSPICION_MULT: must be from 1 to 100");
}

static void test_gossip_listen_derived(void **state)
{
	(void)state;
	struct srv_config c;
	/* Port 7946 on the client host, unless --gossip-listen is given. */
	assert_int_equal(load(&c,
			      ARGV("--listen-client-urls", "http://10.0.0.5:2379",
				   "--advertise-client-urls", "http://10.0.0.5:2379"),
			      NOENV),
			 0);
	assert_string_equal(c.gossip_listen.text, "10.0.0.5:7946");
	assert_string_equal(c.gossip_listen.host, "10.0.0.5");
	assert_int_equal(c.gossip_listen.port, 7946);
	srv_config_free(&c);
	assert_int_equal(load(&c,
			      ARGV("--listen-client-urls", "http://[::1]:2379",
				   "--advertise-client-urls", "http://[::1]:2379"),
			      NOENV),
			 0);
	assert_string_equal(c.gossip_listen.text, "[::1]:7946");
	assert_string_equal(c.gossip_listen.host, "::1");
	srv_config_free(&c);
	assert_int_equal(
		load(&c,
		     ARGV("--listen-client-urls", "http://10.0.0.5:2379", "--advertise-client-urls",
			  "http://10.0.0.5:2379", "--gossip-listen", "127.0.0.1:8000"),
		     NOENV),
		0);
	assert_string_equal(c.gossip_listen.text, "127.0.0.1:8000");
	srv_config_free(&c);
	assert_int_equal(load(&c, NOARGS,
			      ENV("CAIRN_LISTEN_CLIENT_URLS=http://10.0.0.6:2379",
				  "CAIRN_ADVERTISE_CLIENT_URLS=http://10.0.0.6:2379",
				  "CAIRN_GOSSIP_LISTEN=10.0.0.6:9000")),
			 0);
	assert_string_equal(c.gossip_listen.text, "10.0.0.6:9000");
	srv_config_free(&c);
}

static int load_agent(struct srv_config *c, char *const argv[], char *const envp[])
{
	int argc = 0;
	while (argv[argc] != NULL) {
		argc++;
	}
	return srv_config_load_agent(c, argc, argv, envp, g_err, sizeof g_err);
}

static void test_agent(void **state)
{
	(void)state;
	struct srv_config c;
	assert_int_equal(load_agent(&c, ARGV("--name", "node-1"),
				    ENV("CAIRN_DATA_DIR=/srv", "CAIRN_GOSSIP_JOIN=10.0.0.1:7946",
					"CAIRN_GOSSIP_TAG=role=worker")),
			 0);
	assert_int_equal(c.action, SRV_CONFIG_RUN);
	assert_string_equal(c.name, "node-1");
	assert_string_equal(c.gossip_listen.text, "0.0.0.0:7946");
	assert_int_equal(c.gossip_join_n, 1);
	assert_string_equal(c.gossip_join[0].text, "10.0.0.1:7946");
	assert_int_equal(c.gossip_tags_n, 1);
	assert_string_equal(c.gossip_tags[0].value, "worker");
	assert_null(c.data_dir); /* a server's variable: not the agent's business */
	assert_int_equal(c.warnings_n, 0);
	assert_int_equal(c.gossip_timing.probe_interval_ms, 1000);
	srv_config_free(&c);

	assert_int_equal(load_agent(&c,
				    ARGV("--name=a", "--gossip-listen", "127.0.0.1:7000",
					 "--gossip-tag", "rack=r1", "--gossip-tag", "zone=z",
					 "--gossip-probe-interval", "500", "--gossip-probe-timeout",
					 "100", "--log-level", "debug", "--gossip-label", "blue"),
				    NOENV),
			 0);
	assert_string_equal(c.gossip_listen.text, "127.0.0.1:7000");
	assert_int_equal(c.gossip_tags_n, 2);
	assert_int_equal(c.gossip_timing.probe_interval_ms, 500);
	assert_int_equal(c.log_level, SRV_LOG_DEBUG);
	assert_string_equal(c.gossip_label, "blue");
	srv_config_free(&c);

	assert_int_equal(load_agent(&c, ARGV("--help"), NOENV), 0);
	assert_int_equal(c.action, SRV_CONFIG_HELP);
	srv_config_free(&c);

	struct {
		char *const *argv;
		char *const *envp;
		int rc;
		const char *msg;
	} bad[] = {
		{ NOARGS, NOENV, SRV_CONFIG_EUSAGE, "--name is required" },
		{ ARGV("--name", "a", "--data-dir", "/x"), NOENV, SRV_CONFIG_EUSAGE,
		  "flag provided but not defined: -data-dir" },
		{ ARGV("--name", "a", "--config-file", "/x.yml"), NOENV, SRV_CONFIG_EUSAGE,
		  "flag provided but not defined: -config-file" },
		{ ARGV("--name", "a", "--gossip-probe-timeout", "2000"), NOENV, SRV_CONFIG_EINVALID,
		  "--gossip-probe-timeout[2000ms] must be less than --gossip-probe-interval[1000ms]" },
		{ ARGV("--gossip-join", "x"), ENV("CAIRN_NAME=a"), SRV_CONFIG_EUSAGE,
		  "invalid value \"x\" for flag --gossip-join: address does not have the form "
		  "\"host:port\": x" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int got = load_agent(&c, bad[i].argv, bad[i].envp);
		if (got != bad[i].rc || strcmp(g_err, bad[i].msg) != 0) {
			fail_msg("case %zu: got %d \"%s\"\nwant %d \"%s\"", i, got, g_err,
				 bad[i].rc, bad[i].msg);
		}
		assert_null(c.name);
		srv_config_free(&c);
	}

	const char *help = srv_config_agent_help();
	static const char *const flags[] = {
		"cairn agent --name NAME",
		"cairn gossip-keygen",
		"--name ''",
		"--log-level 'info'",
		"--gossip-listen '0.0.0.0:7946'",
		"--gossip-join ''",
		"--gossip-key-file ''",
		"--gossip-label ''",
		"--gossip-tag ''",
		"--gossip-probe-interval '1000'",
		"--gossip-probe-timeout '500'",
		"--gossip-interval '200'",
		"--gossip-suspicion-mult '4'",
		"--gossip-pushpull-interval '30000'",
		"--gossip-reap-dead '86400000'",
		"--gossip-reap-left '3600000'",
		"SIGHUP",
	};
	for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
		if (strstr(help, flags[i]) == NULL) {
			fail_msg("the agent's help text lacks \"%s\"", flags[i]);
		}
	}
	assert_null(strstr(help, "--data-dir"));
	/* the server's help shows the timings too */
	assert_non_null(strstr(srv_config_help(), "--gossip-probe-interval '1000'"));
	assert_non_null(strstr(srv_config_help(), "--gossip-reap-left '3600000'"));
}

static void test_strerror(void **state)
{
	(void)state;
	assert_string_equal(srv_config_strerror(0), "success");
	assert_string_equal(srv_config_strerror(SRV_CONFIG_ENOMEM), "out of memory");
	assert_string_equal(srv_config_strerror(SRV_CONFIG_EUSAGE), "invalid command line");
	assert_string_equal(srv_config_strerror(SRV_CONFIG_EINVALID), "invalid configuration");
	assert_string_equal(srv_config_strerror(SRV_CONFIG_EFILE),
			    "cannot read the configuration file");
	assert_string_equal(srv_config_strerror(-99), "unknown error");
	/* A short buffer truncates the message but stays NUL-terminated. */
	struct srv_config c;
	char small[8];
	char *argv[] = { "cairn", "--nmae", NULL };
	assert_int_equal(srv_config_load(&c, 2, argv, NULL, small, sizeof small),
			 SRV_CONFIG_EUSAGE);
	assert_string_equal(small, "flag pr");
	srv_config_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_flag),
		cmocka_unit_test(test_flag_forms),
		cmocka_unit_test(test_derived),
		cmocka_unit_test(test_env),
		cmocka_unit_test(test_flag_over_env),
		cmocka_unit_test(test_file_replaces_flags_and_env),
		cmocka_unit_test(test_file_every_key),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_usage_errors),
		cmocka_unit_test(test_validation_messages),
		cmocka_unit_test(test_verify_bootstrap),
		cmocka_unit_test(test_help_and_version),
		cmocka_unit_test(test_gossip_timings),
		cmocka_unit_test(test_gossip_listen_derived),
		cmocka_unit_test(test_agent),
		cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests_name("config", tests, group_setup, group_teardown);
}
