/* http1.c: HTTP/1.1 request parsing and response heads (RFC 9112), bounded and without I/O.
 * See http1.h. Lines may end in CRLF or a bare LF (RFC 9112 §2.2 lets a recipient accept the
 * latter); obsolete line folding is refused (§5.2). */
#include "http1.h"

#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* tchar of RFC 9110 §5.6.2. */
static bool is_tchar(unsigned char c)
{
	if (isalnum(c)) {
		return true;
	}
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Finds the end of the head: the index just past the empty line, or 0 if not there yet. */
static size_t head_end(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (buf[i] != '\n') {
			continue;
		}
		/* A line feed followed by an empty line (LF or CRLF). */
		if (i + 1 < len && buf[i + 1] == '\n') {
			return i + 2;
		}
		if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
			return i + 3;
		}
	}
	return 0;
}

/* Cuts the next line off *p (in place, NUL at its end, CR removed); NULL at the end. */
static char *next_line(char **p)
{
	char *s = *p;
	char *nl = strchr(s, '\n');
	if (nl == NULL) {
		return NULL;
	}
	*nl = '\0';
	if (nl > s && nl[-1] == '\r') {
		nl[-1] = '\0';
	}
	*p = nl + 1;
	return s;
}

static int parse_request_line(char *line, struct net_http1_request *req)
{
	char *sp1 = strchr(line, ' ');
	if (sp1 == NULL || sp1 == line || (size_t)(sp1 - line) > NET_HTTP1_MAX_METHOD) {
		return -400;
	}
	for (char *c = line; c < sp1; c++) {
		if (!is_tchar((unsigned char)*c)) {
			return -400;
		}
	}
	memcpy(req->method, line, (size_t)(sp1 - line));
	req->method[sp1 - line] = '\0';
	char *target = sp1 + 1;
	char *sp2 = strchr(target, ' ');
	if (sp2 == NULL || sp2 == target) {
		return -400;
	}
	*sp2 = '\0';
	for (char *c = target; *c != '\0'; c++) {
		if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f) {
			return -400;
		}
	}
	const char *version = sp2 + 1;
	if (strncmp(version, "HTTP/", 5) != 0 || !isdigit((unsigned char)version[5]) ||
	    version[6] != '.' || !isdigit((unsigned char)version[7]) || version[8] != '\0') {
		return -400;
	}
	if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) {
		return -505;
	}
	req->minor = version[7] - '0';
	req->target = target;
	if (target[0] != '/' && strcmp(target, "*") != 0) {
		return -400; /* absolute-form is for proxies */
	}
	/* The path and the query share the target's bytes: the '?' becomes the path's end (and
	 * the target's: it is only shown in log lines). */
	char *q = strchr(target, '?');
	req->path = target;
	if (q != NULL) {
		*q = '\0';
		req->query = q + 1;
	} else {
		req->query = "";
	}
	return 0;
}

/* Trims blanks (SP, HTAB) at both ends, in place. */
static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t') {
		s++;
	}
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
		s[--n] = '\0';
	}
	return s;
}

/* Content-Length: 1*DIGIT (RFC 9110 §8.6); a list of equal values is accepted as one. */
static int parse_length(const char *v, uint64_t *out)
{
	uint64_t n = 0;
	const char *c = v;
	if (!isdigit((unsigned char)*c)) {
		return -400;
	}
	for (; isdigit((unsigned char)*c); c++) {
		if (n > (UINT64_MAX - 9) / 10) {
			return -413;
		}
		n = n * 10 + (uint64_t)(*c - '0');
	}
	if (*c != '\0') {
		return -400;
	}
	*out = n;
	return 0;
}

/* True if the comma-separated list v holds token t (case-insensitive). */
static bool has_token(const char *v, const char *t)
{
	size_t tl = strlen(t);
	while (*v != '\0') {
		while (*v == ' ' || *v == '\t' || *v == ',') {
			v++;
		}
		const char *e = v;
		while (*e != '\0' && *e != ',') {
			e++;
		}
		const char *te = e;
		while (te > v && (te[-1] == ' ' || te[-1] == '\t')) {
			te--;
		}
		if ((size_t)(te - v) == tl && strncasecmp(v, t, tl) == 0) {
			return true;
		}
		v = e;
	}
	return false;
}

int net_http1_parse(const uint8_t *buf, size_t len, uint64_t max_body,
		    struct net_http1_request *req, size_t *consumed)
{
	assert(buf != NULL || len == 0);
	assert(req != NULL && consumed != NULL);
	*consumed = 0;
	/* RFC 9112 §2.2: empty lines before the request line are ignored. */
	size_t lead = 0;
	while (lead < len && lead < 64 && (buf[lead] == '\r' || buf[lead] == '\n')) {
		lead++;
	}
	size_t scan = len - lead;
	if (scan > NET_HTTP1_MAX_HEAD) {
		scan = NET_HTTP1_MAX_HEAD;
	}
	size_t end = head_end(buf + lead, scan);
	if (end == 0) {
		return len - lead >= NET_HTTP1_MAX_HEAD ? -431 : 0;
	}
	if (memchr(buf + lead, '\0', end) != NULL) {
		return -400;
	}
	memcpy(req->head, buf + lead, end);
	req->head[end] = '\0';
	req->n_headers = 0;
	req->has_body = false;
	req->content_length = 0;
	req->body = NULL;

