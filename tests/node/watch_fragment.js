// watch_fragment.js: a revision whose events pass the request size limit (etcd's
// --max-request-bytes, 1.5 MiB by default) reaches a watcher that asked for fragments in several
// responses, fragment=true on all but the last, and one that did not in a single response; the
// events of a Txn arrive together and in order.
//
//   node tests/node/watch_fragment.js <host:port>
'use strict';
const L = require('./watch_lib.js');
const { b, eq, check } = L;

const done = L.deadline(60000, 'watch_fragment');
const N = 10, SIZE = 140000; // one Txn of 1.4 MB; with prev_kv its events carry 2.8 MB

function txn(c, tag) {
	const success = [];
	for (let i = 0; i < N; i++)
		success.push({ request_put: { key: b(`frag/k${i}`), value: Buffer.alloc(SIZE, tag) } });
	return L.retry(() => L.unary(c.kv, 'Txn', { compare: [], success, failure: [] }));
}

// Reads one logical response of watcher id: responses until one without fragment.
async function logical(s, id, what) {
	const parts = [];
	for (;;) {
		const r = await s.must(what, 10000);
		eq(r.watch_id, String(id), `${what}: watch id`);
		parts.push(r);
		if (!r.fragment)
			return parts;
		check(parts.length < 100, `${what}: endless fragments`);
	}
}

async function main() {
	const c = L.clients(process.argv[2]);
	const sf = new L.Stream(c), sw = new L.Stream(c);
	sf.create({ key: b('frag/'), range_end: b('frag0'), fragment: true, prev_kv: true, watch_id: 1 });
	sw.create({ key: b('frag/'), range_end: b('frag0'), prev_kv: true, watch_id: 2 });
	eq((await sf.must('create fragmenting')).created, true, 'created (fragment)');
	eq((await sw.must('create whole')).created, true, 'created (whole)');

	const t1 = await txn(c, 'a');
	const rev1 = t1.header.revision;
	// 1.4 MB: under the limit, one response each
	let p = await logical(sf, 1, 'first txn, fragment watcher');
	eq(p.length, 1, 'a response under the limit is not fragmented');
	eq(p[0].events.length, N, 'every event of the txn in one response');
	p = await logical(sw, 2, 'first txn, whole watcher');
	eq([p.length, p[0].events.length], [1, N], 'whole watcher: one response');

	const t2 = await txn(c, 'b');
	const rev2 = t2.header.revision;
	p = await logical(sf, 1, 'second txn, fragment watcher');
	check(p.length >= 2, `expected fragments, got ${p.length} response(s)`);
	const evs = [].concat(...p.map((r) => r.events));
	eq(evs.map((e) => e.kv.key.toString()), [...Array(N).keys()].map((i) => `frag/k${i}`),
		'fragments hold every event once, in order');
	for (const e of evs) {
		eq(e.kv.mod_revision, rev2, 'event revision');
		check(e.prev_kv && e.prev_kv.mod_revision === rev1 && e.prev_kv.value.length === SIZE,
			'prev_kv of each event');
	}
	for (const r of p.slice(0, -1))
		check(r.events.length > 0 && r.fragment, 'fragment=true on all but the last');
	p = await logical(sw, 2, 'second txn, whole watcher');
	eq([p.length, p[0].events.length], [1, N], 'without fragment: one response');
	sf.end();
	sw.end();
	done();
	console.log('watch_fragment: ok');
	process.exit(0);
}

main().catch((e) => L.fail(e.stack || String(e)));
