/* gsim.h: what the files of the deterministic gossip simulator share (tests/sim/gossip/).
 *
 * One process, one simulated clock in milliseconds, one seeded generator per purpose and one
 * event queue drive hundreds to thousands of gossip cores (gossip/gossip.h) through the
 * loop contract of that header. The network between them (loss, latency, partitions), the
 * members' lives (stalls, crashes, joins, graceful leaves, metadata changes) and every
 * measurement belong to the simulator; the cores only see packets, push-pull states and time.
 * A struct gsim holds the whole of one run: nothing is static or global, so one seed and one
 * command line replay a run exactly.
 *
 * Files by role:
 *   gsim_main.c      command line, seeds, the determinism check, the replay line
 *   gsim_run.c       one run: the step function, the phases, members and their loop contract,
 *                    the network and push-pull streams
 *   gsim_observe.c   the view each core reported, crash and update records, false positives,
 *                    convergence, the checks and the report
 *   gsim_scenario.c  scenarios: their parameters and their fault schedule
 *   gsim_util.c      the generator, the event queue, hashing, percentiles
 */
#ifndef CAIRN_GSIM_H
#define CAIRN_GSIM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "gossip.h"
#include "sim_rng.h"

/* ------------------------------------------------------------------------------------------ */
/* Limits. Every table and queue of a run is bounded by one of these.                         */

#define GSIM_MAX_MEMBERS 20000u   /* slots over one run: initial members and joiners */
#define GSIM_MAX_QUEUE (1u << 24) /* events pending; more is a packet storm */
#define GSIM_HELD_MAX 1024u       /* datagrams queued for a stalled member (its socket buffer) */
#define GSIM_MAX_STREAMS 128u     /* push-pull streams one member runs at once (gossip_net.h) */
#define GSIM_STREAM_TIMEOUT_MS 10000u /* a push-pull that gets no answer fails after this */
#define GSIM_PUMP_ROUNDS 1000u    /* updates taken back to back for one event */
#define GSIM_MAX_RECORDS 4096u    /* crashes and updates measured in one run */
#define GSIM_STALL_HIST 4u        /* stalls remembered per member (false-positive causes) */
#define GSIM_SAMPLE_MS 250u       /* the measurement and check period */
#define GSIM_PORT 7946u
#define GSIM_WHY 1024

/* What a datagram costs on the wire beyond its payload, for the traffic figures: the seal
 * (net/gossip_seal.h) of an encrypted packet without a label, flags byte + 12-byte nonce +
 * 16-byte GCM tag = 29 bytes; IP and UDP headers are not counted. A push-pull frame adds its
 * 4-byte length. */
#define GSIM_SEAL_OVERHEAD 29u
#define GSIM_FRAME_OVERHEAD (4u + GSIM_SEAL_OVERHEAD)

/* ------------------------------------------------------------------------------------------ */
/* Generator and queue (gsim_util.c).                                                         */

/* The generator and the hash are tests/sim/lib/sim_rng.h, shared with raft-sim. */
/* True with probability bp / 10000 (basis points). */
bool gsim_rng_bp(struct sim_rng *r, uint32_t bp);
uint64_t gsim_hash_u64(uint64_t h, uint64_t v);

enum gsim_ev_kind {
	GSIM_EV_START = 1, /* a member's core starts (and joins through a live member) */
	GSIM_EV_TICK,      /* a core's deadline (gossip_next_deadline) */
	GSIM_EV_DELIVER,   /* a datagram arrives */
	GSIM_EV_PP_REQ,    /* a push-pull's initiator state reaches the acceptor */
	GSIM_EV_PP_RESP,   /* the acceptor's answer reaches the initiator */
	GSIM_EV_PP_FAIL,   /* the initiator's push-pull failed (timeout, refused) */
	GSIM_EV_RESUME,    /* a stalled member resumes */
	GSIM_EV_JOIN_RETRY,/* a joiner whose join push-pull failed tries another member */
	GSIM_EV_FAULT,     /* the scenario's fault schedule acts (sub: which stream) */
	GSIM_EV_HEAL,      /* the partition heals */
	GSIM_EV_SAMPLE,    /* measurements and checks, every GSIM_SAMPLE_MS */
	GSIM_EV_KIND_COUNT
};

struct gsim_event {
	uint64_t at;  /* simulated ms */
	uint64_t seq; /* scheduling order: breaks ties in time */
	uint32_t kind;
	uint32_t slot;  /* the member the event happens to */
	uint32_t from;  /* sending member (DELIVER, PP_*) */
	uint32_t sub;   /* PP: join flag; FAULT: the fault stream */
	uint64_t gen;   /* TICK: the tick token; others: the member's incarnation of the sim */
	uint32_t len;
	uint8_t *data;  /* malloc()ed payload or state, owned by the event */
};

