#!/usr/bin/env node
// watch-lease: watch fan-out and lease keepalive load on a 3-member cluster, Cairn beside etcd 3.4,
// both started with the same flags on 127.0.0.1 and driven by the same client (grpc-js, through
// Cairn's own .proto files).
//
// Usage: bench/watch-lease.js [options] <cairn binary>
//   --scenario watch|lease|both  what to run (default both)
//   --watchers N        watchers on one prefix (default 10000)
//   --streams S         Watch streams carrying them, spread over 4 connections (default 100)
//   --rate R            puts per second to keys under the prefix (default 1000)
//   --seconds T         length of the put load (default 20)
//   --leases N          leases for the lease scenario (default 10000)
//   --ttl S             their TTL in seconds (default 10)
//   --keepalive-streams K  LeaseKeepAlive streams; every lease is renewed once a second (default 10)
//   --lease-seconds T   length of the keepalive load (default 30)
//   --only cairn|etcd   one system only (no ratio then)
//   --etcd PATH         etcd 3.4 (default /usr/bin/etcd)
//   --keep              keep the temporary directory (member logs and data)
// Example: bench/watch-lease.js build/bin/cairn
//          bench/watch-lease.js --watchers 1000 --streams 10 --rate 100 --seconds 5 \
//            --leases 1000 --lease-seconds 5 build/bin/cairn      (a quick check that it works)
//
// Watch fan-out. The watchers are created on the leader (each stream: watchers/streams creates of
// the prefix /bench/w/, start revision 0) and every created response is awaited. Then one client
// on its own connection to the leader puts /bench/w/<i> (16-byte values) at --rate puts a second
// (open loop, at most 256 puts in flight; a put that would exceed that is counted as skipped).
// For each acknowledged put, the time from its response to the arrival of its event at each
// watcher is recorded (an event that arrives before the put's response counts as 0): the
// "delivery" figures are over all (put, watcher) pairs, the "all watchers" figures over puts, each
// the time until the last watcher had it. After the load, events still due are awaited up to 60 s;
// any never delivered are reported as missing. The leader's VmRSS is sampled every 250 ms (the peak
// is reported) and its CPU time over the load is read from /proc/<pid>/stat, as is the client's.
//
// Lease keepalives. --leases leases of --ttl seconds are granted on the leader (64 grants in
// flight). Then for --lease-seconds, every lease is renewed once a second, spread evenly over the
// second and over K LeaseKeepAlive streams to the leader. Each response must carry a TTL > 0 (a 0
// is a lost lease, counted). Reported: the leader's CPU (share of one core) and its VmRSS at the
// end, the followers' CPU, and keepalive round-trip p50/p99.
//
// The client shares the machine's cores with the members, which bounds what it can receive; its
// own CPU share is printed so a saturated client can be told from a slow server.
// Bounds: every wait has a deadline; the whole run stops after at most 15 minutes per system.
// Processes are killed by pid and the temporary directory removed on every exit path.
// Exit status: 0 done, 1 a step failed, 2 bad usage.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const net = require('net');
const { spawn } = require('child_process');

const repo = path.resolve(__dirname, '..');
const modules = path.join(repo, 'tests', 'node', 'node_modules');
let grpc, loader;
try {
	grpc = require(path.join(modules, '@grpc/grpc-js'));
	loader = require(path.join(modules, '@grpc/proto-loader'));
} catch (e) {
	console.error('watch-lease: run scripts/node-deps.sh first (' + e.message + ')');
	process.exit(2);
}

// ---- options ------------------------------------------------------------------------------------

