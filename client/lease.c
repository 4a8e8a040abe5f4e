/* lease.c: libcairn's lease keepalives. Every keepalive of a client goes over one
 * LeaseKeepAlive stream; a 100 ms scheduler sends each lease's request every TTL/3 (not more
 * often than every 500 ms), reopens the stream on another connection when it ends, and ends a
 * keepalive whose lease ran out of TTL without an answer. Cost: one pass over the keepalives per
 * tick; an answer finds its keepalive by lease id in a map. */
#include <stdlib.h>
#include <string.h>

#include "client_int.h"
#include "etcdserverpb/rpc.pb-c.h"

#define CL_KA_PATH "/etcdserverpb.Lease/LeaseKeepAlive"
#define CL_LEASE_NOT_FOUND "etcdserver: requested lease not found"

struct cairn_keepalive {
	struct cl_done dn;
	struct cl_link link; /* c->kas */
	struct cairn_keepalive *dup_next; /* other handles of the same lease (c->kmap) */
	struct cairn_client *c;
	int64_t id;
	cairn_keepalive_cb cb;
	void *data;
	int64_t ttl;         /* seconds, from the last answer; 0 before the first */
	uint64_t next_send;  /* loop time, ms */
	uint64_t expire_at;  /* no answer by then: the lease must be presumed gone */
	bool finished;
	int fcode;
	const char *fmsg;
};

static uint64_t interval_ms(const struct cairn_keepalive *ka)
{
	uint64_t iv = ka->ttl > 0 ? (uint64_t)ka->ttl * 1000 / 3 : CL_KA_MIN_INTERVAL_MS;
	return iv < CL_KA_MIN_INTERVAL_MS ? CL_KA_MIN_INTERVAL_MS : iv;
}

/* c->kmap: lease id -> the first of its handles, the others chained behind. */
static int ka_index_add(struct cairn_keepalive *ka)
{
	struct cairn_client *c = ka->c;
	ka->dup_next = cl_map_get(&c->kmap, ka->id);
	return cl_map_put(&c->kmap, ka->id, ka);
}

static void ka_index_del(struct cairn_keepalive *ka)
{
	struct cairn_client *c = ka->c;
	struct cairn_keepalive *head = cl_map_get(&c->kmap, ka->id);
	if (head == ka) {
		if (ka->dup_next != NULL)
			(void)cl_map_put(&c->kmap, ka->id, ka->dup_next); /* the key exists: no growth */
		else
			cl_map_del(&c->kmap, ka->id);
	} else {
		for (struct cairn_keepalive *k = head; k != NULL; k = k->dup_next) {
			if (k->dup_next == ka) {
				k->dup_next = ka->dup_next;
				break;
			}
		}
	}
	ka->dup_next = NULL;
}

static void ka_finish_deferred(struct cairn_keepalive *ka, int code, const char *msg)
{
	if (ka->finished)
		return;
	ka->finished = true;
	ka->fcode = code;
	ka->fmsg = msg;
	cl_list_del(&ka->link);
	ka_index_del(ka);
	ka->dn.kind = CL_DONE_KA;
	cl_defer(ka->c, &ka->dn);
}

void cl_ka_done_deferred(struct cl_done *d)
{
	struct cairn_keepalive *ka = CL_CONTAINER(d, struct cairn_keepalive, dn);
	struct cairn_status st = {ka->fcode, ka->fmsg != NULL ? ka->fmsg : "", false, ""};
	struct cairn_lease_result res = {0};
	res.id = ka->id;
	res.ttl = -1;
	ka->cb(ka->data, ka, &st, &res, true);
	free(ka);
}

static void ka_on_message(struct net_grpc_ccall *call, const uint8_t *data, size_t len,
			  void *user)
{
	struct cairn_client *c = user;
	(void)call;
	if (c->closing)
		return;
	Etcdserverpb__LeaseKeepAliveResponse *m =
		etcdserverpb__lease_keep_alive_response__unpack(&c->dec.pb, len, data);
	if (m == NULL) {
		cl_arena_reset(&c->dec);
		return;
	}
	/* The first handle of this lease; with several handles of one lease, it moves to the
	 * back of their chain so that the next answer goes to the next one. */
	struct cairn_keepalive *ka = cl_map_get(&c->kmap, m->id);
	if (ka != NULL && ka->dup_next != NULL) {
		struct cairn_keepalive *tail = ka->dup_next;
		while (tail->dup_next != NULL)
			tail = tail->dup_next;
		(void)cl_map_put(&c->kmap, ka->id, ka->dup_next);
		tail->dup_next = ka;
		ka->dup_next = NULL;
	}
	if (ka != NULL) {
		struct cairn_status st = {0, "", false, cl_conn_endpoint(c->kconn)};
		struct cairn_lease_result res = {0};
		cl_header(&res.header, m->header);
		res.id = m->id;
		if (m->ttl <= 0) {
			ka->finished = true;
			cl_list_del(&ka->link);
			ka_index_del(ka);
			st.code = CAIRN_NOT_FOUND;
			st.message = CL_LEASE_NOT_FOUND;
			res.ttl = -1;
			ka->cb(ka->data, ka, &st, &res, true);
			free(ka);
		} else {
			uint64_t now = cl_now(c);
			ka->ttl = m->ttl;
			ka->expire_at = now + (uint64_t)m->ttl * 1000;
			ka->next_send = now + interval_ms(ka);
			res.ttl = m->ttl;
			res.granted_ttl = m->ttl;
			ka->cb(ka->data, ka, &st, &res, false);
		}
	}
	cl_arena_reset(&c->dec);
}

