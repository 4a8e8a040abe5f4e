'use strict';
// failover.js: watches and leases across kill -9 of the leader, through @grpc/grpc-js on the
// repository's proto files. One watcher per member records every event under f/; a writer puts
// f/k<i> one at a time, moving to another member when one fails, and records each acknowledged
// put with its revision. Two leases of TTL seconds are granted before the kill: one kept alive
// (its LeaseKeepAlive stream moves to another member when its own fails), one abandoned. After
// BEFORE_KILL acknowledged puts the script prints KILL-LEADER and writes on; conform.py kills the
// leader and answers "KILLED <name> <url>" on stdin; the writer stops AFTER_KILL acknowledged puts
// later. A watcher whose stream fails resumes on another live member from its last revision + 1.
// Checked at the end: every watcher saw each revision of the final history of f/ exactly once,
// in order (nothing lost, nothing repeated), every acknowledged put is in that history at its
// revision; the abandoned lease's key is gone no later than TTL + 2 election timeouts + slack
// after the kill; the kept lease and its key are still there more than TTL after the kill.
//
//   node failover.js --members '{"m1":"http://127.0.0.1:2379",...}' --flavour etcd|cairn
const path = require('path');
const readline = require('readline');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { args, sleep, waitFor, withTimeout } = require('./conform_lib');

const opts = args();
const members = JSON.parse(opts.members);
const names = Object.keys(members).sort();
const TTL = 5; // seconds, both leases
const ELECTION_MS = 1000; // --election-timeout of both flavours (their default)
const SLACK_MS = 3000; // the expiry check period (500 ms), client polling, a slow machine
const BEFORE_KILL = 60; // acknowledged puts before the kill
const AFTER_KILL = 60; // acknowledged puts after the kill
const TOTAL = 500; // puts attempted at most
const WRITE_SECS = 40;