struct gsim_queue {
	struct gsim_event *ev;
	size_t len, cap;
	uint64_t seq;
};

/* 0, or -1 when the queue is full (GSIM_MAX_QUEUE) or memory runs out. */
int gsim_queue_push(struct gsim_queue *q, struct gsim_event e);
bool gsim_queue_pop(struct gsim_queue *q, struct gsim_event *out);
void gsim_queue_free(struct gsim_queue *q);

/* Percentile p (0..100) of n values, sorting them in place; 0 when n is 0. */
double gsim_percentile(uint64_t *v, size_t n, double p);
double gsim_mean(const uint64_t *v, size_t n);

/* ------------------------------------------------------------------------------------------ */
/* Parameters (gsim_scenario.c fills them from the scenario, the command line overrides).     */

enum gsim_scenario {
	GSIM_SC_STEADY,    /* crashes and metadata updates on a calm or lossy network */
	GSIM_SC_STALL,     /* members stall for seconds, then resume */
	GSIM_SC_PARTITION, /* a minority is cut off, then healed */
	GSIM_SC_CHURN,     /* joins, graceful leaves and crashes */
	GSIM_SC_MIXED,     /* all of the above at once */
	GSIM_SC_COUNT
};

enum gsim_stall_mode {
	GSIM_STALL_QUEUE = 0, /* inbound datagrams wait in the socket buffer (bounded) */
	GSIM_STALL_DROP = 1,  /* inbound datagrams are lost while stalled */
	GSIM_STALL_EITHER = 2 /* drawn per stall */
};

struct gsim_params {
	uint32_t scenario;
	uint32_t members;     /* started at the beginning */
	uint64_t duration_ms; /* fault phase */
	uint32_t loss_bp;     /* datagram loss, basis points */
	uint32_t latency_ms;  /* one-way base latency */
	uint32_t jitter_ms;   /* plus uniform 0..jitter */
	uint64_t boot_ms;     /* members start spread over this */
	/* Fault schedule: mean gap between actions of each stream, 0 = never. Gaps are uniform in
	 * [mean/2, 3*mean/2]. */
	uint64_t crash_every_ms, update_every_ms, stall_every_ms, part_every_ms;
	uint64_t join_every_ms, leave_every_ms;
	uint64_t stall_min_ms, stall_max_ms;
	uint32_t stall_mode;
	uint64_t part_min_ms, part_max_ms;
	uint32_t part_pct_max; /* largest cut-off minority, percent of live members */
	uint32_t min_live_pct; /* crashes and leaves stop below this share of members */
	/* Checks. */
	uint32_t fp_check_loss_bp; /* plain false positives fail the run at loss up to this */
	uint64_t quiet_max_ms; /* 0: derived from the configuration */
	uint32_t max_slots;
	/* The cores' configuration; defaults of gossip_config_init. */
	uint32_t probe_interval_ms, probe_timeout_ms, suspicion_mult, suspicion_max_mult;
	uint32_t gossip_interval_ms, retransmit_mult, pushpull_interval_ms;
};

const char *gsim_scenario_name(uint32_t sc);
int gsim_scenario_parse(const char *name);
/* Defaults of a scenario for n members. */
void gsim_scenario_defaults(struct gsim_params *p, uint32_t scenario, uint32_t members);

/* ------------------------------------------------------------------------------------------ */
/* Members.                                                                                   */

enum gsim_status {
	GSIM_OFF = 0,   /* slot not started yet */
	GSIM_UP,        /* running */
	GSIM_STALLED,   /* running but not processing anything */
	GSIM_LEAVING,   /* gossip_leave() called, still running until the news is out */
	GSIM_LEFT,      /* left and stopped */
	GSIM_CRASHED,   /* stopped without a word */
};

struct gsim_stall {
	uint64_t start, end; /* end UINT64_MAX while stalled */
};

struct gsim_member {
	uint32_t slot;
	char name[16];
	struct gossip_addr addr;
	struct gossip *g; /* NULL unless UP, STALLED or LEAVING */
	uint32_t status;
	uint64_t gen;        /* bumped when the core stops: its events still queued are dropped */
	bool joined;         /* its join push-pull merged (or it is the first member) */
	uint64_t started_at; /* when its core started */
	uint64_t joined_at;
	uint64_t stopped_at; /* crash or leave */
	uint64_t tick_token; /* the TICK event that counts; others are stale */
	uint64_t tick_at;    /* when that one fires; UINT64_MAX: none */
	uint32_t part;       /* partition group: 0 is the majority side */
	uint64_t minority_until; /* last time it was cut off from the majority; UINT64_MAX: now */
	bool ever_minority;
	struct gsim_stall stalls[GSIM_STALL_HIST]; /* newest first */
	uint32_t n_stalls;
	bool stall_drop;     /* this stall loses inbound datagrams */
	struct gsim_event *held; /* datagrams and push-pull answers waiting for the resume */
	uint32_t n_held, cap_held, n_held_packets;
	uint32_t streams;    /* push-pulls this member started that are not over */
	uint32_t join_tries;
	uint64_t leave_deadline;
	/* Traffic it sent inside the measurement window. */
	uint64_t udp_bytes, udp_packets, pp_bytes, pp_count;
	struct gossip_stats last; /* gossip_stats() when it stopped or at the end */
	bool zombie_ever;     /* declared dead while alive at least once */
	uint64_t zombie_until; /* when it last refuted that; UINT64_MAX: not yet */
	uint32_t live_seen;   /* others this core reports alive or suspect */
};