	char *p = req->head;
	char *line = next_line(&p);
	assert(line != NULL);
	int rv = parse_request_line(line, req);
	if (rv != 0) {
		return rv;
	}
	bool chunked = false, have_te = false, have_host = false;
	const char *connection = NULL;
	while ((line = next_line(&p)) != NULL && line[0] != '\0') {
		if (line[0] == ' ' || line[0] == '\t') {
			return -400; /* obs-fold */
		}
		char *colon = strchr(line, ':');
		if (colon == NULL || colon == line) {
			return -400;
		}
		for (char *c = line; c < colon; c++) {
			if (!is_tchar((unsigned char)*c)) {
				return -400; /* also a blank before the colon (§5.1) */
			}
			*c = (char)tolower((unsigned char)*c);
		}
		*colon = '\0';
		char *value = trim(colon + 1);
		for (char *c = value; *c != '\0'; c++) {
			unsigned char u = (unsigned char)*c;
			if ((u < ' ' && u != '\t') || u == 0x7f) {
				return -400;
			}
		}
		if (req->n_headers == NET_HTTP1_MAX_HEADERS) {
			return -431;
		}
		req->headers[req->n_headers++] = (struct net_http1_header){ line, value };
		if (strcmp(line, "content-length") == 0) {
			uint64_t n = 0;
			rv = parse_length(value, &n);
			if (rv != 0) {
				return rv;
			}
			if (req->has_body && n != req->content_length) {
				return -400;
			}
			req->has_body = true;
			req->content_length = n;
		} else if (strcmp(line, "transfer-encoding") == 0) {
			have_te = true;
			if (has_token(value, "chunked")) {
				chunked = true;
			} else if (!has_token(value, "identity")) {
				return -501;
			}
		} else if (strcmp(line, "host") == 0) {
			if (have_host) {
				return -400;
			}
			have_host = true;
		} else if (strcmp(line, "connection") == 0) {
			connection = value;
		}
	}
	if (have_te && req->has_body) {
		return -400; /* §6.3: both is a smuggling attempt */
	}
	if (chunked) {
		return -411;
	}
	if (req->minor == 1 && !have_host) {
		return -400; /* RFC 9112 §3.2 */
	}
	if (req->minor == 1) {
		req->keep_alive = connection == NULL || !has_token(connection, "close");
	} else {
		req->keep_alive = connection != NULL && has_token(connection, "keep-alive");
	}
	if (req->content_length > max_body) {
		return -413;
	}
	size_t head_len = lead + end;
	if (len - head_len < req->content_length) {
		return 0;
	}
	req->body = buf + head_len;
	*consumed = head_len + (size_t)req->content_length;
	return 1;
}

const char *net_http1_header(const struct net_http1_request *req, const char *name)
{
	for (size_t i = 0; i < req->n_headers; i++) {
		if (strcmp(req->headers[i].name, name) == 0) {
			return req->headers[i].value;
		}
	}
	return NULL;
}

const char *net_http1_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 411:
		return "Length Required";
	case 412:
		return "Precondition Failed";
	case 413:
		return "Request Entity Too Large";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 499:
		return "Client Closed Request";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

int net_http1_write_head(char *out, size_t cap, int status, const char *content_type,
			 int64_t content_length, bool close, const char *extra)
{
	assert(out != NULL && status >= 100 && status <= 999);
	char len_line[64];
	if (content_length >= 0) {
		snprintf(len_line, sizeof len_line, "Content-Length: %" PRId64 "\r\n",
			 content_length);
	} else {
		snprintf(len_line, sizeof len_line, "Transfer-Encoding: chunked\r\n");
	}
	int n = snprintf(out, cap, "HTTP/1.1 %d %s\r\n%s%s%s%s%s%s\r\n", status,
			 net_http1_reason(status), content_type != NULL ? "Content-Type: " : "",
			 content_type != NULL ? content_type : "",
			 content_type != NULL ? "\r\n" : "", len_line,
			 close ? "Connection: close\r\n" : "", extra != NULL ? extra : "");
	if (n < 0 || (size_t)n >= cap) {
		return NET_ETOOBIG;
	}
	return n;
}

int net_http1_chunk_size(char *out, size_t cap, size_t n)
{
	assert(n > 0 && cap >= 20);
	int k = snprintf(out, cap, "%zx\r\n", n);
	assert(k > 0 && (size_t)k < cap);
	return k;
}
