/* fuzz_http1.c: arbitrary bytes from an HTTP/1.1 client (net/http1.h), as the client port's
 * HTTP side reads them: the parser runs on every prefix boundary the first byte picks and on
 * the rest pipelined, the way server/http.c consumes its buffer. A parsed request must stay
 * inside the bytes given, name a path that starts with '/' (or "*"), and have a body that fits;
 * nothing may crash or read out of bounds (ASan). The gateway's JSON decoder lives in
 * server/, which fuzz builds do not link; its malformed inputs are covered by test_gateway. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

static struct net_http1_request *req;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (req == NULL) {
		req = malloc(sizeof *req);
		if (req == NULL) {
			return 0;
		}
	}
	if (size == 0) {
		return 0;
	}
	size_t step = (size_t)data[0] + 1; /* bytes "read" at a time */
	uint64_t max_body = (uint64_t)(data[0] & 0x0f) * 64;
	data++;
	size--;
	/* a copy of exactly the bytes given, so ASan sees any read past them */
	uint8_t *buf = malloc(size ? size : 1);
	if (buf == NULL) {
		return 0;
	}
	memcpy(buf, data, size);
	size_t off = 0, have = 0;
	int requests = 0;
	while (off < size && requests < 64) {
		have = have + step < size ? have + step : size;
		size_t used = 0;
		int rv = net_http1_parse(buf + off, have - off, max_body, req, &used);
		if (rv < 0) {
			assert(rv == -400 || rv == -411 || rv == -413 || rv == -431 || rv == -501 ||
			       rv == -505);
			break; /* the connection would be answered and closed */
		}
		if (rv == 0) {
			if (have == size) {
				break; /* the client stopped mid-request */
			}
			continue;
		}
		assert(used > 0 && used <= have - off);
		assert(req->content_length <= max_body);
		assert(req->path[0] == '/' || req->path[0] == '*');
		if (req->content_length > 0) {
			assert(req->body >= buf + off &&
			       req->body + req->content_length <= buf + have);
		}
		(void)net_http1_header(req, "host");
		off += used;
		if (have < off) {
			have = off;
		}
		requests++;
	}
	free(buf);
	return 0;
}