const repo = path.resolve(__dirname, '..', '..');
const def = protoLoader.loadSync(path.join(repo, 'proto', 'etcdserverpb', 'rpc.proto'), {
  includeDirs: [path.join(repo, 'proto')],
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
const pb = grpc.loadPackageDefinition(def).etcdserverpb;
const cli = {};
for (const n of names) {
  const addr = members[n].replace(/^https?:\/\//, '');
  const c = grpc.credentials.createInsecure();
  cli[n] = { kv: new pb.KV(addr, c), watch: new pb.Watch(addr, c), lease: new pb.Lease(addr, c) };
}
const dead = new Set();
const live = () => names.filter((n) => !dead.has(n));
const B = (s) => Buffer.from(s);
const prefixEnd = (p) => {
  const b = Buffer.from(p);
  b[b.length - 1]++;
  return b;
};
const call = (svc, method, req, ms = 2000) => new Promise((res, rej) => {
  svc[method](req, { deadline: Date.now() + ms }, (err, r) => (err ? rej(err) : res(r)));
});
const t0 = Date.now();
const log = (msg) => process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(2)}s] ${msg}\n`);
const problems = [];
const fail = (msg) => {
  problems.push(msg);
  log('FAILED: ' + msg);
};

// call on any live member, starting with the preferred one; bounded attempts.
async function anyCall(svc, method, req, tries = 20) {
  let last;
  for (let i = 0; i < tries; i++) {
    const l = live();
    const n = l[i % l.length];
    try {
      return await call(cli[n][svc], method, req);
    } catch (e) {
      last = e;
      await sleep(150);
    }
  }
  throw last;
}

class Watcher {
  constructor(name, member, from) {
    this.name = name;
    this.member = member;
    this.last = from - 1;
    this.events = [];
    this.resumes = 0;
    this.stream = null;
    this.closed = false;
    this.error = null;
  }

  open() {
    const stream = cli[this.member].watch.Watch();
    this.stream = stream;
    const lost = (why) => {
      if (this.stream !== stream || this.closed) return;
      if (String(why).startsWith('12 ')) {
        notServed('Watch', why);
        return;
      }
      this.stream = null;
      stream.cancel();
      if (++this.resumes > 40) {
        this.error = 'more than 40 resumes';
        return;
      }
      const l = live().filter((n) => n !== this.member);
      const next = dead.has(this.member) || !l.length ? l[0] || this.member : this.member;
      log(`${this.name}: stream on ${this.member} lost (${why}); resuming on ${next} from ${this.last + 1}`);
      this.member = next;
      setTimeout(() => this.open(), 200);
    };
    stream.on('data', (r) => {
      if (r.canceled) {
        this.error = 'canceled: ' + r.cancel_reason + ' compact ' + r.compact_revision;
        lost('canceled');
        return;
      }
      for (const e of r.events) {
        const rev = Number(e.kv.mod_revision);
        this.events.push({ key: e.kv.key.toString(), rev, type: e.type });
        this.last = Math.max(this.last, rev);
      }
    });
    stream.on('error', (e) => lost(e.code + ' ' + e.details));
    stream.on('end', () => lost('end'));
    stream.write({ create_request: { key: B('f/'), range_end: prefixEnd('f/'),
      start_revision: String(this.last + 1) } });
  }

  close() {
    this.closed = true;
    if (this.stream) this.stream.cancel();
  }
}

class KeepAlive {
  constructor(id) {
    this.id = id;
    this.ok = 0;
    this.lastTTL = null;
    this.member = names[0];
    this.stream = null;
    this.timer = null;
  }

  open() {
    const l = live();
    if (dead.has(this.member) || !l.includes(this.member)) this.member = l[0];
    const s = cli[this.member].lease.LeaseKeepAlive();
    this.stream = s;
    const lost = () => {
      if (this.stream !== s) return;
      this.stream = null;
      s.cancel();
      this.member = live().find((n) => n !== this.member) || live()[0];
      setTimeout(() => this.open(), 200);
    };
    s.on('data', (r) => {
      this.lastTTL = Number(r.TTL);
      if (Number(r.TTL) > 0) this.ok++;
    });
    s.on('error', lost);
    s.on('end', lost);
  }

  start() {
    this.open();
    this.timer = setInterval(() => {
      if (this.stream) this.stream.write({ ID: this.id });
    }, 1000);
  }

  stop() {
    clearInterval(this.timer);
    if (this.stream) this.stream.cancel();
    this.stream = null;
  }
}

// A service the member answers UNIMPLEMENTED for: nothing to check yet; conform.py reports the
// run as skipped (exit status 77), not passed.
function notServed(what, why) {
  log(`NOT-SERVED: ${what} (${why})`);
  process.exit(77);
}

// Lines from conform.py on stdin.
const rl = readline.createInterface({ input: process.stdin });
const lines = [];
rl.on('line', (l) => lines.push(l));

async function main() {
  const head = await anyCall('kv', 'Range', { key: B('f/none') });
  const from = Number(head.header.revision) + 1;
  const watchers = names.map((n) => new Watcher('watcher@' + n, n, from));
  watchers.forEach((w) => w.open());

  await sleep(300);
  let kept;
  try {
    kept = await call(cli[names[0]].lease, 'LeaseGrant', { TTL: String(TTL) });
  } catch (e) {
    if (e.code === grpc.status.UNIMPLEMENTED) notServed('Lease', e.details);
    kept = await anyCall('lease', 'LeaseGrant', { TTL: String(TTL) });
  }
  const abandoned = await anyCall('lease', 'LeaseGrant', { TTL: String(TTL) });
  await anyCall('kv', 'Put', { key: B('fl/kept'), value: B('k'), lease: kept.ID });
  await anyCall('kv', 'Put', { key: B('fl/abandoned'), value: B('a'), lease: abandoned.ID });
  const ka = new KeepAlive(kept.ID);
  ka.start();
  log(`leases granted (TTL ${TTL} s): kept ${kept.ID}, abandoned ${abandoned.ID}`);

  const acked = [];
  let killAt = null;
  let victim = null;
  let writer = 0;
  let asked = false;
  const noteKill = () => {
    const got = lines.find((l) => l.startsWith('KILLED '));
    if (!got) return false;
    victim = got.split(' ')[1];
    dead.add(victim);
    killAt = Date.now();
    ackedAtKill = acked.length;
    log(`leader ${victim} killed`);
    return true;
  };
  const deadline = Date.now() + WRITE_SECS * 1000;
  let ackedAtKill = 0;
  for (let i = 0; i < TOTAL && Date.now() < deadline; i++) {
    if (killAt !== null && acked.length - ackedAtKill >= AFTER_KILL) break;
    // The kill is asked for mid-stream: the writer goes on while conform.py kills the leader.
    if (acked.length >= BEFORE_KILL && !asked) {
      process.stdout.write('KILL-LEADER\n');
      asked = true;
    }
    if (asked && killAt === null) noteKill();
    // One attempt per key: a put that timed out may still apply, and then shows in the history
    // without an acknowledgement; it is never written twice.
    const l = live();
    const n = l[writer % l.length];
    try {
      const r = await call(cli[n].kv, 'Put', { key: B('f/k' + String(i).padStart(4, '0')), value: B('v' + i) });
      acked.push({ key: 'f/k' + String(i).padStart(4, '0'), rev: Number(r.header.revision) });
    } catch (e) {
      writer++;
      await sleep(100);
    }
  }
  log(`writer: ${acked.length} puts acknowledged, ${acked.length - ackedAtKill} after the kill`);
  if (!asked) throw new Error('the writer never reached the kill');
  if (killAt === null && !(await waitFor(noteKill, 15000))) throw new Error('no KILLED answer within 15 s');

  // The abandoned lease expires; the kept one survives past its TTL.
  const limit = TTL * 1000 + 2 * ELECTION_MS + SLACK_MS;
  const gone = await waitFor(async () => {
    const r = await anyCall('kv', 'Range', { key: B('fl/abandoned') }, 3);
    return Number(r.count) === 0;
  }, limit + 5000 - (Date.now() - killAt));
  const goneMs = Date.now() - killAt;
  if (!gone) fail(`the abandoned lease's key is still there ${goneMs} ms after the kill`);
  else if (goneMs > limit) fail(`the abandoned lease's key went ${goneMs} ms after the kill (limit ${limit} ms)`);
  else log(`abandoned lease expired ${goneMs} ms after the kill (limit ${limit} ms)`);
  await sleep(Math.max(0, TTL * 1000 + 1500 - (Date.now() - killAt)));
  const k = await anyCall('kv', 'Range', { key: B('fl/kept') });
  if (Number(k.count) !== 1) fail(`the kept lease's key is gone ${Date.now() - killAt} ms after the kill`);
  const ttl = await anyCall('lease', 'LeaseTimeToLive', { ID: kept.ID });
  if (!(Number(ttl.TTL) > 0)) fail(`the kept lease has TTL ${ttl.TTL} after the kill`);
  log(`kept lease: ${ka.ok} keepalives answered, TTL now ${ttl.TTL}`);
  ka.stop();

  // The final history of f/: each key was put once, so its mod_revision is its one event.
  const fin = await anyCall('kv', 'Range', { key: B('f/'), range_end: prefixEnd('f/') });
  const hist = fin.kvs.map((kv) => ({ key: kv.key.toString(), rev: Number(kv.mod_revision),
    version: Number(kv.version) })).sort((a, b) => a.rev - b.rev);
  const last = hist.length ? hist[hist.length - 1].rev : 0;
  for (const h of hist) if (h.version !== 1) fail(`${h.key} has version ${h.version}`);
  const byKey = new Map(hist.map((h) => [h.key, h.rev]));
  for (const a of acked) {
    if (byKey.get(a.key) !== a.rev) fail(`acknowledged put ${a.key} at ${a.rev} is in the history at ${byKey.get(a.key)}`);
  }
  log(`history: ${hist.length} puts (${acked.length} acknowledged), last revision ${last}`);
  await waitFor(() => watchers.every((w) => w.last >= last || w.error), 10000);
  const want = hist.map((h) => h.key + '@' + h.rev).join(' ');
  for (const w of watchers) {
    w.close();
    if (w.error) fail(`${w.name}: ${w.error}`);
    const got = w.events.map((e) => e.key + '@' + e.rev);
    const revs = w.events.map((e) => e.rev);
    const repeated = revs.filter((r, i) => i > 0 && r <= revs[i - 1]);
    if (repeated.length) fail(`${w.name}: revisions repeated or out of order: ${repeated.slice(0, 10)}`);
    if (got.join(' ') !== want) {
      const g = new Set(got);
      const missing = hist.filter((h) => !g.has(h.key + '@' + h.rev)).map((h) => h.key + '@' + h.rev);
      fail(`${w.name}: ${got.length} events, history has ${hist.length}; missing ${missing.slice(0, 10)}`);
    }
    log(`${w.name}: ${w.events.length} events, ${w.resumes} resumes, now on ${w.member}`);
  }
  for (const n of names) for (const c of Object.values(cli[n])) c.close();
  rl.close();
  if (problems.length) {
    log(`FAIL: ${problems.length} problems`);
    process.exit(1);
  }
  log('PASS');
  process.exit(0);
}

const timer = setTimeout(() => {
  log('FAILED: past the script deadline (120 s)');
  process.exit(3);
}, 120000);
timer.unref();
withTimeout(main(), 115000, 'failover').catch((e) => {
  log('FAILED: ' + (e && e.stack ? e.stack : String(e)));
  process.exit(2);
});