/* ------------------------------------------------------------------------------------------ */
/* Records: a crash whose detection, or an update whose spread, is being measured.            */

enum gsim_rec_kind { GSIM_REC_CRASH = 1, GSIM_REC_UPDATE = 2 };

struct gsim_record {
	uint32_t kind;
	uint32_t target;
	uint64_t t0;            /* crash or update */
	uint32_t incarnation;   /* update: the incarnation that carries it */
	bool done, dropped;
	bool measured;          /* inside the measurement window */
	uint64_t first_suspect; /* crash: first core to suspect it (UINT64_MAX: none yet) */
	uint64_t first_mark;    /* first core to mark it (dead, or the update seen) */
	uint64_t all_marked;    /* every live member marked it */
	uint64_t *mark;         /* per slot: when that core marked it; UINT64_MAX: not yet */
};

/* False-positive causes: the situation when a live member's death was first declared. */
enum gsim_fp_cause {
	GSIM_FP_PLAIN = 0,     /* nothing but loss and latency: the protocol's own error */
	GSIM_FP_STALL_SHORT,   /* the target stalled, shorter than half the minimum suspicion */
	GSIM_FP_STALL_LONG,    /* the target stalled long enough to be declared dead */
	GSIM_FP_OBSERVER,      /* the declaring member had itself stalled (its timers ran late) */
	GSIM_FP_PARTITION,     /* target or declarer was cut off from the majority */
	GSIM_FP_ZOMBIE,        /* the declarer is itself held dead after an excused incident */
	GSIM_FP_COUNT
};

/* ------------------------------------------------------------------------------------------ */
/* One run.                                                                                   */

enum gsim_phase {
	GSIM_PH_BOOT = 0, /* members start and join; waits for every core to see every member */
	GSIM_PH_WARM,     /* broadcast queues drain; then measurements start */
	GSIM_PH_FAULT,    /* the scenario's faults */
	GSIM_PH_QUIET,    /* faults stop; the view must converge */
	GSIM_PH_DONE
};

struct gsim_opts {
	bool verbose;
	const char *watch; /* with verbose: also trace every view change by or about this member */
	bool watch_packets; /* and every datagram it receives, decoded */
	FILE *out;
};

struct gsim_result {
	/* Durations in ms. */
	uint64_t *det_suspect, *det_first, *det_all; /* per crash */
	size_t n_det;
	uint64_t *upd_all; /* per update */
	size_t n_upd;
	uint64_t crashes, crashes_dropped, updates, updates_dropped;
	uint64_t fp_incidents[GSIM_FP_COUNT], fp_decls[GSIM_FP_COUNT];
	uint64_t dead_after_leave; /* members that left, marked dead rather than left */
	double member_hours;       /* live member time inside the measurement window */
	double udp_bps, udp_pps, pp_bps; /* per live member, payload bytes */
	uint64_t boot_ms, converge_ms, measure_ms;
	uint64_t joins, leaves, stalls, partitions;
	uint64_t packets, packets_lost, packets_cut, packets_held_dropped;
	uint64_t payload_bytes;             /* every datagram payload handed to the network */
	uint64_t core_packets_out, core_bytes_out; /* the same, as gossip_stats() counts them */
	uint64_t pushpulls, pushpulls_failed;
	uint64_t suspicions, refutations, deaths;
	uint32_t members_end, live_end;
	uint64_t events;
	uint64_t deadline_past; /* gossip_next_deadline() at or before now right after a tick */
};

struct gsim {
	const struct gsim_opts *opts;
	struct gsim_params p;
	uint64_t seed;
	uint64_t now;
	uint32_t phase;
	uint64_t phase_at;   /* when the current phase began */
	uint64_t measure_at; /* measurement window: [measure_at, measure_end) */
	uint64_t measure_end;
	uint64_t fault_end;
	uint64_t quiet_deadline;
	uint64_t next_view_check; /* quiet phase: the full table comparison costs n^2 lookups */
	struct gsim_queue q;
	struct sim_rng net_rng, fault_rng, pick_rng;
	struct gossip_config base_cfg;

