// watch_lib.js: raw etcdserverpb.Watch/Watch streams over @grpc/grpc-js, for the watch_*.js
// checks that etcdctl cannot express (client-chosen ids, cancel, filters, fragments, progress).
//
//   node tests/node/watch_<name>.js <host:port> [<host:port> ...]
//
// Each script exits 0 when every check holds, 1 with "FAIL: ..." on the first deviation, and 2
// when its overall time limit passes. It loads Cairn's own proto/etcdserverpb/rpc.proto.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const repo = path.resolve(__dirname, '..', '..');

function load() {
	const def = loader.loadSync(path.join(repo, 'proto', 'etcdserverpb', 'rpc.proto'), {
		includeDirs: [path.join(repo, 'proto')],
		keepCase: true,
		longs: String,
		enums: String,
		defaults: true,
		oneofs: true,
	});
	return grpc.loadPackageDefinition(def).etcdserverpb;
}

function fail(msg) {
	console.error('FAIL: ' + msg);
	process.exit(1);
}

function check(cond, msg) {
	if (!cond)
		fail(msg);
}

function eq(got, want, what) {
	const g = JSON.stringify(got), w = JSON.stringify(want);
	if (g !== w)
		fail(`${what}: got ${g}, want ${w}`);
}

// Kills the script after ms, whatever it is waiting for.
function deadline(ms, name) {
	const t = setTimeout(() => {
		console.error(`FAIL: ${name}: no result within ${ms} ms`);
		process.exit(2);
	}, ms);
	return () => clearTimeout(t);
}

function clients(endpoint) {
	const pb = load();
	const creds = grpc.credentials.createInsecure();
	const opts = { 'grpc.max_receive_message_length': 64 << 20 };
	return {
		kv: new pb.KV(endpoint, creds, opts),
		watch: new pb.Watch(endpoint, creds, opts),
		maint: new pb.Maintenance(endpoint, creds, opts),
	};
}

function unary(client, method, req) {
	return new Promise((resolve, reject) => {
		client[method](req, { deadline: Date.now() + 10000 }, (err, resp) =>
			err ? reject(err) : resolve(resp));
	});
}

// Retries a write while the cluster has no leader (right after it starts).
async function retry(fn) {
	for (let i = 0; ; i++) {
		try {
			return await fn();
		} catch (e) {
			if (i >= 50 || !/leader|timed out|UNAVAILABLE|Unavailable/.test(String(e)))
				throw e;
			await sleep(200);
		}
	}
}

function sleep(ms) {
	return new Promise((r) => setTimeout(r, ms));
}

const b = (s) => Buffer.from(s);

// A Watch stream whose responses are read one at a time.
class Stream {
	constructor(c) {
		this.call = c.watch.Watch();
		this.queue = [];
		this.waiters = [];
		this.error = null;
		this.status = null;
		this.call.on('data', (r) => this._push(r));
		this.call.on('error', (e) => {
			this.error = e;
			this._push(null);
		});
		this.call.on('status', (st) => {
			this.status = st;
		});
		this.call.on('end', () => this._push(null));
	}
	_push(r) {
		if (this.waiters.length > 0)
			this.waiters.shift()(r);
		else
			this.queue.push(r);
	}
	send(req) {
		this.call.write(req);
	}
	create(o) {
		const c = Object.assign({ key: b(''), range_end: b(''), start_revision: 0 }, o);
		this.send({ create_request: c });
	}
	cancel(id) {
		this.send({ cancel_request: { watch_id: id } });
	}
	progress() {
		this.send({ progress_request: {} });
	}
	// The next response, or null when none came within ms (or the stream ended).
	next(ms = 5000) {
		if (this.queue.length > 0)
			return Promise.resolve(this.queue.shift());
		return new Promise((resolve) => {
			const t = setTimeout(() => {
				const i = this.waiters.indexOf(f);
				if (i >= 0)
					this.waiters.splice(i, 1);
				resolve(null);
			}, ms);
			const f = (r) => {
				clearTimeout(t);
				resolve(r);
			};
			this.waiters.push(f);
		});
	}
	async must(what, ms = 5000) {
		const r = await this.next(ms);
		if (r === null)
			fail(`${what}: no response` + (this.error ? ` (stream error: ${this.error.message})` : ''));
		return r;
	}
	async none(what, ms = 700) {
		const r = await this.next(ms);
		if (r !== null)
			fail(`${what}: unexpected response ${JSON.stringify(brief(r))}`);
	}
	end() {
		this.call.cancel();
	}
}

// A response with keys and values as strings, for messages.
function brief(r) {
	return {
		rev: r.header ? r.header.revision : null,
		id: r.watch_id,
		created: r.created,
		canceled: r.canceled,
		compact: r.compact_revision,
		reason: r.cancel_reason,
		fragment: r.fragment,
		events: (r.events || []).map((e) => `${e.type} ${e.kv.key} ${e.kv.mod_revision}` +
			(e.prev_kv ? ` prev=${e.prev_kv.value.length > 32 ? e.prev_kv.value.length : e.prev_kv.value}` : '')),
	};
}

module.exports = { load, fail, check, eq, deadline, clients, unary, retry, sleep, b, Stream, brief };
