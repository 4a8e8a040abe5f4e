/* err.c: messages of the net/ error codes. */
#include "net_err.h"

const char *net_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
#define NET__ERRNO_CASE(name, num, msg) \
	case NET_E##name:               \
		return msg;
		NET_ERRNO_MAP(NET__ERRNO_CASE)
#undef NET__ERRNO_CASE
	default:
		return "unknown error";
	}
}