static void ka_on_close(struct net_grpc_ccall *call, int status, const char *message, void *user)
{
	struct cairn_client *c = user;
	(void)call;
	(void)status;
	(void)message;
	c->kcall = NULL;
	/* Every lease asks again on the next stream. */
	uint64_t now = cl_now(c);
	for (struct cl_link *l = c->kas.next; l != &c->kas; l = l->next)
		CL_CONTAINER(l, struct cairn_keepalive, link)->next_send = now;
}

static const struct net_grpc_ccall_cbs ka_cbs = {ka_on_message, ka_on_close, NULL};

void cl_ka_timer_cb(uv_timer_t *t)
{
	struct cairn_client *c = t->data;
	if (c->closing)
		return;
	if (cl_list_empty(&c->kas)) {
		uv_timer_stop(&c->ktimer);
		c->ktimer_on = false;
		if (c->kcall != NULL) {
			/* Nothing to keep alive: the stream ends until the next keepalive. */
			net_grpc_ccall_cancel(c->kcall);
			c->kcall = NULL;
		}
		return;
	}
	uint64_t now = cl_now(c);
	if (c->kcall == NULL) {
		struct cl_conn *cn = cl_pick(c, c->kconn);
		if (cn != NULL &&
		    net_grpc_conn_call(cn->gc, CL_KA_PATH, NULL, &ka_cbs, c, &c->kcall) == 0)
			c->kconn = cn;
		else
			c->kcall = NULL;
	}
	/* Deferred ends only: no user code runs while walking the list. */
	struct cl_link *l = c->kas.next;
	while (l != &c->kas) {
		struct cairn_keepalive *ka = CL_CONTAINER(l, struct cairn_keepalive, link);
		l = l->next;
		if (now >= ka->expire_at) {
			ka_finish_deferred(ka, CAIRN_DEADLINE_EXCEEDED,
					   "keepalive: no answer within the lease's TTL");
			continue;
		}
		if (c->kcall == NULL || now < ka->next_send)
			continue;
		Etcdserverpb__LeaseKeepAliveRequest m = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
		m.id = ka->id;
		uint8_t buf[32];
		size_t len = etcdserverpb__lease_keep_alive_request__pack(&m, buf);
		int rc = net_grpc_ccall_send(c->kcall, buf, len);
		if (rc == 0)
			ka->next_send = now + interval_ms(ka);
		else if (rc != NET_EAGAIN)
			break; /* the stream is going; its on_close follows */
	}
}

void cl_ka_kick(struct cairn_client *c)
{
	if (c->closing || cl_list_empty(&c->kas))
		return;
	uv_timer_start(&c->ktimer, cl_ka_timer_cb, 0, CL_KA_TICK_MS);
	c->ktimer_on = true;
}

void cl_ka_conn_lost(struct cl_conn *cn)
{
	(void)cn; /* the stream's own on_close ran before */
}

void cl_ka_close_all(struct cairn_client *c)
{
	if (c->kcall != NULL)
		net_grpc_ccall_cancel(c->kcall);
	c->kcall = NULL;
	while (!cl_list_empty(&c->kas)) {
		struct cairn_keepalive *ka = CL_CONTAINER(c->kas.next, struct cairn_keepalive, link);
		ka_finish_deferred(ka, CAIRN_CANCELLED, "client is closing");
	}
}

int cairn_lease_keepalive(struct cairn_client *c, int64_t id, cairn_keepalive_cb cb, void *data,
			  struct cairn_keepalive **out)
{
	if (out != NULL)
		*out = NULL;
	if (c == NULL || cb == NULL || id <= 0)
		return CAIRN_EINVAL;
	if (c->closing)
		return CAIRN_ECLOSED;
	struct cairn_keepalive *ka = calloc(1, sizeof(*ka));
	if (ka == NULL)
		return CAIRN_ENOMEM;
	uint64_t now = cl_now(c);
	ka->c = c;
	ka->id = id;
	ka->cb = cb;
	ka->data = data;
	ka->next_send = now;
	ka->expire_at = now + c->request_timeout_ms;
	if (ka_index_add(ka) != 0) {
		free(ka);
		return CAIRN_ENOMEM;
	}
	cl_list_init(&ka->link);
	cl_list_push(&c->kas, &ka->link);
	if (!c->ktimer_on)
		cl_ka_kick(c);
	if (out != NULL)
		*out = ka;
	return 0;
}

void cairn_lease_keepalive_stop(struct cairn_keepalive *ka)
{
	if (ka == NULL || ka->finished)
		return;
	ka_finish_deferred(ka, CAIRN_CANCELLED, "keepalive stopped");
}
