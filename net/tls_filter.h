/* tls_filter.h: net/tls.h's endpoint as a stream filter (net/stream.h), so a
 * listener or a connection speaks TLS by naming net_tls_filter_factory in
 * its net_stream_opts. Each filter op is one call of the TLS endpoint. */
#ifndef CAIRN_NET_TLS_FILTER_H
#define CAIRN_NET_TLS_FILTER_H

#include "stream.h"
#include "tls.h"

/* The factory's context: the contexts accepted (server) and dialed (client)
 * connections use; either may be NULL if that side never happens. Owned by
 * the caller, who keeps it (and the contexts) alive while any stream that
 * uses it exists. */
struct net_tls_filter_ctx {
	struct net_tls_ctx *server;
	struct net_tls_ctx *client;
};

/* net_filter_factory over a struct net_tls_filter_ctx: a new TLS connection
 * per stream (a client one verifies `host`); NET_EINVAL if the side asked
 * for has no context. */
NET_API int net_tls_filter_factory(void *ctx, bool server, const char *host,
				   struct net_filter *out);

#endif /* CAIRN_NET_TLS_FILTER_H */