const opt = {
	scenario: 'both', watchers: 10000, streams: 100, rate: 1000, seconds: 20, leases: 10000,
	ttl: 10, 'keepalive-streams': 10, 'lease-seconds': 30, only: '', etcd: '/usr/bin/etcd',
	keep: false,
};
let cairnBin = '';
function usage(msg) {
	if (msg)
		console.error('watch-lease: ' + msg);
	const text = fs.readFileSync(__filename, 'utf8').split('\n');
	for (const l of text.slice(1, 25))
		console.error(l.replace(/^\/\/ ?/, ''));
	process.exit(2);
}
{
	const a = process.argv.slice(2);
	for (let i = 0; i < a.length; i++) {
		const k = a[i].replace(/^--/, '');
		if (a[i] === '--keep') {
			opt.keep = true;
		} else if (a[i].startsWith('--') && k in opt) {
			if (i + 1 >= a.length)
				usage('missing value of ' + a[i]);
			const v = a[++i];
			opt[k] = typeof opt[k] === 'number' ? Number(v) : v;
			if (typeof opt[k] === 'number' && !(opt[k] > 0))
				usage('bad value of ' + a[i - 1]);
		} else if (!a[i].startsWith('--') && cairnBin === '') {
			cairnBin = path.resolve(a[i]);
		} else {
			usage('unknown argument ' + a[i]);
		}
	}
	if (cairnBin === '' && opt.only !== 'etcd')
		usage('the cairn binary is needed');
	if (!['watch', 'lease', 'both'].includes(opt.scenario))
		usage('--scenario is watch, lease or both');
	if (opt.only && !['cairn', 'etcd'].includes(opt.only))
		usage('--only is cairn or etcd');
}

