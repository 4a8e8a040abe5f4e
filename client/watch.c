/* watch.c: libcairn's watches. The watches of a client share one Watch stream per connection
 * (etcd's clients do the same). Each watch remembers the revision it has delivered up to; when
 * its stream breaks it is created again, on whichever connection is ready, from that revision
 * + 1, and events at or below it are dropped, so the callback sees every event once, in order.
 *
 * A stream answers creates in the order they were sent ("created" carries the id the server
 * chose), so each connection keeps its creates in a FIFO, and its watches by id in a map. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"
#include "etcdserverpb/rpc.pb-c.h"

#define CL_WATCH_PATH "/etcdserverpb.Watch/Watch"
#define CL_COMPACTED_MSG "etcdserver: mvcc: required revision has been compacted"

struct cairn_watch {
	struct cl_done dn;
	struct cl_link link;            /* c->wpending, or cn->watches */
	struct cairn_client *c;
	struct cl_conn *cn;             /* the stream it is on; NULL while pending */
	struct cairn_watch *fifo_next;
	cairn_watch_cb cb;
	void *data;
	uint8_t *key, *end;
	size_t key_len, end_len;
	bool prev_kv, progress_notify, no_put, no_delete;
	int64_t start_rev;
	int64_t rev;                    /* delivered up to here (valid with have_rev) */
	bool have_rev;
	int64_t floor;                  /* created (again) after this revision: older is a repeat */
	int64_t id;
	bool in_map, in_fifo;
	bool finished;                  /* the final callback is queued or ran */
	bool final_ran;
	int fcode;
	const char *fmsg;
	int64_t fcompact;
};

static void watch_free(struct cairn_watch *w)
{
	free(w->key);
	free(w);
}

static int stream_send(struct cl_conn *cn, const Etcdserverpb__WatchRequest *req)
{
	struct cairn_client *c = cn->c;
	size_t len = etcdserverpb__watch_request__get_packed_size(req);
	uint8_t *buf = cl_arena_alloc(&c->enc, len);
	if (buf == NULL)
		return CAIRN_ENOMEM;
	etcdserverpb__watch_request__pack(req, buf);
	int rc = net_grpc_ccall_send(cn->wcall, buf, len);
	cl_arena_reset(&c->enc);
	return rc;
}

static void send_cancel(struct cl_conn *cn, int64_t id)
{
	if (cn->wcall == NULL)
		return;
	Etcdserverpb__WatchCancelRequest cr = ETCDSERVERPB__WATCH_CANCEL_REQUEST__INIT;
	cr.watch_id = id;
	Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
	req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST;
	req.cancel_request = &cr;
	(void)stream_send(cn, &req);
}

/* Takes w off its connection's map and list. One whose "created" is still due stays listed
 * (a zombie) until it comes or the stream ends. */
static void detach(struct cairn_watch *w)
{
	if (w->cn != NULL && w->in_map) {
		cl_map_del(&w->cn->wmap, w->id);
		w->in_map = false;
	}
	if (w->in_fifo)
		return;
	cl_list_del(&w->link);
	w->cn = NULL;
}

/* The final callback, now (from a stream callback of the loop). */
static void finish_now(struct cairn_watch *w, int code, const char *msg, int64_t compact,
		       const struct cairn_header *h)
{
	w->finished = true;
	w->final_ran = true;
	detach(w);
	struct cairn_watch_batch b = {0};
	if (h != NULL)
		b.header = *h;
	b.canceled = true;
	b.compact_revision = compact;
	b.status.code = code;
	b.status.message = msg != NULL ? msg : "";
	b.status.endpoint = "";
	w->cb(w->data, w, &b);
	if (!w->in_fifo)
		watch_free(w);
}

static void finish_deferred(struct cairn_watch *w, int code, const char *msg)
{
	if (w->finished)
		return;
	w->finished = true;
	w->fcode = code;
	w->fmsg = msg;
	detach(w);
	w->dn.kind = CL_DONE_WATCH;
	cl_defer(w->c, &w->dn);
}

