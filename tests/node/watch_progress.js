// watch_progress.js: progress notifications. A watcher created with progress_notify gets, while
// nothing happens, a response with its id, no events and the current revision; one without it
// gets nothing. A progress request sent while a watcher replays history is answered after the
// replay, with a revision no lower than any replayed event (Cairn; etcd 3.4 answers at once).
//
//   node tests/node/watch_progress.js <host:port> <notify interval ms> [cairn]
// The server must run with that notification interval (Cairn: CAIRN_WATCH_PROGRESS_MS; etcd:
// --experimental-watch-progress-notify-interval).
'use strict';
const L = require('./watch_lib.js');
const { b, eq, check } = L;

const done = L.deadline(60000, 'watch_progress');

async function main() {
	const c = L.clients(process.argv[2]);
	const interval = Number(process.argv[3] || 1000);
	const cairn = process.argv[4] === 'cairn';
	const put = (k, v) => L.retry(() => L.unary(c.kv, 'Put', { key: b(k), value: b(v) }));
	const first = await put('prog/a', '0');
	for (let i = 1; i < 300; i++)
		await put('prog/a', String(i));
	const cur = await put('prog/b', 'x');

	const s = new L.Stream(c);
	s.create({ key: b('prog/b'), progress_notify: true, watch_id: 5 });
	eq((await s.must('create')).watch_id, '5', 'created');
	s.create({ key: b('prog/c'), watch_id: 6 });
	eq((await s.must('create 6')).watch_id, '6', 'created 6');
	const r = await s.must('progress notification', 3 * interval + 3000);
	eq([r.watch_id, r.events.length, r.created, r.canceled], ['5', 0, false, false],
		'a notification for the watcher that asked for it');
	eq(r.header.revision, cur.header.revision, 'its header revision is the current one');
	s.end();

	if (cairn) {
		// 300 revisions to replay, and a progress request right behind the create
		const s2 = new L.Stream(c);
		s2.create({ key: b('prog/a'), start_revision: first.header.revision, watch_id: 1 });
		s2.progress();
		let seen = 0, maxRev = 0, progress = null;
		while (progress === null) {
			const x = await s2.must('replay or progress');
			if (x.created)
				continue;
			if (x.watch_id === '-1') {
				progress = x;
				break;
			}
			for (const e of x.events)
				maxRev = Math.max(maxRev, Number(e.kv.mod_revision));
			seen += x.events.length;
		}
		eq(seen, 300, 'every replayed event before the progress response');
		check(Number(progress.header.revision) >= maxRev,
			`progress revision ${progress.header.revision} below replayed ${maxRev}`);
		s2.end();
	}
	done();
	console.log('watch_progress: ok');
	process.exit(0);
}

main().catch((e) => L.fail(e.stack || String(e)));
