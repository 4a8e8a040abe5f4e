/* net_err.h: the error codes of net/ (transports, TLS, gRPC, HTTP). Functions
 * return 0 or a negative code from NET_ERRNO_MAP; net_strerror() gives the
 * message. Codes are only ever added at the end of the table. */
#ifndef CAIRN_NET_ERR_H
#define CAIRN_NET_ERR_H

#define NET_API __attribute__((visibility("default")))

#define NET_ERRNO_MAP(X)                       \
	X(NOMEM, 1, "out of memory")           \
	X(INVAL, 2, "invalid argument")        \
	X(IO, 3, "i/o error")                  \
	X(PROTO, 4, "protocol error")          \
	X(TLS, 5, "tls error")                 \
	X(CERT, 6, "certificate rejected")     \
	X(TOOBIG, 7, "message too large")      \
	X(CLOSED, 8, "connection closed")      \
	X(AGAIN, 9, "send queue full")         \
	X(TIMEOUT, 10, "timed out")            \
	X(ADDR, 11, "bad address")             \
	X(REFUSED, 12, "connection refused")   \
	X(UNAVAILABLE, 13, "peer unavailable") \
	X(LIMIT, 14, "limit reached")          \
	X(NOTFOUND, 15, "not found")           \
	X(ADDRINUSE, 16, "address already in use")

enum net_errno {
#define NET__ERRNO_ENUM(name, num, msg) NET_E##name = -(num),
	NET_ERRNO_MAP(NET__ERRNO_ENUM)
#undef NET__ERRNO_ENUM
};

/* Message for an error code; never NULL. */
NET_API const char *net_strerror(int err);

#endif /* CAIRN_NET_ERR_H */
