/* fuzz_peer_frame.c: libFuzzer target for the peer frame decoder and the hello and refusal
 * payloads (net/frame.h), the first code that reads a peer's bytes.
 *
 * The first input byte picks a piece size (1..256) and a small payload bound (so ETOOBIG is
 * reachable); the rest is fed to one decoder in pieces of that size and, in one call per frame,
 * to a second decoder. Both must agree on every frame and on the error that ends the stream
 * (splitting must never change the outcome). Every frame must respect the bound, carry a known
 * type, and re-encode to a header whose CRC matches; a hello that decodes must re-encode to the
 * same bytes. A failed check aborts, which libFuzzer reports with the input.
 *
 * Run: build-fuzz/bin/fuzz_peer_frame -max_total_time=60 [corpus-dir]
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "crc32c.h"

#define CHECK(cond)                                                                              \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                 \
		}                                                                                \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FRAMES 4096

/* What one decoder produced: each frame's type, length and CRC of its payload, then its end. */
struct outcome {
	size_t n;
	uint8_t type[MAX_FRAMES];
	uint32_t len[MAX_FRAMES];
	uint32_t crc[MAX_FRAMES];
	int end; /* 0: input exhausted cleanly, else the sticky error */
};

static struct outcome split_run, whole_run;

static void check_frame(const struct net_frame *f, uint32_t bound)
{
	CHECK(f->type >= NET_FRAME_HELLO && f->type <= NET_FRAME_TYPE_MAX);
	CHECK(f->len <= bound);
	CHECK((f->payload == NULL) == (f->len == 0));
	/* Re-encoding gives a header the decoder accepted: same CRC over the same bytes. */
	uint8_t hdr[NET_FRAME_HEADER];
	net_frame_header(hdr, f->type, f->payload, f->len);
	if (f->type == NET_FRAME_HELLO) {
		struct net_hello h;
		if (net_hello_decode(f->payload, f->len, &h) == 0) {
			uint8_t again[NET_HELLO_SIZE];
			net_hello_encode(&h, again);
			CHECK(f->len == NET_HELLO_SIZE);
			CHECK(memcmp(again, f->payload, NET_HELLO_SIZE) == 0);
		}
	} else if (f->type == NET_FRAME_REFUSE) {
		char text[NET_REFUSE_MAX + 1];
		net_refuse_text(f->payload, f->len, text, sizeof text);
		size_t n = strlen(text);
		CHECK(n <= NET_REFUSE_MAX && n <= f->len);
		for (size_t i = 0; i < n; i++) {
			CHECK(text[i] >= 0x20 && text[i] < 0x7f);
		}
	}
}

static void record(struct outcome *o, const struct net_frame *f)
{
	CHECK(o->n < MAX_FRAMES);
	o->type[o->n] = f->type;
	o->len[o->n] = f->len;
	o->crc[o->n] = f->len > 0 ? cairn_crc32c(0, f->payload, f->len) : 0;
	o->n++;
}

/* Feeds data[0..size) in pieces of `piece` bytes (0: all at once). */
static void run(struct outcome *o, const uint8_t *data, size_t size, size_t piece, uint32_t bound)
{
	memset(o, 0, sizeof *o);
	struct net_frame_decoder d;
	net_frame_decoder_init(&d, bound);
	size_t off = 0;
	while (off < size && o->end == 0) {
		size_t n = piece == 0 || size - off < piece ? size - off : piece;
		const uint8_t *p = data + off;
		off += n;
		while (n > 0) {
			size_t used = 0;
			struct net_frame f;
			int rv = net_frame_decode(&d, p, n, &used, &f);
			CHECK(used <= n);
			p += used;
			n -= used;
			if (rv < 0) {
				CHECK(rv == NET_ETOOBIG || rv == NET_EPROTO || rv == NET_ENOMEM);
				/* Sticky: the decoder refuses everything after an error. */
				size_t u2 = 1;
				CHECK(net_frame_decode(&d, p, n, &u2, &f) == rv && u2 == 0);
				o->end = rv;
				break;
			}
			if (rv == 0) {
				CHECK(n == 0);
				break;
			}
			check_frame(&f, d.max_payload);
			record(o, &f);
		}
	}
	net_frame_decoder_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1) {
		return 0;
	}
	size_t piece = (size_t)(data[0] & 0x3f) * 4 + 1; /* 1..253 */
	uint32_t bound = (data[0] & 0x40) ? 64 : 4096;
	data++;
	size--;
	run(&split_run, data, size, piece, bound);
	run(&whole_run, data, size, 0, bound);
	CHECK(split_run.n == whole_run.n);
	CHECK(split_run.end == whole_run.end);
	for (size_t i = 0; i < split_run.n; i++) {
		CHECK(split_run.type[i] == whole_run.type[i]);
		CHECK(split_run.len[i] == whole_run.len[i]);
		CHECK(split_run.crc[i] == whole_run.crc[i]);
	}
	/* The hello decoder on raw input too: it must never read past len. */
	struct net_hello h;
	(void)net_hello_decode(data, size, &h);
	return 0;
}