void cl_watch_done_deferred(struct cl_done *d)
{
	struct cairn_watch *w = CL_CONTAINER(d, struct cairn_watch, dn);
	struct cairn_watch_batch b = {0};
	b.canceled = true;
	b.compact_revision = w->fcompact;
	b.status.code = w->fcode;
	b.status.message = w->fmsg != NULL ? w->fmsg : "";
	b.status.endpoint = "";
	b.header.revision = w->have_rev ? w->rev : 0;
	w->final_ran = true;
	w->cb(w->data, w, &b);
	if (!w->in_fifo)
		watch_free(w);
}

static void stream_on_message(struct net_grpc_ccall *call, const uint8_t *data, size_t len,
			      void *user);
static void stream_on_close(struct net_grpc_ccall *call, int status, const char *message,
			    void *user);
static const struct net_grpc_ccall_cbs stream_cbs = {stream_on_message, stream_on_close, NULL};

/* Opens the stream if needed and sends w's create; 0 or an error (w untouched then). */
static int attach(struct cairn_watch *w, struct cl_conn *cn)
{
	if (cn->wcall == NULL) {
		int rc = net_grpc_conn_call(cn->gc, CL_WATCH_PATH, NULL, &stream_cbs, cn, &cn->wcall);
		if (rc != 0) {
			cn->wcall = NULL;
			return rc;
		}
	}
	Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
	Etcdserverpb__WatchCreateRequest__FilterType filters[2];
	size_t nf = 0;
	cr.key.data = w->key;
	cr.key.len = w->key_len;
	cr.range_end.data = w->end;
	cr.range_end.len = w->end_len;
	cr.start_revision = w->have_rev ? w->rev + 1 : w->start_rev;
	w->floor = w->have_rev ? w->rev : 0;
	cr.progress_notify = w->progress_notify;
	cr.prev_kv = w->prev_kv;
	if (w->no_put)
		filters[nf++] = ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT;
	if (w->no_delete)
		filters[nf++] = ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE;
	cr.n_filters = nf;
	cr.filters = nf > 0 ? filters : NULL;
	Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
	req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
	req.create_request = &cr;
	int rc = stream_send(cn, &req);
	if (rc != 0)
		return rc;
	cl_list_del(&w->link);
	cl_list_push(&cn->watches, &w->link);
	w->cn = cn;
	w->in_fifo = true;
	w->fifo_next = NULL;
	if (cn->fifo_tail != NULL)
		cn->fifo_tail->fifo_next = w;
	else
		cn->fifo_head = w;
	cn->fifo_tail = w;
	return 0;
}

/* Every pending watch onto a ready connection; what cannot go waits for the timer or the next
 * connection that comes up. */
static void place_pending(struct cairn_client *c)
{
	size_t n = 0;
	for (struct cl_link *l = c->wpending.next; l != &c->wpending; l = l->next)
		n++;
	for (size_t i = 0; i < n && !cl_list_empty(&c->wpending); i++) {
		struct cairn_watch *w = CL_CONTAINER(c->wpending.next, struct cairn_watch, link);
		struct cl_conn *cn = cl_pick(c, NULL);
		if (cn == NULL || attach(w, cn) != 0) {
			if (!uv_is_active((uv_handle_t *)&c->wtimer))
				uv_timer_start(&c->wtimer, cl_watch_timer_cb, c->wbackoff, 0);
			return;
		}
	}
}

void cl_watch_timer_cb(uv_timer_t *t)
{
	struct cairn_client *c = t->data;
	if (c->closing)
		return;
	place_pending(c);
}

void cl_watch_conn_ready(struct cl_conn *cn)
{
	place_pending(cn->c);
}

/* Every watch of cn's stream goes back to pending (or away, if already finished). */
static void stream_lost(struct cl_conn *cn)
{
	struct cairn_client *c = cn->c;
	cn->wcall = NULL;
	cn->fifo_head = cn->fifo_tail = NULL;
	while (!cl_list_empty(&cn->watches)) {
		struct cairn_watch *w = CL_CONTAINER(cn->watches.next, struct cairn_watch, link);
		cl_list_del(&w->link);
		w->in_fifo = false;
		w->in_map = false;
		w->cn = NULL;
		if (w->finished) {
			if (w->final_ran)
				watch_free(w);
			continue;
		}
		cl_list_push(&c->wpending, &w->link);
	}
	cl_map_free(&cn->wmap);
}

