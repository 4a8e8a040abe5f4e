/* fuzz_grpc_server.c: arbitrary bytes into one gRPC server session (net/grpc.h), as a client on
 * the network would send them. The first input byte picks a mode: a valid client preface and an
 * open request to the echo method may come first (so the fuzzer starts past the handshake), the
 * rest is fed in pieces of a chosen size, output is taken after each piece, held calls are
 * answered late, and a drain with its deadline may run midway. Small limits make every bound
 * reachable. Nothing may crash, leak or grow without bound (ASan). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "grpc.h"

#define HELD_MAX 8

static struct net_grpc_server *srv;
static uint8_t request_prefix[512];
static size_t request_prefix_len;
static struct net_grpc_call *held[HELD_MAX];
static struct net_grpc_call *paused[HELD_MAX];
static uint8_t g_mode;

static void on_cancel(struct net_grpc_call *call, void *user)
{
	(void)user;
	for (int i = 0; i < HELD_MAX; i++) {
		if (held[i] == call) {
			held[i] = NULL;
		}
		if (paused[i] == call) {
			paused[i] = NULL;
		}
	}
}

static void echo_msg(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	(void)user;
	(void)net_grpc_call_send(call, data, len); /* NET_EAGAIN at the bound is fine */
	if ((g_mode & 0x40) != 0) {
		for (int i = 0; i < HELD_MAX; i++) {
			if (paused[i] == NULL || paused[i] == call) {
				paused[i] = call;
				net_grpc_call_pause(call, true);
				return;
			}
		}
	}
}

static void echo_half(struct net_grpc_call *call, void *user)
{
	(void)user;
	(void)net_grpc_call_finish(call, NET_GRPC_OK, "d\xc3\xa9j\xc3\xa0 100%");
}

static void h_echo(struct net_grpc_call *call, void *data)
{
	(void)data;
	struct net_grpc_call_callbacks cb = { .on_message = echo_msg,
					      .on_half_close = echo_half,
					      .on_cancel = on_cancel };
	net_grpc_call_set_callbacks(call, &cb, NULL);
	(void)net_grpc_call_metadata(call, "authorization");
	(void)net_grpc_call_timeout_ms(call);
}

static void h_hold(struct net_grpc_call *call, void *data)
{
	(void)data;
	for (int i = 0; i < HELD_MAX; i++) {
		if (held[i] == NULL) {
			held[i] = call;
			struct net_grpc_call_callbacks cb = { .on_cancel = on_cancel };
			net_grpc_call_set_callbacks(call, &cb, NULL);
			return;
		}
	}
	(void)net_grpc_call_finish(call, NET_GRPC_RESOURCE_EXHAUSTED, "too many held");
}

static size_t frame(uint8_t *out, uint8_t type, uint8_t flags, int32_t id, const uint8_t *pl,
		    size_t len)
{
	out[0] = (uint8_t)(len >> 16);
	out[1] = (uint8_t)(len >> 8);
	out[2] = (uint8_t)len;
	out[3] = type;
	out[4] = flags;
	out[5] = (uint8_t)((uint32_t)id >> 24);
	out[6] = (uint8_t)(id >> 16);
	out[7] = (uint8_t)(id >> 8);
	out[8] = (uint8_t)id;
	if (len > 0) {
		memcpy(out + 9, pl, len);
	}
	return 9 + len;
}

