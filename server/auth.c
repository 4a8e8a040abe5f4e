/* auth.c: etcd's Auth service as an etcd 3.4 member answers it while
 * authentication is disabled and no user or role exists. Cairn keeps no
 * users nor roles: UserAdd and RoleAdd are refused as unimplemented
 * (docs/api-compat.md, "Auth"), so every other call sees the empty tables
 * an etcd without users has, and answers as that etcd does. */
#include "member_int.h"

#include <string.h>

enum {
	ST_FAILED_PRECONDITION = 9,
	ST_UNIMPLEMENTED = 12,
};

#define ERR_NO_USER "etcdserver: user name not found"
#define ERR_NO_ROLE "etcdserver: role name not found"
#define ERR_UNSUPPORTED "cairn: users and roles are not supported (authentication stays disabled)"

/* Every answer here that succeeds has a header and, at most, an empty
 * list, which packs exactly as a message holding only the header. */
static void finish_header_only(struct srv_member *m, struct net_grpc_call *call)
{
	Etcdserverpb__AuthDisableResponse out = ETCDSERVERPB__AUTH_DISABLE_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;
	member_header_init(m, &h, m->revision);
	out.header = &h;
	member_finish_msg(call, &out.base);
}

enum auth_answer {
	ANSWER_OK,       /* a header (and empty lists) */
	ANSWER_NO_USER,  /* no such user: none exists */
	ANSWER_NO_ROLE,  /* no such role: none exists */
	ANSWER_NOT_ON,   /* Authenticate: authentication is disabled */
	ANSWER_NO_ROOT,  /* AuthEnable: no root user */
	ANSWER_ADD_USER, /* UserAdd: empty name, else unsupported */
	ANSWER_ADD_ROLE, /* RoleAdd: empty name, else unsupported */
};

static void answer(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user,
		   enum auth_answer a)
{
	struct srv_member *m = user;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	switch (a) {
	case ANSWER_OK:
		finish_header_only(m, call);
		return;
	case ANSWER_NO_USER:
		member_finish_error(call, ST_FAILED_PRECONDITION, ERR_NO_USER);
		return;
	case ANSWER_NO_ROLE:
		member_finish_error(call, ST_FAILED_PRECONDITION, ERR_NO_ROLE);
		return;
	case ANSWER_NOT_ON:
		member_finish_error(call, ST_FAILED_PRECONDITION,
				    "etcdserver: authentication is not enabled");
		return;
	case ANSWER_NO_ROOT:
		member_finish_error(call, ST_FAILED_PRECONDITION,
				    "etcdserver: root user does not exist");
		return;
	case ANSWER_ADD_USER: {
		Etcdserverpb__AuthUserAddRequest *q =
			etcdserverpb__auth_user_add_request__unpack(NULL, len, data);
		bool empty = q == NULL || q->name == NULL || q->name[0] == '\0';
		if (q == NULL)
			member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		else if (empty)
			member_finish_error(call, ST_INVALID_ARGUMENT,
					    "etcdserver: user name is empty");
		else
			member_finish_error(call, ST_UNIMPLEMENTED, ERR_UNSUPPORTED);
		if (q != NULL)
			etcdserverpb__auth_user_add_request__free_unpacked(q, NULL);
		return;
	}
	case ANSWER_ADD_ROLE: {
		Etcdserverpb__AuthRoleAddRequest *q =
			etcdserverpb__auth_role_add_request__unpack(NULL, len, data);
		bool empty = q == NULL || q->name == NULL || q->name[0] == '\0';
		if (q == NULL)
			member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		else if (empty)
			member_finish_error(call, ST_INVALID_ARGUMENT,
					    "etcdserver: role name is empty");
		else
			member_finish_error(call, ST_UNIMPLEMENTED, ERR_UNSUPPORTED);
		if (q != NULL)
			etcdserverpb__auth_role_add_request__free_unpacked(q, NULL);
		return;
	}
	}
}

#define AUTH_CALL(name, what)                                                                      \
	static void on_msg_##name(struct net_grpc_call *call, const uint8_t *data, size_t len,     \
				  void *user)                                                      \
	{                                                                                          \
		answer(call, data, len, user, what);                                               \
	}                                                                                          \
	static void h_##name(struct net_grpc_call *call, void *data)                               \
	{                                                                                          \
		static const struct net_grpc_call_callbacks cbs = { .on_message = on_msg_##name }; \
		net_grpc_call_set_callbacks(call, &cbs, data);                                     \
	}

AUTH_CALL(auth_enable, ANSWER_NO_ROOT)
AUTH_CALL(auth_disable, ANSWER_OK)
AUTH_CALL(authenticate, ANSWER_NOT_ON)
AUTH_CALL(user_add, ANSWER_ADD_USER)
AUTH_CALL(user_get, ANSWER_NO_USER)
AUTH_CALL(user_list, ANSWER_OK)
AUTH_CALL(user_delete, ANSWER_NO_USER)
AUTH_CALL(user_change_password, ANSWER_NO_USER)
AUTH_CALL(user_grant_role, ANSWER_NO_USER)
AUTH_CALL(user_revoke_role, ANSWER_NO_USER)
AUTH_CALL(role_add, ANSWER_ADD_ROLE)
AUTH_CALL(role_get, ANSWER_NO_ROLE)
AUTH_CALL(role_list, ANSWER_OK)
AUTH_CALL(role_delete, ANSWER_NO_ROLE)
AUTH_CALL(role_grant_permission, ANSWER_NO_ROLE)
AUTH_CALL(role_revoke_permission, ANSWER_NO_ROLE)

int auth_register(struct srv_member *m)
{
	static const struct member_method methods[] = {
		{ "/etcdserverpb.Auth/AuthEnable", h_auth_enable },
		{ "/etcdserverpb.Auth/AuthDisable", h_auth_disable },
		{ "/etcdserverpb.Auth/Authenticate", h_authenticate },
		{ "/etcdserverpb.Auth/UserAdd", h_user_add },
		{ "/etcdserverpb.Auth/UserGet", h_user_get },
		{ "/etcdserverpb.Auth/UserList", h_user_list },
		{ "/etcdserverpb.Auth/UserDelete", h_user_delete },
		{ "/etcdserverpb.Auth/UserChangePassword", h_user_change_password },
		{ "/etcdserverpb.Auth/UserGrantRole", h_user_grant_role },
		{ "/etcdserverpb.Auth/UserRevokeRole", h_user_revoke_role },
		{ "/etcdserverpb.Auth/RoleAdd", h_role_add },
		{ "/etcdserverpb.Auth/RoleGet", h_role_get },
		{ "/etcdserverpb.Auth/RoleList", h_role_list },
		{ "/etcdserverpb.Auth/RoleDelete", h_role_delete },
		{ "/etcdserverpb.Auth/RoleGrantPermission", h_role_grant_permission },
		{ "/etcdserverpb.Auth/RoleRevokePermission", h_role_revoke_permission },
	};
	return member_register(m, methods, sizeof methods / sizeof methods[0]);
}