static void stream_on_close(struct net_grpc_ccall *call, int status, const char *message,
			    void *user)
{
	struct cl_conn *cn = user;
	struct cairn_client *c = cn->c;
	(void)call;
	(void)status;
	(void)message;
	stream_lost(cn);
	if (c->closing || cl_list_empty(&c->wpending))
		return;
	uint64_t delay = c->wbackoff;
	c->wbackoff = c->wbackoff * 2 > CL_BACKOFF_MAX_MS ? CL_BACKOFF_MAX_MS : c->wbackoff * 2;
	uv_timer_start(&c->wtimer, cl_watch_timer_cb, delay, 0);
}

void cl_watch_conn_lost(struct cl_conn *cn)
{
	if (cn->wcall != NULL) {
		/* The connection's calls were all closed before; nothing should be left. */
		cn->wcall = NULL;
	}
	stream_lost(cn);
}

static void on_created(struct cl_conn *cn, const Etcdserverpb__WatchResponse *m,
		       const struct cairn_header *h)
{
	struct cairn_watch *w = cn->fifo_head;
	if (w == NULL)
		return;
	cn->fifo_head = w->fifo_next;
	if (cn->fifo_head == NULL)
		cn->fifo_tail = NULL;
	w->in_fifo = false;
	if (w->finished) {
		/* Cancelled while its create was on the way. */
		if (!m->canceled)
			send_cancel(cn, m->watch_id);
		cl_list_del(&w->link);
		w->cn = NULL;
		if (w->final_ran)
			watch_free(w);
		return;
	}
	if (m->canceled) {
		bool compacted = m->compact_revision > 0;
		finish_now(w, compacted ? CAIRN_OUT_OF_RANGE : CAIRN_INVALID_ARGUMENT,
			   compacted ? CL_COMPACTED_MSG : m->cancel_reason, m->compact_revision, h);
		return;
	}
	assert(!w->in_map && w->cn == cn);
	w->id = m->watch_id;
	if (cl_map_put(&cn->wmap, w->id, w) != 0) {
		send_cancel(cn, w->id);
		finish_now(w, CAIRN_RESOURCE_EXHAUSTED, "out of memory", 0, h);
		return;
	}
	w->in_map = true;
	if (!w->have_rev) {
		w->rev = w->start_rev > 0 ? w->start_rev - 1 : h->revision;
		w->have_rev = true;
	}
	w->c->wbackoff = CL_BACKOFF_MIN_MS;
}

static void on_events(struct cairn_watch *w, const Etcdserverpb__WatchResponse *m,
		      const struct cairn_header *h)
{
	struct cairn_client *c = w->c;
	struct cairn_event *evs = NULL;
	size_t n = 0;
	if (m->n_events > 0) {
		evs = cl_arena_alloc(&c->dec, m->n_events * sizeof(*evs));
		if (evs == NULL)
			return;
	}
	for (size_t i = 0; i < m->n_events; i++) {
		const Mvccpb__Event *e = m->events[i];
		if (e->kv == NULL)
			continue;
		/* Already delivered before a resume. (Not "<= rev": a server may split one
		 * revision's events over two responses of the same stream.) */
		if (e->kv->mod_revision <= w->floor)
			continue;
		struct cairn_event *o = &evs[n++];
		o->type = e->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ? CAIRN_EVENT_DELETE
									: CAIRN_EVENT_PUT;
		cl_kv(&o->kv, e->kv);
		o->prev_kv = NULL;
		if (e->prev_kv != NULL) {
			struct cairn_kv *p = cl_arena_alloc(&c->dec, sizeof(*p));
			if (p != NULL) {
				cl_kv(p, e->prev_kv);
				o->prev_kv = p;
			}
		}
	}
	if (m->n_events > 0 && n == 0)
		return; /* only repeats */
	if (n > 0) {
		w->rev = evs[n - 1].kv.mod_revision;
		w->have_rev = true;
	} else if (h->revision > w->rev) {
		/* A progress notification: nothing up to here is left to come. */
		w->rev = h->revision;
		w->have_rev = true;
	}
	struct cairn_watch_batch b = {0};
	b.header = *h;
	b.events = evs;
	b.n_events = n;
	b.status.message = "";
	b.status.endpoint = cl_conn_endpoint(w->cn);
	w->cb(w->data, w, &b);
}

