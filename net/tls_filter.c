/* tls_filter.c: the TLS endpoint as a stream filter (tls_filter.h). */
#include "tls_filter.h"

#include "net_err.h"

static int f_feed(void *impl, const uint8_t *buf, size_t len, size_t *used)
{
	return net_tls_feed(impl, buf, len, used);
}

static int f_feed_eof(void *impl)
{
	return net_tls_feed_eof(impl);
}

static int f_read(void *impl, uint8_t *buf, size_t cap, size_t *n)
{
	return net_tls_read(impl, buf, cap, n);
}

static int f_write(void *impl, const uint8_t *buf, size_t len)
{
	return net_tls_write(impl, buf, len);
}

static int f_take(void *impl, uint8_t *buf, size_t cap, size_t *n)
{
	return net_tls_out_take(impl, buf, cap, n);
}

static int f_done(void *impl)
{
	int err = net_tls_failed(impl);
	if (err != 0)
		return err;
	return net_tls_is_open(impl) ? 1 : 0;
}

static int f_shutdown(void *impl)
{
	return net_tls_shutdown(impl);
}

static void f_destroy(void *impl)
{
	net_tls_conn_free(impl);
}

static const struct net_filter_ops tls_filter_ops = {
	.feed = f_feed,
	.feed_eof = f_feed_eof,
	.read = f_read,
	.write = f_write,
	.take = f_take,
	.handshake_done = f_done,
	.shutdown = f_shutdown,
	.destroy = f_destroy,
};

int net_tls_filter_factory(void *ctx, bool server, const char *host, struct net_filter *out)
{
	struct net_tls_filter_ctx *p = ctx;
	struct net_tls_ctx *tc = server ? p->server : p->client;
	struct net_tls_conn *c = NULL;
	if (tc == NULL)
		return NET_EINVAL;
	int rv = net_tls_conn_new(tc, server ? NULL : host, &c);
	if (rv != 0)
		return rv;
	out->ops = &tls_filter_ops;
	out->impl = c;
	return 0;
}
