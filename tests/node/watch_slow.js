// watch_slow.js: a client that stops reading. While one stream is paused (HTTP/2 flow control
// holds the server back) about 24 MB of events pile up behind it; once it reads again every
// event arrives once, in revision order, and a watcher of the same keys on another stream was
// never held up meanwhile. A stream left unread longer than the server's limit
// (CAIRN_WATCH_SLOW_MS) is ended with UNAVAILABLE and a message saying why.
//
//   node tests/node/watch_slow.js <host:port> <slow limit ms> [cairn]
'use strict';
const L = require('./watch_lib.js');
const { b, eq, check } = L;

const http2 = require('http2');
const path = require('path');
const protobuf = require('protobufjs'); // @grpc/proto-loader's own dependency

const done = L.deadline(90000, 'watch_slow');
const PUTS = 24, SIZE = 1000000;

const root = new protobuf.Root();
root.resolvePath = (origin, target) =>
	path.isAbsolute(target) ? target : path.join(__dirname, '..', '..', 'proto', target);
root.loadSync(path.join(__dirname, '..', '..', 'proto', 'etcdserverpb', 'rpc.proto'), { keepCase: true });
const WatchRequest = root.lookupType('etcdserverpb.WatchRequest');
const WatchResponse = root.lookupType('etcdserverpb.WatchResponse');

// A Watch stream on a bare HTTP/2 connection whose reading is under the test's control: while
// paused nothing is read, so the client's 64 KiB stream window stays closed, as with a client
// that stopped reading its socket.
class RawStream {
	constructor(hostport) {
		this.sess = http2.connect(`http://${hostport}`, { settings: { initialWindowSize: 65535 } });
		this.sess.on('error', () => {});
		this.req = this.sess.request({
			':method': 'POST',
			':path': '/etcdserverpb.Watch/Watch',
			'content-type': 'application/grpc',
			te: 'trailers',
		});
		this.req.on('error', () => {});
		this.msgs = [];
		this.trailers = null;
		this.req.on('trailers', (t) => {
			this.trailers = t;
		});
		this.req.on('response', (h) => {
			if (h['grpc-status'] !== undefined)
				this.trailers = h; // trailers-only
		});
		this.req.pause();
	}
	send(obj) {
		const body = WatchRequest.encode(WatchRequest.fromObject(obj)).finish();
		const frame = Buffer.alloc(5 + body.length);
		frame.writeUInt32BE(body.length, 1);
		Buffer.from(body).copy(frame, 5);
		this.req.write(frame);
	}
	read() {
		// chunks kept apart and joined once a whole message is in: no quadratic copying
		let chunks = [], have = 0, need = 5;
		this.req.on('data', (d) => {
			chunks.push(d);
			have += d.length;
			while (have >= need) {
				let all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, have);
				chunks = [all];
				if (need === 5 && all.length >= 5)
					need = 5 + all.readUInt32BE(1);
				if (have < need)
					break;
				this.msgs.push(WatchResponse.toObject(WatchResponse.decode(all.subarray(5, need)),
					{ longs: String, defaults: true }));
				all = all.subarray(need);
				chunks = all.length ? [all] : [];
				have = all.length;
				need = 5;
			}
		});
		this.req.resume();
	}
	close() {
		this.req.close();
		this.sess.close();
	}
}

async function until(what, ms, cond) {
	const end = Date.now() + ms;
	while (!cond()) {
		if (Date.now() > end)
			L.fail(`${what}: not within ${ms} ms`);
		await L.sleep(20);
	}
}

async function main() {
	const c = L.clients(process.argv[2]);
	const slowMs = Number(process.argv[3] || 8000);
	const put = (k, v) => L.retry(() => L.unary(c.kv, 'Put', { key: b(k), value: v }));
	// n puts of SIZE bytes, three at a time: several batches, so several responses per
	// watcher; their revisions in order
	const putMany = async (n, fill) => {
		const revs = [];
		for (let i = 0; i < n; i += 3) {
			const group = [];
			for (let k = i; k < i + 3 && k < n; k++)
				group.push(put(`slow/k${k % 4}`, Buffer.alloc(SIZE, fill + (k % 26))));
			for (const r of await Promise.all(group))
				revs.push(Number(r.header.revision));
		}
		return revs.sort((x, y) => x - y);
	};

	const hostport = process.argv[2];
	// 1. not read for a while (shorter than the limit): caught up afterwards
	const slow = new RawStream(hostport), fast = new L.Stream(c);
	slow.send({ create_request: { key: b('slow/'), range_end: b('slow0'), watch_id: 1 } });
	fast.create({ key: b('slow/'), range_end: b('slow0'), watch_id: 2 });
	eq((await fast.must('create fast')).created, true, 'created (fast)');
	const t0 = Date.now();
	const revs = await putMany(PUTS, 65);
	// the other stream keeps up while the first is held
	const fastRevs = [];
	while (fastRevs.length < PUTS) {
		const r = await fast.must('events on the stream that reads');
		for (const e of r.events)
			fastRevs.push(Number(e.kv.mod_revision));
	}
	eq(fastRevs, revs, 'the reading stream saw every put');
	check(Date.now() - t0 < slowMs / 2, `writing took ${Date.now() - t0} ms, near the ${slowMs} ms limit`);
	slow.read();
	const got = [];
	await until('catch-up of the stream that did not read', 20000, () => {
		while (slow.msgs.length > 0) {
			const r = slow.msgs.shift();
			if (r.created) {
				eq([r.watch_id, got.length], ['1', 0], 'created before any event');
				continue;
			}
			eq(r.watch_id, '1', 'watch id');
			for (const e of r.events) {
				check(e.kv.value.length === SIZE, 'event value');
				got.push(Number(e.kv.mod_revision));
			}
		}
		return got.length >= PUTS || slow.trailers !== null;
	});
	eq(got, revs, 'the stream that did not read got every event once, in order');
	slow.close();
	fast.end();

	// 2. not read for longer than the limit while behind: the server ends the stream (Cairn's
	// bound; etcd keeps such a stream)
	if (process.argv[4] !== 'cairn') {
		done();
		console.log('watch_slow: ok (the limit is Cairn\'s: not checked)');
		process.exit(0);
	}
	const stuck = new RawStream(hostport);
	stuck.send({ create_request: { key: b('slow/'), range_end: b('slow0'), watch_id: 3 } });
	await putMany(PUTS, 97);
	await L.sleep(slowMs + 2500);
	stuck.read();
	await until('the end of the stream not read', 20000, () => stuck.trailers !== null);
	eq(stuck.trailers['grpc-status'], '14', 'status of the stream not read');
	check(/watch stream closed/.test(decodeURIComponent(stuck.trailers['grpc-message'] || '')),
		`message: ${stuck.trailers['grpc-message']}`);
	stuck.close();
	done();
	console.log('watch_slow: ok');
	process.exit(0);
}

main().catch((e) => L.fail(e.stack || String(e)));
