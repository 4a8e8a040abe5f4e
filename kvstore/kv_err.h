/* kv_err.h: the error codes of kvstore/, shared by the WAL and the MVCC store.
 * Functions return 0 or a negative code from KV_ERRNO_MAP; kv_strerror() gives
 * the message. Where etcd has an error string clients match on, the message
 * is that string byte for byte. */
#ifndef CAIRN_KV_ERR_H
#define CAIRN_KV_ERR_H

#define KV_API __attribute__((visibility("default")))

#define KV_ERRNO_MAP(X)                                                             \
	X(NOMEM, 1, "out of memory")                                                \
	X(INVAL, 2, "invalid argument")                                             \
	X(IO, 3, "i/o error")                                                       \
	X(CORRUPT, 4, "corrupt data")                                               \
	X(NOSPACE, 5, "etcdserver: mvcc: database space exceeded")                  \
	X(DISKFULL, 6, "no space left on device")                                   \
	X(COMPACTED, 7, "etcdserver: mvcc: required revision has been compacted")   \
	X(FUTUREREV, 8, "etcdserver: mvcc: required revision is a future revision") \
	X(NOTFOUND, 9, "not found")                                                 \
	X(LOCKED, 10, "data directory is in use by another process")                \
	X(TOOBIG, 11, "etcdserver: request is too large")                           \
	X(LEASENOTFOUND, 12, "etcdserver: requested lease not found")               \
	X(LEASEEXIST, 13, "etcdserver: lease already exists")                       \
	X(UNAVAILABLE, 14, "requested entry is unavailable")                        \
	X(TOOMANYOPS, 15, "etcdserver: too many operations in txn request")         \
	X(DUPLICATEKEY, 16, "etcdserver: duplicate key given in txn request")       \
	X(KEYNOTFOUND, 17, "etcdserver: key not found")                             \
	X(VALUEPROVIDED, 18, "etcdserver: value is provided")                       \
	X(LEASEPROVIDED, 19, "etcdserver: lease is provided")                       \
	X(EMPTYKEY, 20, "etcdserver: key is not provided")

enum kv_errno {
#define KV__ERRNO_ENUM(name, num, msg) KV_E##name = -(num),
	KV_ERRNO_MAP(KV__ERRNO_ENUM)
#undef KV__ERRNO_ENUM
};

/* Message for an error code; never NULL. */
KV_API const char *kv_strerror(int err);

#endif /* CAIRN_KV_ERR_H */