// ---- processes and the temporary directory --------------------------------------------------------

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'watch-lease-'));
const children = new Set();
function cleanup() {
	for (const c of children) {
		try {
			process.kill(c.pid, 'SIGKILL');
		} catch (e) { /* gone */ }
	}
	children.clear();
	if (!opt.keep)
		fs.rmSync(tmp, { recursive: true, force: true });
	else
		console.error('watch-lease: kept ' + tmp);
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM'])
	process.on(sig, () => process.exit(1));
function fail(msg) {
	console.error('watch-lease: ' + msg);
	process.exit(1);
}
const log = (msg) => console.error('watch-lease: ' + msg);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePorts(n) {
	const held = [];
	for (let tries = 0; held.length < n && tries < 5000; tries++) {
		const port = 20000 + Math.floor(Math.random() * 12768);
		if (held.some((h) => h.port === port))
			continue;
		const srv = net.createServer();
		const ok = await new Promise((res) => {
			srv.once('error', () => res(false));
			srv.listen(port, '127.0.0.1', () => res(true));
		});
		if (ok)
			held.push({ port, srv });
	}
	for (const h of held)
		await new Promise((r) => h.srv.close(r));
	if (held.length < n)
		fail('no free ports');
	return held.map((h) => h.port);
}

// /proc/<pid>/stat: CPU seconds (utime + stime); /proc/<pid>/status: VmRSS in KiB.
const TICK = 100; // sysconf(_SC_CLK_TCK) on Linux
function cpuSeconds(pid) {
	const s = fs.readFileSync('/proc/' + pid + '/stat', 'utf8');
	const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
	return (Number(f[11]) + Number(f[12])) / TICK;
}
function rssKiB(pid) {
	const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/' + pid + '/status', 'utf8'));
	return m ? Number(m[1]) : 0;
}

// ---- gRPC -------------------------------------------------------------------------------------

const def = loader.loadSync(path.join(repo, 'proto', 'etcdserverpb', 'rpc.proto'), {
	includeDirs: [path.join(repo, 'proto')], keepCase: true, longs: String, enums: String,
	defaults: true,
});
const pb = grpc.loadPackageDefinition(def).etcdserverpb;
const chanOpts = { 'grpc.max_receive_message_length': 64 << 20 };
function client(Svc, ep) {
	return new pb[Svc](ep, grpc.credentials.createInsecure(), chanOpts);
}
function unary(c, method, req, ms = 10000) {
	return new Promise((res, rej) => {
		c[method](req, { deadline: Date.now() + ms }, (err, resp) => (err ? rej(err) : res(resp)));
	});
}
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
function pct(sorted, p) {
	if (sorted.length === 0)
		return NaN;
	return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// ---- one cluster ----------------------------------------------------------------------------------

let clusters = 0;
async function startCluster(sys) {
	const bin = sys === 'cairn' ? cairnBin : opt.etcd;
	const p = await freePorts(9);
	const names = ['m1', 'm2', 'm3'];
	const dir = path.join(tmp, sys + '-' + ++clusters);
	fs.mkdirSync(dir, { recursive: true });
	const ms = names.map((n, i) => ({
		name: n, ep: '127.0.0.1:' + p[i], peer: 'http://127.0.0.1:' + p[3 + i],
		gossip: '127.0.0.1:' + p[6 + i],
	}));
	const initial = ms.map((m) => m.name + '=' + m.peer).join(',');
	for (const m of ms) {
		const args = ['--name', m.name, '--data-dir', path.join(dir, m.name + '.data'),
			'--listen-client-urls', 'http://' + m.ep, '--advertise-client-urls', 'http://' + m.ep,
			'--listen-peer-urls', m.peer, '--initial-advertise-peer-urls', m.peer,
			'--initial-cluster', initial, '--initial-cluster-state', 'new',
			'--initial-cluster-token', 'bench-watch-lease-' + sys + '-' + process.pid];
		if (sys === 'cairn') {
			// Every member gossips: its own port, and one pool joined through the others.
			const join = ms.filter((o) => o !== m).map((o) => o.gossip).join(',');
			args.push('--gossip-listen', m.gossip, '--gossip-join', join);
		}
		const out = fs.openSync(path.join(dir, m.name + '.log'), 'a');
		const c = spawn(bin, args, { stdio: ['ignore', out, out] });
		fs.closeSync(out);
		children.add(c);
		m.proc = c;
		m.pid = c.pid;
		c.on('exit', () => children.delete(c));
	}
	// the leader: every member agrees on it (30 s)
	const deadline = Date.now() + 30000;
	for (;;) {
		try {
			const st = await Promise.all(ms.map((m) => unary(client('Maintenance', m.ep), 'Status', {}, 1000)));
			const leaders = new Set(st.map((s) => String(s.leader)));
			if (leaders.size === 1 && !leaders.has('0')) {
				const i = st.findIndex((s) => String(s.header.member_id) === String(s.leader));
				if (i >= 0)
					return { sys, members: ms, leader: ms[i], followers: ms.filter((_, j) => j !== i) };
			}
		} catch (e) { /* not up yet */ }
		for (const m of ms)
			if (m.proc.exitCode !== null)
				fail(sys + ' ' + m.name + ' exited; log in ' + dir);
		if (Date.now() > deadline)
			fail(sys + ': no leader within 30 s');
		await sleep(200);
	}
}

function stopCluster(cl) {
	for (const m of cl.members) {
		try {
			process.kill(m.pid, 'SIGKILL');
		} catch (e) { /* gone */ }
	}
}

// ---- watch fan-out ----------------------------------------------------------------------------

async function watchScenario(cl) {
	const ep = cl.leader.ep;
	const prefix = Buffer.from('/bench/w/');
	const rangeEnd = Buffer.from('/bench/w0'); // prefix with its last byte + 1
	const conns = [];
	for (let i = 0; i < 4; i++)
		conns.push(client('Watch', ep));
	const perStream = Math.ceil(opt.watchers / opt.streams);
	// per revision: the time of the put's response, and deliveries still due
	const due = new Map(); // revision -> { resp: ms or undefined, left, first: [arrivals before resp], last }
	const delivery = [];
	const allWatchers = [];
	let events = 0, missing = 0;
	function arrival(rev, t) {
		let d = due.get(rev);
		if (d === undefined) {
			d = { resp: undefined, left: opt.watchers, early: 0, last: t };
			due.set(rev, d);
		}
		events++;
		d.left--;
		d.last = Math.max(d.last, t);
		if (d.resp === undefined)
			d.early++;
		else
			delivery.push(Math.max(0, t - d.resp));
		if (d.left === 0 && d.resp !== undefined) {
			allWatchers.push(Math.max(0, d.last - d.resp));
			due.delete(rev);
		}
	}
	const streams = [];
	let created = 0, total = 0;
	for (let s = 0; s < opt.streams && total < opt.watchers; s++) {
		const call = conns[s % conns.length].Watch();
		call.on('data', (r) => {
			if (r.created)
				created++;
			if (r.canceled)
				fail(cl.sys + ': watch canceled: ' + (r.cancel_reason || '') + ' compact ' + r.compact_revision);
			if (r.events && r.events.length) {
				const t = nowMs();
				for (const e of r.events)
					arrival(Number(e.kv.mod_revision), t);
			}
		});
		call.on('error', (e) => {
			if (e.code !== grpc.status.CANCELLED)
				fail(cl.sys + ': watch stream failed: ' + e.message);
		});
		const n = Math.min(perStream, opt.watchers - total);
		for (let i = 0; i < n; i++)
			call.write({ create_request: { key: prefix, range_end: rangeEnd } });
		total += n;
		streams.push(call);
	}
	const t0 = Date.now();
	while (created < opt.watchers) {
		if (Date.now() - t0 > 120000)
			fail(cl.sys + ': only ' + created + ' of ' + opt.watchers + ' watchers created in 120 s');
		await sleep(50);
	}
	log(cl.sys + ': ' + created + ' watchers created in ' + (Date.now() - t0) + ' ms');

	const kv = client('KV', ep);
	const cpu0 = cpuSeconds(cl.leader.pid), ccpu0 = process.cpuUsage();
	let rssPeak = rssKiB(cl.leader.pid);
	const sampler = setInterval(() => {
		rssPeak = Math.max(rssPeak, rssKiB(cl.leader.pid));
	}, 250);
	let sent = 0, acked = 0, failed = 0, skipped = 0, inflight = 0;
	const failedBy = {}; // gRPC status name -> count
	const value = Buffer.alloc(16, 'v');
	const start = nowMs(), end = start + opt.seconds * 1000;
	await new Promise((resolve) => {
		const timer = setInterval(() => {
			const t = nowMs();
			const want = Math.min(opt.rate * opt.seconds, Math.floor(((t - start) / 1000) * opt.rate));
			while (sent + skipped < want) {
				if (inflight >= 256) {
					skipped++;
					continue;
				}
				const key = Buffer.from('/bench/w/' + (sent % 100000));
				sent++;
				inflight++;
				kv.Put({ key, value }, { deadline: Date.now() + 10000 }, (err, r) => {
					inflight--;
					if (err) {
						failed++;
						const c = grpc.status[err.code] || String(err.code);
						failedBy[c] = (failedBy[c] || 0) + 1;
						return;
					}
					acked++;
					const tr = nowMs();
					const rev = Number(r.header.revision);
					let d = due.get(rev);
					if (d === undefined) {
						d = { resp: tr, left: opt.watchers, early: 0, last: tr };
						due.set(rev, d);
					} else {
						d.resp = tr;
						for (let i = 0; i < d.early; i++)
							delivery.push(0);
						if (d.left === 0) {
							allWatchers.push(Math.max(0, d.last - tr));
							due.delete(rev);
						}
					}
				});
			}
			if (t >= end && inflight === 0) {
				clearInterval(timer);
				resolve();
			}
		}, 5);
	});
	const loadMs = nowMs() - start;
	const cpu1 = cpuSeconds(cl.leader.pid), ccpu1 = process.cpuUsage(ccpu0);
	// events still due
	const drainEnd = Date.now() + 60000;
	while (due.size > 0 && Date.now() < drainEnd)
		await sleep(100);
	for (const d of due.values())
		missing += d.left;
	clearInterval(sampler);
	const rssEnd = rssKiB(cl.leader.pid);
	for (const s of streams)
		s.cancel();
	for (const c of conns)
		c.close();
	kv.close();
	delivery.sort((a, b) => a - b);
	allWatchers.sort((a, b) => a - b);
	return {
		watchers: opt.watchers, streams: streams.length, rate: opt.rate, seconds: opt.seconds,
		puts_acked: acked, puts_failed: failed, puts_failed_by: failedBy, puts_skipped: skipped,
		puts_per_s: (acked / loadMs) * 1000, events, events_per_s: (events / (loadMs + 0)) * 1000,
		missing, delivery_p50_ms: pct(delivery, 50), delivery_p99_ms: pct(delivery, 99),
		all_p50_ms: pct(allWatchers, 50), all_p99_ms: pct(allWatchers, 99),
		leader_cpu: (cpu1 - cpu0) / (loadMs / 1000),
		client_cpu: (ccpu1.user + ccpu1.system) / 1e6 / (loadMs / 1000),
		rss_peak_mib: rssPeak / 1024, rss_end_mib: rssEnd / 1024,
	};
}

// ---- lease keepalives ---------------------------------------------------------------------------

async function leaseScenario(cl) {
	const ep = cl.leader.ep;
	const lc = client('Lease', ep);
	const rssIdle = rssKiB(cl.leader.pid);
	const ids = [];
	let next = 0;
	const t0 = Date.now();
	await Promise.all(Array.from({ length: 64 }, async () => {
		while (next < opt.leases) {
			next++;
			const r = await unary(lc, 'LeaseGrant', { TTL: opt.ttl });
			ids.push(r.ID);
		}
	}));
	log(cl.sys + ': ' + ids.length + ' leases granted in ' + (Date.now() - t0) + ' ms');
	const rtt = [];
	let sentKa = 0, answered = 0, lost = 0;
	const pending = new Map(); // id -> [send times]
	const streams = [];
	for (let s = 0; s < opt['keepalive-streams']; s++) {
		const call = lc.LeaseKeepAlive();
		call.on('data', (r) => {
			answered++;
			const q = pending.get(String(r.ID));
			if (q && q.length)
				rtt.push(nowMs() - q.shift());
			if (!(Number(r.TTL) > 0))
				lost++;
		});
		call.on('error', (e) => {
			if (e.code !== grpc.status.CANCELLED)
				fail(cl.sys + ': keepalive stream failed: ' + e.message);
		});
		streams.push(call);
	}
	const cpu0 = cl.members.map((m) => cpuSeconds(m.pid));
	const ccpu0 = process.cpuUsage();
	const start = nowMs();
	const seconds = opt['lease-seconds'];
	// every lease once a second, spread over the second in 20 slices
	await new Promise((resolve) => {
		let slice = 0;
		const per = Math.ceil(ids.length / 20);
		const timer = setInterval(() => {
			if (slice >= seconds * 20) {
				clearInterval(timer);
				resolve();
				return;
			}
			const from = (slice % 20) * per;
			for (let i = from; i < Math.min(from + per, ids.length); i++) {
				const id = ids[i];
				const k = String(id);
				if (!pending.has(k))
					pending.set(k, []);
				const q = pending.get(k);
				if (q.length > 4)
					continue; // unanswered: do not pile up
				q.push(nowMs());
				streams[i % streams.length].write({ ID: id });
				sentKa++;
			}
			slice++;
		}, 50);
	});
	const loadS = (nowMs() - start) / 1000;
	const cpu1 = cl.members.map((m) => cpuSeconds(m.pid));
	const ccpu1 = process.cpuUsage(ccpu0);
	const waitEnd = Date.now() + 10000;
	while (answered < sentKa && Date.now() < waitEnd)
		await sleep(50);
	const rssEnd = rssKiB(cl.leader.pid);
	for (const s of streams)
		s.cancel();
	lc.close();
	rtt.sort((a, b) => a - b);
	const li = cl.members.indexOf(cl.leader);
	const fcpu = cl.members.map((m, i) => (cpu1[i] - cpu0[i]) / loadS).filter((_, i) => i !== li);
	return {
		leases: ids.length, ttl: opt.ttl, streams: streams.length, seconds,
		keepalives: sentKa, answered, lost, ka_per_s: answered / loadS,
		rtt_p50_ms: pct(rtt, 50), rtt_p99_ms: pct(rtt, 99),
		leader_cpu: (cpu1[li] - cpu0[li]) / loadS, follower_cpu: Math.max(...fcpu),
		client_cpu: (ccpu1.user + ccpu1.system) / 1e6 / loadS,
		rss_idle_mib: rssIdle / 1024, rss_end_mib: rssEnd / 1024,
	};
}

// ---- the run ------------------------------------------------------------------------------------

function fmt(v) {
	if (typeof v !== 'number')
		return String(v);
	if (Number.isNaN(v))
		return '-';
	if (Number.isInteger(v))
		return v.toLocaleString('en-US');
	return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}
function table(title, rows, res) {
	const systems = Object.keys(res);
	console.log('\n### ' + title + '\n');
	console.log('| | ' + systems.join(' | ') + (systems.length === 2 ? ' | Cairn/etcd |' : ' |'));
	console.log('|---|' + systems.map(() => '---|').join('') + (systems.length === 2 ? '---|' : ''));
	for (const [label, key] of rows) {
		const vals = systems.map((s) => res[s][key]);
		let line = '| ' + label + ' | ' + vals.map(fmt).join(' | ') + ' |';
		if (systems.length === 2)
			line += ' ' + (vals[1] ? fmt(vals[0] / vals[1]) : '-') + ' |';
		console.log(line);
	}
}

async function main() {
	const killer = setTimeout(() => fail('the run took over 15 minutes per system'),
		(opt.only ? 1 : 2) * 15 * 60 * 1000);
	killer.unref();
	const systems = opt.only ? [opt.only] : ['cairn', 'etcd'];
	const watch = {}, lease = {};
	for (const sys of systems) {
		if (opt.scenario !== 'lease') {
			log(sys + ': watch fan-out');
			const cl = await startCluster(sys);
			watch[sys] = await watchScenario(cl);
			stopCluster(cl);
		}
		if (opt.scenario !== 'watch') {
			log(sys + ': lease keepalives');
			const cl = await startCluster(sys);
			lease[sys] = await leaseScenario(cl);
			stopCluster(cl);
		}
	}
	console.log('# bench/watch-lease.js ' + process.argv.slice(2).join(' '));
	console.log('# ' + os.cpus().length + ' CPUs (' + os.cpus()[0].model + '), ' +
		(os.totalmem() / 2 ** 30).toFixed(0) + ' GiB, ' + new Date().toISOString());
	if (opt.scenario !== 'lease')
		table('Watch fan-out: ' + opt.watchers + ' watchers on one prefix over ' + opt.streams +
			' streams, ' + opt.rate + ' puts/s for ' + opt.seconds + ' s', [
			['puts acknowledged', 'puts_acked'], ['puts/s achieved', 'puts_per_s'],
			['puts skipped (256 in flight)', 'puts_skipped'], ['puts failed', 'puts_failed'],
			['events delivered', 'events'], ['events/s', 'events_per_s'],
			['events missing after 60 s', 'missing'],
			['delivery p50 (ms)', 'delivery_p50_ms'], ['delivery p99 (ms)', 'delivery_p99_ms'],
			['all watchers p50 (ms)', 'all_p50_ms'], ['all watchers p99 (ms)', 'all_p99_ms'],
			['leader CPU (cores)', 'leader_cpu'], ['client CPU (cores)', 'client_cpu'],
			['leader VmRSS peak (MiB)', 'rss_peak_mib'], ['leader VmRSS at end (MiB)', 'rss_end_mib'],
		], watch);
	if (opt.scenario !== 'watch')
		table('Lease keepalives: ' + opt.leases + ' leases of ' + opt.ttl + ' s, each renewed every second over ' +
			opt['keepalive-streams'] + ' streams for ' + opt['lease-seconds'] + ' s', [
			['keepalives answered', 'answered'], ['keepalives/s', 'ka_per_s'],
			['leases lost (TTL 0)', 'lost'], ['round trip p50 (ms)', 'rtt_p50_ms'],
			['round trip p99 (ms)', 'rtt_p99_ms'], ['leader CPU (cores)', 'leader_cpu'],
			['busiest follower CPU (cores)', 'follower_cpu'], ['client CPU (cores)', 'client_cpu'],
			['leader VmRSS idle (MiB)', 'rss_idle_mib'], ['leader VmRSS at end (MiB)', 'rss_end_mib'],
		], lease);
	console.log('\n```json\n' + JSON.stringify({ watch, lease }, null, 1) + '\n```');
	process.exit(0);
}
main().catch((e) => fail(e.stack || String(e)));
