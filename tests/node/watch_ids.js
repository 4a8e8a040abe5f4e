// watch_ids.js: watch ids chosen by the client and by the server, a duplicate id, an empty range,
// cancel (known and unknown ids), reuse of a cancelled id, the NOPUT and NODELETE filters, ranges
// ("\0" as range_end), prev_kv, a progress request, and a watch from a compacted revision, each as
// etcd 3.4 answers it.
//
//   node tests/node/watch_ids.js <host:port> [<another member's host:port>]
'use strict';
const L = require('./watch_lib.js');
const { b, eq, check } = L;

const done = L.deadline(60000, 'watch_ids');

const keysOf = (r) => r.events.map((e) => `${e.type} ${e.kv.key}`);

async function main() {
	const ep = process.argv[2];
	const c = L.clients(ep);
	const put = (k, v) => L.retry(() => L.unary(c.kv, 'Put', { key: b(k), value: b(v), prev_kv: false }));
	const del = (k, end) => L.unary(c.kv, 'DeleteRange', { key: b(k), range_end: b(end || '') });
	const base = await put('ids/seed', 'x');
	const rev0 = Number(base.header.revision);

	const s = new L.Stream(c);
	// client-chosen id
	s.create({ key: b('ids/a'), watch_id: 7 });
	let r = await s.must('create id 7');
	eq([r.watch_id, r.created, r.canceled], ['7', true, false], 'created response of id 7');
	check(Number(r.header.revision) >= rev0, 'created header revision is the current one');
	// the same id again: etcd refuses it with watch_id -1
	s.create({ key: b('ids/b'), watch_id: 7 });
	r = await s.must('duplicate id 7');
	eq([r.watch_id, r.created, r.canceled, r.cancel_reason],
		['-1', true, true, 'mvcc: duplicate watch ID provided on the WatchStream'], 'duplicate id');
	// server-chosen ids count from 0 on each stream, skipping those in use
	s.create({ key: b('ids/c'), range_end: b('ids/d') });
	r = await s.must('auto id');
	eq([r.watch_id, r.created], ['0', true], 'first automatic id');
	s.create({ key: b('ids/'), range_end: b('\0'), filters: ['NODELETE'], prev_kv: true });
	r = await s.must('auto id 2');
	eq(r.watch_id, '1', 'second automatic id');
	s.create({ key: b('ids/'), range_end: b('ids0'), filters: ['NOPUT'] });
	r = await s.must('auto id 3');
	eq(r.watch_id, '2', 'third automatic id');
	// key >= range_end
	s.create({ key: b('ids/z'), range_end: b('ids/a') });
	r = await s.must('empty range');
	eq([r.watch_id, r.created, r.canceled, r.cancel_reason],
		['-1', true, true, 'mvcc: watcher range is empty'], 'empty range');

	// events: 7 sees ids/a only; 0 sees [ids/c, ids/d); 1 (from ids/, no deletes, prev_kv)
	// everything put; 2 (no puts) the deletes
	await put('ids/a', '1');
	await put('ids/c1', '2');
	await put('ids/a', '3');
	await del('ids/a');
	const got = {};
	for (let i = 0; i < 10; i++) {
		const x = await s.next(1500);
		if (x === null)
			break;
		check(!x.created && !x.canceled, `unexpected ${JSON.stringify(L.brief(x))}`);
		(got[x.watch_id] = got[x.watch_id] || []).push(...keysOf(x));
		if (x.watch_id === '1')
			for (const e of x.events)
				if (e.kv.key.toString() === 'ids/a' && e.kv.value.toString() === '3')
					eq(e.prev_kv && e.prev_kv.value.toString(), '1', 'prev_kv of the second put');
	}
	eq(got['7'], ['PUT ids/a', 'PUT ids/a', 'DELETE ids/a'], 'events of watch 7 (one key)');
	eq(got['0'], ['PUT ids/c1'], 'events of watch 0 (range)');
	eq(got['1'], ['PUT ids/a', 'PUT ids/c1', 'PUT ids/a'], 'events of watch 1 (from key, NODELETE)');
	eq(got['2'], ['DELETE ids/a'], 'events of watch 2 (NOPUT)');

	// cancel: answered with canceled; an unknown id gets no answer
	s.cancel(7);
	r = await s.must('cancel 7');
	eq([r.watch_id, r.canceled, r.created], ['7', true, false], 'cancel response');
	s.cancel(4242);
	await s.none('cancel of an unknown id');
	await put('ids/a', '4');
	r = await s.must('watch 1 after cancel of 7');
	eq([r.watch_id, keysOf(r)], ['1', ['PUT ids/a']], 'only watch 1 sees ids/a now');
	// the cancelled id can be used again
	s.create({ key: b('ids/a'), watch_id: 7 });
	r = await s.must('reuse id 7');
	eq([r.watch_id, r.created, r.canceled], ['7', true, false], 'id 7 reused');

	// a progress request: watch_id -1, header at the current revision
	const cur = await put('ids/other', 'x');
	await s.next(1000); // watch 1's event for ids/other
	s.progress();
	r = await s.must('progress');
	eq([r.watch_id, r.events.length, r.created, r.canceled], ['-1', 0, false, false], 'progress response');
	eq(r.header.revision, cur.header.revision, 'progress header revision');

	// another member serves the same events
	if (process.argv[3]) {
		const c2 = L.clients(process.argv[3]);
		const s3 = new L.Stream(c2);
		s3.create({ key: b('ids/'), range_end: b('ids0'), start_revision: rev0 + 1, watch_id: 3 });
		r = await s3.must('create on the other member');
		eq(r.watch_id, '3', 'created on the other member');
		const seen = [];
		while (seen.length < 1000) {
			const x = await s3.next(1500);
			if (x === null)
				break;
			check(!x.canceled, `other member: ${JSON.stringify(L.brief(x))}`);
			seen.push(...x.events.map((e) => Number(e.kv.mod_revision)));
		}
		eq(seen, [...Array(Number(cur.header.revision) - rev0).keys()].map((i) => i + rev0 + 1),
			'the other member replays every revision once, in order');
		s3.end();
	}
	// a watch from a compacted revision: created, then cancelled with compact_revision
	await put('ids/k', '1');
	await put('ids/k', '2');
	const last = await put('ids/k', '3');
	const crev = Number(last.header.revision) - 1;
	await L.unary(c.kv, 'Compact', { revision: crev, physical: true });
	const s2 = new L.Stream(c);
	s2.create({ key: b('ids/k'), start_revision: rev0 });
	r = await s2.must('create below the compaction');
	eq([r.watch_id, r.created, r.canceled], ['0', true, false], 'created first');
	r = await s2.must('compaction notice');
	eq([r.watch_id, r.canceled, r.compact_revision, r.events.length], ['0', true, String(crev), 0],
		'cancelled with compact_revision');
	// a watch from just above the compacted revision replays it
	s2.create({ key: b('ids/k'), start_revision: crev + 1 });
	r = await s2.must('create above the compaction');
	eq(r.created, true, 'created');
	r = await s2.must('replay above the compaction');
	eq([keysOf(r), r.events[0].kv.mod_revision], [['PUT ids/k'], String(crev + 1)], 'replayed event');
	s2.end();

	s.end();
	done();
	console.log('watch_ids: ok');
	process.exit(0);
}

main().catch((e) => L.fail(e.stack || String(e)));
