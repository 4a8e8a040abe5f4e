/* srv_gossip.h: gossip on a libuv loop: the SWIM core (gossip/gossip.h) driven by a timer, over
 * the UDP and TCP transport (net/gossip_net.h), with the key file and the tags of the
 * configuration. Used by a server member and by `cairn agent` alike.
 *
 * Tags travel as the core's opaque metadata in one format: each tag is "key=value" followed by
 * '\n', in the order given (keys hold no '=' and no '\n', values no '\n').
 */
#ifndef CAIRN_SERVER_SRV_GOSSIP_H
#define CAIRN_SERVER_SRV_GOSSIP_H

#include <stdbool.h>
#include <stdint.h>

#include "gossip.h"

struct srv_gossip;

/* The core, to read the view (gossip_member_at() ...). */
const struct gossip *srv_gossip_core(const struct srv_gossip *sg);
/* Now on the clock the core runs on (milliseconds, monotonic). */
uint64_t srv_gossip_now(const struct srv_gossip *sg);
/* True once this member's view can be trusted to be whole: it has merged a push-pull with
 * another member, or it was started with nobody to join. Until then a member missing from the
 * view may simply not be known yet. */
bool srv_gossip_settled(const struct srv_gossip *sg);

#endif
