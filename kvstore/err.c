/* err.c: messages of the kvstore error codes. */
#include "kv_err.h"

const char *kv_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
#define KV__ERRNO_CASE(name, num, msg) \
	case KV_E##name:               \
		return msg;
		KV_ERRNO_MAP(KV__ERRNO_CASE)
#undef KV__ERRNO_CASE
	default:
		return "unknown error";
	}
}
