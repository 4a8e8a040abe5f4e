/* gossip_store.h: the Raft leader writes the gossip view into the store, under
 * /cairn/members/<name>, as Consul's leader reconciles Serf into its catalog. */
#ifndef CAIRN_SERVER_GOSSIP_STORE_H
#define CAIRN_SERVER_GOSSIP_STORE_H

#include "gossip.h"

struct srv_member;

/* The prefix schedulers watch. */
#define GOSSIP_STORE_PREFIX "/cairn/members/"

/* One change of the local gossip view (loop thread). Acted on only by the leader. */
void gossip_store_event(struct srv_member *m, const struct gossip_event *ev);
/* Every member tick (loop thread): a full sweep when this member has just become the leader,
 * and periodically while it leads. */
void gossip_store_tick(struct srv_member *m);
/* Release what the reconciler holds (member teardown). */
void gossip_store_free(struct srv_member *m);

#endif