static void init(void)
{
	struct net_grpc_limits lim = {
		.max_concurrent_streams = 8,
		.max_header_list_size = 4096,
		.max_recv_message = 65536,
		.max_send_message = 65536,
		.max_call_queue = 16384,
		.max_session_queue = 65536,
		.max_session_recv = 131072,
		.drain_timeout_ms = 100,
	};
	if (net_grpc_server_new(&lim, &srv) != 0 ||
	    net_grpc_server_register(srv, "/f.S/Echo", h_echo, NULL) != 0 ||
	    net_grpc_server_register(srv, "/f.S/Hold", h_hold, NULL) != 0) {
		abort();
	}
	/* Preface, empty SETTINGS, HEADERS opening stream 1 on the echo method. */
	nghttp2_nv nva[] = {
		{ (uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0 },
		{ (uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0 },
		{ (uint8_t *)":path", (uint8_t *)"/f.S/Echo", 5, 9, 0 },
		{ (uint8_t *)":authority", (uint8_t *)"unix:///tmp/etcd.sock", 10, 21, 0 },
		{ (uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0 },
		{ (uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0 },
	};
	nghttp2_hd_deflater *def;
	uint8_t block[256];
	if (nghttp2_hd_deflate_new(&def, 4096) != 0) {
		abort();
	}
	ssize_t bl =
		nghttp2_hd_deflate_hd(def, block, sizeof block, nva, sizeof nva / sizeof nva[0]);
	nghttp2_hd_deflate_del(def);
	if (bl <= 0) {
		abort();
	}
	size_t off = NGHTTP2_CLIENT_MAGIC_LEN;
	memcpy(request_prefix, NGHTTP2_CLIENT_MAGIC, off);
	off += frame(request_prefix + off, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
	off += frame(request_prefix + off, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, block,
		     (size_t)bl);
	request_prefix_len = off;
}

static void drain_output(struct net_grpc_session *s)
{
	static uint8_t buf[16384];
	size_t n;
	/* Bounded: a session whose peer never reads still yields a finite amount per call. */
	for (int i = 0; i < 4096; i++) {
		if (net_grpc_session_take(s, buf, sizeof buf, &n) != 0 || n == 0) {
			return;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (srv == NULL) {
		init();
	}
	if (size == 0) {
		return 0;
	}
	uint8_t mode = data[0];
	g_mode = mode;
	data++;
	size--;
	struct net_grpc_session *s;
	if (net_grpc_session_new(srv, NULL, NULL, &s) != 0) {
		abort();
	}
	if ((mode & 3) == 1) {
		(void)net_grpc_session_feed(s, request_prefix, NGHTTP2_CLIENT_MAGIC_LEN + 9);
	} else if ((mode & 3) == 2) {
		(void)net_grpc_session_feed(s, request_prefix, request_prefix_len);
	}
	static const size_t pieces[] = { 1, 7, 64, 1 << 20 };
	size_t piece = pieces[(mode >> 2) & 3];
	uint64_t now = 0;
	size_t fed = 0;
	while (fed < size && !net_grpc_session_done(s)) {
		size_t n = size - fed < piece ? size - fed : piece;
		int rv = net_grpc_session_feed(s, data + fed, n);
		fed += n;
		drain_output(s);
		if (rv == NET_ECLOSED) {
			break;
		}
		if ((mode & 0x10) != 0) {
			/* Deferred replies: answer one held call between pieces. */
			for (int i = 0; i < HELD_MAX; i++) {
				if (held[i] != NULL) {
					struct net_grpc_call *call = held[i];
					held[i] = NULL;
					(void)net_grpc_call_send(call, data, n < 64 ? n : 64);
					(void)net_grpc_call_finish(call, (int)(n % 17), "late");
					break;
				}
			}
		}
		for (int i = 0; i < HELD_MAX; i++) {
			if (paused[i] != NULL && (mode & 0x80) == 0) {
				struct net_grpc_call *call = paused[i];
				paused[i] = NULL;
				net_grpc_call_pause(call, false);
			}
		}
		if ((mode & 0x20) != 0 && fed * 2 >= size) {
			(void)net_grpc_session_drain(s, now);
			now += 60;
			net_grpc_session_tick(s, now);
		}
		drain_output(s);
	}
	net_grpc_session_free(s);
	for (int i = 0; i < HELD_MAX; i++) {
		if (held[i] != NULL || paused[i] != NULL) {
			abort(); /* free() must have cancelled every held call */
		}
	}
	return 0;
}