	struct gsim_member *m;
	uint32_t n_slots;  /* slots used */
	uint32_t cap;      /* slots allocated (view matrix side) */
	uint8_t *view;     /* view[i * cap + j]: state of j in i's core (0 unknown) */
	uint32_t up_count; /* UP or STALLED or LEAVING */

	/* Timing derived from the configuration (see gsim_observe.c). */
	uint64_t susp_min_ms, susp_max_ms, fp_window_ms, detect_bound_ms, pushpull_ms;

	/* Partition. */
	bool partitioned;
	uint64_t partition_healed_at; /* 0: never */
	uint32_t loss_bp;       /* datagram loss now: p.loss_bp until the faults stop, then 0 */
	uint64_t loss_ended_at; /* UINT64_MAX while it lasts */

	/* Records. */
	struct gsim_record *rec;
	uint32_t n_rec;
	/* False-positive incidents: per target, the last incarnation declared dead while alive. */
	uint32_t *fp_inc;   /* per slot; UINT32_MAX: none */
	uint8_t *fp_cause;  /* per slot: the cause of that incident */
	uint32_t *pend_crash, *pend_update; /* per slot: its pending record; UINT32_MAX: none */
	uint32_t ticking;   /* the slot whose gossip_tick() is being pumped */

	/* Scratch for push-pulls copied out of an update. */
	struct gossip_pushpull *pp_scratch;
	size_t pp_cap;

	struct gsim_result r;
	uint64_t trace_hash;
	bool failed;
	char why[GSIM_WHY];
};

/* gsim_run.c */
int gsim_init(struct gsim *s, const struct gsim_opts *o, const struct gsim_params *p,
	      uint64_t seed);
void gsim_run(struct gsim *s);
void gsim_fini(struct gsim *s);
void gsim_fail(struct gsim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void gsim_trace(struct gsim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Schedule an event; on a full queue the run fails. */
void gsim_schedule(struct gsim *s, struct gsim_event e);
bool gsim_live(const struct gsim_member *m); /* UP or STALLED (not leaving) */
/* A random member that is UP, joined and not leaving; UINT32_MAX if none. */
uint32_t gsim_pick_up(struct gsim *s, uint32_t avoid);
/* Fault actions (gsim_run.c carries them out, gsim_scenario.c decides when). */
void gsim_crash(struct gsim *s, uint32_t slot);
void gsim_stall(struct gsim *s, uint32_t slot, uint64_t ms, bool drop);
void gsim_leave(struct gsim *s, uint32_t slot);
void gsim_update_meta(struct gsim *s, uint32_t slot);
uint32_t gsim_add_member(struct gsim *s); /* a new slot, started now; UINT32_MAX if full */
void gsim_partition(struct gsim *s, uint32_t pct, uint64_t ms);
void gsim_heal(struct gsim *s);

/* gsim_scenario.c */
void gsim_faults_start(struct gsim *s);
void gsim_fault(struct gsim *s, uint32_t stream);

/* gsim_observe.c */
int gsim_observe_init(struct gsim *s);
void gsim_observe_fini(struct gsim *s);
/* An event a core reported (the loop contract's u.events). */
void gsim_observe_event(struct gsim *s, uint32_t observer, const struct gossip_event *ev);
/* A member stopped (crash or leave): its view no longer counts. */
void gsim_observe_stopped(struct gsim *s, uint32_t slot);
void gsim_record_crash(struct gsim *s, uint32_t slot);
void gsim_record_update(struct gsim *s, uint32_t slot, uint32_t incarnation);
/* The periodic sample: completes records, checks bounds. */
void gsim_observe_sample(struct gsim *s);
/* True when every live member sees every member as the truth says; otherwise the first
 * disagreement is written to why (may be NULL). */
bool gsim_converged(struct gsim *s, char *why, size_t cap);
/* True while a crash or update record has not reached every live member; why says which. */
bool gsim_pending(struct gsim *s, char *why, size_t cap);
/* After convergence: the views agree with the cores' own tables (a violation otherwise) and
 * every core holds every live member at the incarnation it holds itself (false otherwise). */
bool gsim_check_views(struct gsim *s, char *why, size_t cap);
void gsim_observe_finish(struct gsim *s);
/* The summary: a few lines, the same for the same run. */
void gsim_report(struct gsim *s, FILE *f);
/* Slot of a member's name or address; UINT32_MAX if not one of ours. */
uint32_t gsim_slot_of_name(const struct gsim *s, const char *name);
uint32_t gsim_slot_of_addr(const struct gsim *s, const struct gossip_addr *a);

#endif
