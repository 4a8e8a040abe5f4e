// watch_random.js: many watchers of random keys, ranges, prefixes, filters, prev_kv and start
// revisions on a few streams (and on two members), while random puts, deletes, range deletes
// and txns are written. Every watcher must see exactly the events of the full history (read by
// one more watcher of every key) that fall in its keys and filters, from its start revision,
// in order, with the events of one revision never split over two responses.
//
//   node tests/node/watch_random.js <host:port> [<another member's host:port>] [seed]
'use strict';
const L = require('./watch_lib.js');
const { b, fail, check } = L;

const done = L.deadline(120000, 'watch_random');
let seed = Number(process.argv[4] || Date.now() % 100000);
function rnd(n) {
	// xorshift32: the seed printed on failure replays the same choices
	seed ^= seed << 13;
	seed >>>= 0;
	seed ^= seed >>> 17;
	seed ^= seed << 5;
	seed >>>= 0;
	return seed % n;
}
const KEYS = 12;
const key = (i) => `rnd/${String.fromCharCode(97 + i)}`; // rnd/a .. rnd/l

function spec(rev0) {
	const w = { prev_kv: rnd(2) === 1, filters: [], start: 0 };
	switch (rnd(4)) {
	case 0:
		w.key = key(rnd(KEYS));
		w.end = '';
		break;
	case 1: {
		const x = rnd(KEYS), y = x + 1 + rnd(KEYS - x);
		w.key = key(x);
		w.end = y < KEYS ? key(y) : 'rnd0';
		break;
	}
	case 2:
		w.key = 'rnd/';
		w.end = 'rnd0';
		break;
	default:
		w.key = key(rnd(KEYS));
		w.end = '\0';
	}
	if (rnd(4) === 0)
		w.filters.push('NOPUT');
	else if (rnd(4) === 0)
		w.filters.push('NODELETE');
	if (rnd(2) === 0)
		w.start = rev0 + 1 + rnd(5);
	return w;
}

function covers(w, k) {
	if (w.end === '')
		return k === w.key;
	if (w.end === '\0')
		return k >= w.key;
	return k >= w.key && k < w.end;
}

async function main() {
	const eps = [process.argv[2], process.argv[3] || process.argv[2]];
	const cs = eps.map((e) => L.clients(e));
	const kv = cs[0].kv;
	const first = await L.retry(() => L.unary(kv, 'Put', { key: b('rnd/start'), value: b('x') }));
	const rev0 = Number(first.header.revision);
	console.log(`watch_random: seed ${seed}`);

	// the reference: every key from rev0 + 1, with prev_kv
	const ref = new L.Stream(cs[0]);
	ref.create({ key: b('rnd/'), range_end: b('rnd0'), start_revision: rev0 + 1, prev_kv: true, watch_id: 1 });
	const watchers = [];
	const streams = [];
	for (let s = 0; s < 4; s++) {
		const st = new L.Stream(cs[s % 2]);
		streams.push(st);
		for (let i = 0; i < 40; i++) {
			const w = spec(rev0);
			w.id = 100 + s * 100 + i;
			w.stream = st;
			w.got = [];
			w.revsSeen = new Set();
			watchers.push(w);
			st.create({ key: b(w.key), range_end: b(w.end), start_revision: w.start, prev_kv: w.prev_kv,
				filters: w.filters, watch_id: w.id });
		}
	}
	// every create answered before the first write: a watch from 0 starts at rev0 + 1
	for (const st of streams)
		for (let i = 0; i < 40; i++) {
			const r = await st.must(`created (seed ${seed})`);
			check(r.created && !r.canceled, `seed ${seed}: create: ${JSON.stringify(L.brief(r))}`);
		}
	// writes, a few at a time
	let last = rev0;
	for (let i = 0; i < 300; i += 3) {
		const ops = [];
		for (let k = 0; k < 3; k++) {
			const r = rnd(10), x = rnd(KEYS);
			let p;
			if (r < 5) {
				p = L.unary(kv, 'Put', { key: b(key(x)), value: b(`v${i + k}`) });
			} else if (r < 7) {
				p = L.unary(kv, 'DeleteRange', { key: b(key(x)), range_end: b('') });
			} else if (r < 8) {
				p = L.unary(kv, 'DeleteRange', { key: b(key(x)), range_end: b(key(Math.min(KEYS - 1, x + 3))) });
			} else {
				const n = 1 + rnd(4), success = [];
				for (let j = 0; j < n; j++)
					success.push({ request_put: { key: b(key((x + j) % KEYS)), value: b(`t${i + k}.${j}`) } });
				p = L.unary(kv, 'Txn', { compare: [], success, failure: [] });
			}
			ops.push(p);
		}
		for (const r of await Promise.all(ops))
			last = Math.max(last, Number(r.header.revision));
	}
	// the reference history up to the last write
	const hist = [];
	while (hist.length === 0 || Number(hist[hist.length - 1].kv.mod_revision) < last) {
		const r = await ref.must(`reference history (seed ${seed})`, 10000);
		if (r.created)
			continue;
		hist.push(...r.events);
	}
	const fmt = (e, prev) => `${e.type} ${e.kv.key} ${e.kv.value} ${e.kv.mod_revision}` +
		(prev ? ` prev=${e.prev_kv ? e.prev_kv.value : '-'}` : '');
	for (const w of watchers) {
		w.want = hist.filter((e) => covers(w, e.kv.key.toString()) &&
			Number(e.kv.mod_revision) >= (w.start || rev0 + 1) &&
			!(e.type === 'PUT' && w.filters.includes('NOPUT')) &&
			!(e.type === 'DELETE' && w.filters.includes('NODELETE'))).map((e) => fmt(e, w.prev_kv));
	}
	// read every stream until each watcher has its count
	const byId = new Map(watchers.map((w) => [String(w.id), w]));
	for (const st of streams) {
		const mine = watchers.filter((w) => w.stream === st);
		while (mine.some((w) => w.got.length < w.want.length)) {
			const r = await st.next(10000);
			if (r === null) {
				const w = mine.find((x) => x.got.length < x.want.length);
				fail(`seed ${seed}: watcher ${JSON.stringify({ key: w.key, end: w.end, start: w.start, f: w.filters })} ` +
					`got ${w.got.length} of ${w.want.length} events; next wanted ${w.want[w.got.length]}`);
			}
			if (r.created) {
				check(!r.canceled, `seed ${seed}: create refused: ${r.cancel_reason}`);
				continue;
			}
			const w = byId.get(r.watch_id);
			check(w !== undefined, `seed ${seed}: response for unknown watch ${r.watch_id}`);
			const revs = new Set(r.events.map((e) => e.kv.mod_revision));
			for (const rv of revs)
				check(!w.revsSeen.has(rv), `seed ${seed}: revision ${rv} split or repeated for watch ${w.id}`);
			for (const rv of revs)
				w.revsSeen.add(rv);
			w.got.push(...r.events.map((e) => fmt(e, w.prev_kv)));
		}
	}
	for (const w of watchers) {
		const g = JSON.stringify(w.got), x = JSON.stringify(w.want);
		if (g !== x)
			fail(`seed ${seed}: watcher ${JSON.stringify({ key: w.key, end: w.end, start: w.start, f: w.filters, prev: w.prev_kv })}:\n got  ${g}\n want ${x}`);
	}
	for (const st of streams)
		await st.none(`seed ${seed}: nothing more`, 300);
	done();
	console.log(`watch_random: ok (${watchers.length} watchers, ${hist.length} events)`);
	process.exit(0);
}

main().catch((e) => fail(`seed ${seed}: ` + (e.stack || String(e))));
