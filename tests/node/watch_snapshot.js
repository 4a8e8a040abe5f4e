// watch_snapshot.js: a watcher on a follower that falls behind the leader's log. The follower is
// stopped (SIGSTOP) while 800 puts go through another member, so that it is brought up to date by
// a snapshot when continued (with --snapshot-count 100 the leader keeps only 100 entries behind
// each snapshot); its watcher, on the same stream all along, then gets every put once, in order.
//
//   node tests/node/watch_snapshot.js <follower host:port> <other host:port> <follower pid>
'use strict';
const L = require('./watch_lib.js');
const { b, eq } = L;

const done = L.deadline(90000, 'watch_snapshot');
const PUTS = 800, AT_ONCE = 2; // more appends than the leader keeps in flight (256)

async function main() {
	const [fep, oep, pidArg] = process.argv.slice(2);
	const pid = Number(pidArg);
	const cf = L.clients(fep), co = L.clients(oep);
	const put = (k, v) => L.retry(() => L.unary(co.kv, 'Put', { key: b(k), value: b(v) }));
	const first = await put('snap/start', 'x');
	const s = new L.Stream(cf);
	s.create({ key: b('snap/'), range_end: b('snap0'), start_revision: Number(first.header.revision) + 1, watch_id: 9 });
	eq((await s.must('create on the follower')).created, true, 'created');
	process.kill(pid, 'SIGSTOP');
	let revs = [];
	try {
		for (let i = 0; i < PUTS; i += AT_ONCE) {
			const group = [];
			for (let k = i; k < i + AT_ONCE; k++)
				group.push(put(`snap/k${k}`, `v${k}`));
			for (const r of await Promise.all(group))
				revs.push(Number(r.header.revision));
		}
	} finally {
		process.kill(pid, 'SIGCONT');
	}
	revs = revs.sort((x, y) => x - y);
	const got = [];
	while (got.length < PUTS) {
		const r = await s.must(`events after ${got.length}`, 30000);
		eq(r.canceled, false, `not cancelled (${r.cancel_reason})`);
		for (const e of r.events)
			got.push(Number(e.kv.mod_revision));
	}
	eq(got, revs, 'every put once, in order, across the snapshot');
	await s.none('after the last put', 1000);
	s.end();
	done();
	console.log('watch_snapshot: ok');
	process.exit(0);
}

main().catch((e) => L.fail(e.stack || String(e)));
