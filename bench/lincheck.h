/* lincheck.h: a linearizability checker for key-value histories recorded by
 * cairn-bench, over a model of single keys with compare-and-swap and
 * multi-key transactions.
 *
 * A history is the set of operations clients issued, each with the time it
 * was called and the time its answer came back (or "unknown" when the client
 * gave up: timeout, lost connection). The history is linearizable when every
 * operation can be given one instant between its call and its return at
 * which it took effect atomically, such that replaying them in that order on
 * the model yields every output the clients saw.
 *
 * Algorithm: Wing & Gong's search over the orders that respect real time,
 * with Lowe's memoisation of (set of operations linearized, model state)
 * pairs, the method of Knossos and Porcupine, in Lowe's "just in time" form
 * (an op is linearized when a return forces it). The history is first split
 * into independent parts: operations that touch a common key are joined
 * (union-find over keys, so a transaction joins all of its keys), each
 * connected component is checked alone with the values of its keys as the
 * model state (linearizability is compositional: Herlihy & Wing, 1990).
 * docs/architecture.md, "How cairn-bench checks linearizability", has the
 * details and the bounds.
 *
 * Nothing here does I/O or uses a clock other than CLOCK_MONOTONIC for the
 * time budget. */
#ifndef CAIRN_BENCH_LINCHECK_H
#define CAIRN_BENCH_LINCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* lin_op.ret when the client does not know whether the operation happened:
 * it may have taken effect at any instant after its call, or never. */
#define LIN_RETURN_UNKNOWN UINT64_MAX

enum lin_step_kind { LIN_GET = 0, LIN_PUT = 1, LIN_DELETE = 2 };

/* A comparison of a transaction: holds when the key's current value equals
 * `value` (0: the key is absent). */
struct lin_cmp {
	uint32_t key;
	uint64_t value;
};

/* One step of a branch. PUT: the value written (non-zero). GET: the value
 * read (0: absent). DELETE: `value` unused; the key becomes absent. */
struct lin_step {
	uint8_t kind; /* enum lin_step_kind */
	uint32_t key;
	uint64_t value;
};

/* One operation: if every cmp holds, the `then` steps run in order, else the
 * `els` steps do, atomically. Values are opaque 64-bit ids, 0 meaning absent,
 * so a workload writes each value at most once if it wants every read to be
 * traceable to its write.
 *   get:  {no cmps, then = [GET k v], succeeded = true}
 *   put:  {no cmps, then = [PUT k v], succeeded = true}
 *   CAS:  {cmps = [k == old], then = [PUT k new], els = [GET k cur] or none}
 *   txn:  several cmps and steps over several keys. */
struct lin_op {
	uint32_t client; /* who issued it (for the report) */
	uint64_t call, ret; /* monotonic ns; ret == LIN_RETURN_UNKNOWN when the
	                       outcome is unknown */
	const struct lin_cmp *cmps;
	uint32_t n_cmps; /* all must hold for the then-branch */
	const struct lin_step *then;
	uint32_t n_then;
	const struct lin_step *els;
	uint32_t n_els;
	/* The branch that ran: then when true, els when false. Ignored when ret
	 * is unknown (the outputs of such an op are not checked). The GET
	 * outputs are the values in that branch's steps. */
	bool succeeded;
};

/* A recorded history, owned by its creator. Not thread-safe: a recorder with
 * several threads serialises lin_history_add (or keeps one per thread and
 * adds them into one at the end). */
struct lin_history;

/* Allocate an empty history into *out. 0, or -ENOMEM. */
int lin_history_new(struct lin_history **out);
/* Free the history and every op copied into it. NULL is allowed. */
void lin_history_free(struct lin_history *h);
/* Append a copy of *op (and of its cmps/then/els arrays); the caller keeps
 * ownership of op. 0, -ENOMEM, or -EINVAL (ret < call, a step kind out of
 * range, a PUT of value 0, more than LIN_MAX_STEPS cmps or steps in a
 * branch, or more than LIN_MAX_OPS ops). */
int lin_history_add(struct lin_history *h, const struct lin_op *op);
size_t lin_history_len(const struct lin_history *h);

/* Bounds of one operation and of a history. */
#define LIN_MAX_STEPS 1024u /* cmps, then-steps, else-steps: each at most */
#define LIN_MAX_OPS (64u * 1024u * 1024u)

struct lin_check_opts {
	uint64_t max_ms; /* time budget for the whole check (search and
	                    shrinking); 0: 60000 */
	size_t max_states; /* memo bound: (linearized set, state) pairs kept
	                      at once (16 bytes each, in a table at most
	                      twice as large); 0: 4M. Past it the search goes
	                      on without remembering, bounded by max_ms. */
	/* Name of a key in the report; NULL: "k<id>". The returned string is
	 * only read during the call. */
	const char *(*key_name)(uint32_t key, void *data);
	void *data;
};

enum lin_verdict {
	LIN_OK = 0,
	LIN_VIOLATION = 1,
	LIN_UNKNOWN = 2 /* a budget ran out before an answer */
};

struct lin_result {
	int verdict; /* enum lin_verdict */
	size_t n_ops; /* ops in the history */
	size_t n_partitions; /* connected components (ops sharing keys) */
	size_t n_checked_partitions; /* components fully decided */
	size_t failing_partition_ops; /* ops in the first failing component
	                                 (before shrinking); 0 if none */
	/* malloc'd text, NULL when the verdict is LIN_OK. For a violation: the
	 * smallest failing sub-history found, one op per line with its client,
	 * call and return times relative to the first call in it, the op and its
	 * outputs, then the longest linearizable prefix of it. For LIN_UNKNOWN:
	 * which component and which bound ran out. Free with lin_result_free. */
	char *report;
	size_t report_ops; /* ops in the reported sub-history; 0 if none */
	size_t n_set_aside; /* ops of unknown outcome whose writes nothing
	                       observed: they need no place in the order */
};

/* Check the history. opts may be NULL (all defaults). Fills *out (whatever
 * the verdict) and returns 0, or -ENOMEM (then *out holds nothing to free).
 * The history is only read. Never runs much past opts->max_ms. */
int lin_check(const struct lin_history *h, const struct lin_check_opts *opts,
              struct lin_result *out);
/* Free what lin_check put in *r and zero it; a zeroed struct is allowed. */
void lin_result_free(struct lin_result *r);

/* The verdict's name: "ok", "violation", "unknown". */
const char *lin_verdict_name(int verdict);

#endif /* CAIRN_BENCH_LINCHECK_H */