static void stream_on_message(struct net_grpc_ccall *call, const uint8_t *data, size_t len,
			      void *user)
{
	struct cl_conn *cn = user;
	struct cairn_client *c = cn->c;
	(void)call;
	if (c->closing)
		return;
	Etcdserverpb__WatchResponse *m = etcdserverpb__watch_response__unpack(&c->dec.pb, len, data);
	if (m == NULL) {
		cl_arena_reset(&c->dec);
		return;
	}
	struct cairn_header h;
	cl_header(&h, m->header);
	if (m->created) {
		on_created(cn, m, &h);
	} else {
		struct cairn_watch *w = cl_map_get(&cn->wmap, m->watch_id);
		if (w != NULL && !w->finished) {
			if (m->canceled) {
				bool compacted = m->compact_revision > 0;
				const char *msg = compacted ? CL_COMPACTED_MSG : m->cancel_reason;
				finish_now(w, compacted ? CAIRN_OUT_OF_RANGE : CAIRN_CANCELLED, msg,
					   m->compact_revision, &h);
			} else {
				on_events(w, m, &h);
			}
		}
	}
	cl_arena_reset(&c->dec);
}

void cl_watch_close_all(struct cairn_client *c)
{
	for (size_t i = 0; i < c->n_conns; i++) {
		struct cl_conn *cn = &c->conns[i];
		if (cn->wcall != NULL)
			net_grpc_ccall_cancel(cn->wcall);
		cn->wcall = NULL;
		/* Pending ones first, so that stream_lost() hands them back below. */
		stream_lost(cn);
	}
	while (!cl_list_empty(&c->wpending)) {
		struct cairn_watch *w = CL_CONTAINER(c->wpending.next, struct cairn_watch, link);
		finish_deferred(w, CAIRN_CANCELLED, "client is closing");
	}
}

int cairn_watch(struct cairn_client *c, const uint8_t *key, size_t key_len,
		const struct cairn_watch_opts *opts, cairn_watch_cb cb, void *data,
		struct cairn_watch **out)
{
	static const struct cairn_watch_opts defaults;
	const struct cairn_watch_opts *o = opts != NULL ? opts : &defaults;
	if (out != NULL)
		*out = NULL;
	if (c == NULL || cb == NULL || key == NULL || key_len == 0 || key_len > CL_MAX_KEY ||
	    (o->range_end == NULL) != (o->range_end_len == 0) || o->range_end_len > CL_MAX_KEY ||
	    o->start_revision < 0)
		return CAIRN_EINVAL;
	if (c->closing)
		return CAIRN_ECLOSED;
	struct cairn_watch *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return CAIRN_ENOMEM;
	w->key = malloc(key_len + o->range_end_len);
	if (w->key == NULL) {
		free(w);
		return CAIRN_ENOMEM;
	}
	memcpy(w->key, key, key_len);
	w->key_len = key_len;
	if (o->range_end_len > 0) {
		w->end = w->key + key_len;
		memcpy(w->end, o->range_end, o->range_end_len);
		w->end_len = o->range_end_len;
	}
	w->c = c;
	w->cb = cb;
	w->data = data;
	w->prev_kv = o->prev_kv;
	w->progress_notify = o->progress_notify;
	w->no_put = o->no_put;
	w->no_delete = o->no_delete;
	w->start_rev = o->start_revision;
	cl_list_init(&w->link);
	cl_list_push(&c->wpending, &w->link);
	place_pending(c);
	if (out != NULL)
		*out = w;
	return 0;
}

void cairn_watch_cancel(struct cairn_watch *w)
{
	if (w == NULL || w->finished)
		return;
	struct cl_conn *cn = w->cn;
	if (cn != NULL && w->in_map)
		send_cancel(cn, w->id);
	finish_deferred(w, CAIRN_CANCELLED, "watch cancelled");
}

int64_t cairn_watch_revision(const struct cairn_watch *w)
{
	if (w == NULL || !w->have_rev)
		return 0;
	return w->rev;
}
