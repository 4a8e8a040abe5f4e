'use strict';
// k8s_pattern.js: the calls a Kubernetes API server makes to its etcd, raw through
// @grpc/grpc-js and @grpc/proto-loader on Cairn's own proto files (proto/etcdserverpb/rpc.proto):
// creates as Txn(mod_revision == 0 ? put : get), updates as Txn(mod_revision == X ? put : get)
// including a lost race, deletes as Txn with a compare, lists paged with a limit and the revision
// pinned to the first page's, count-only reads, a watch from a revision with prev_kv and a
// progress request, leases for short-lived objects (events), the compactor's Txn on
// compact_rev_key followed by Compact, and Status for the database size. Revisions are printed
// relative to the revision at the start.
//
//   node k8s_pattern.js --endpoints http://127.0.0.1:2379,... --flavour etcd|cairn
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { args, emit, check, step, waitFor, start, withTimeout } = require('./conform_lib');

const opts = args();
const eps = opts.endpoints.split(',').map((u) => u.replace(/^https?:\/\//, ''));
const repo = path.resolve(__dirname, '..', '..');
const def = protoLoader.loadSync(path.join(repo, 'proto', 'etcdserverpb', 'rpc.proto'), {
  includeDirs: [path.join(repo, 'proto')],
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
const pb = grpc.loadPackageDefinition(def).etcdserverpb;
const cred = grpc.credentials.createInsecure();
const kv = new pb.KV(eps[0], cred);
const lease = new pb.Lease(eps[0], cred);
const maint = new pb.Maintenance(eps[0], cred);
// The watch goes to another member, as an API server's watch cache may.
const watchSvc = new pb.Watch(eps[1 % eps.length], cred);

const B = (s) => Buffer.from(s);
const call = (svc, method, req) => new Promise((res, rej) => {
  svc[method](req, { deadline: Date.now() + 5000 }, (err, r) => (err ? rej(err) : res(r)));
});
const prefixEnd = (p) => {
  const b = Buffer.from(p);
  b[b.length - 1]++;
  return b;
};
let base = 0;
const rel = (r) => Number(r) - base;
const kvText = (k) => (k ? { key: k.key.toString(), value: k.value.toString(),
  mod: rel(k.mod_revision), create: rel(k.create_revision), version: Number(k.version),
  lease: k.lease !== '0' } : null);
const cmpMod = (key, rev) => ({ key: B(key), target: 'MOD', result: 'EQUAL', mod_revision: String(rev) });

// The API server's guarded write: compare on the key's mod_revision, put on success, read the
// current object on failure.
async function guardedPut(key, value, rev, leaseId) {
  const r = await call(kv, 'Txn', {
    compare: [cmpMod(key, rev)],
    success: [{ request_put: { key: B(key), value: B(value), lease: leaseId || '0' } }],
    failure: [{ request_range: { key: B(key) } }],
  });
  const out = { succeeded: r.succeeded, rev: rel(r.header.revision) };
  if (!r.succeeded) out.current = kvText(r.responses[0].response_range.kvs[0]);
  return out;
}

async function main() {
  base = Number((await call(kv, 'Range', { key: B('/registry/none') })).header.revision);

  // --- create, conflicting create, update, lost update, delete ---
  await step('create pods p1..p3', async () => {
    const o = [];
    for (const p of ['p1', 'p2', 'p3']) o.push(await guardedPut('/registry/pods/default/' + p, '{"v":1}', 0));
    return o;
  });
  await step('create p1 again (exists)', () => guardedPut('/registry/pods/default/p1', '{"v":9}', 0));
  let p1mod;
  await step('update p1 at its mod_revision', async () => {
    const g = await call(kv, 'Range', { key: B('/registry/pods/default/p1') });
    p1mod = g.kvs[0].mod_revision;
    return guardedPut('/registry/pods/default/p1', '{"v":2}', p1mod);
  });
  await step('update p1 at a stale mod_revision (conflict)', () =>
    guardedPut('/registry/pods/default/p1', '{"v":3}', p1mod));
  await step('delete p2 guarded', async () => {
    const g = await call(kv, 'Range', { key: B('/registry/pods/default/p2') });
    const r = await call(kv, 'Txn', {
      compare: [cmpMod('/registry/pods/default/p2', g.kvs[0].mod_revision)],
      success: [{ request_delete_range: { key: B('/registry/pods/default/p2'), prev_kv: true } }],
      failure: [{ request_range: { key: B('/registry/pods/default/p2') } }],
    });
    const d = r.responses[0].response_delete_range;
    return { succeeded: r.succeeded, deleted: Number(d.deleted), prev: kvText(d.prev_kvs[0]) };
  });
  await step('delete p2 guarded again (gone)', async () => {
    const r = await call(kv, 'Txn', {
      compare: [cmpMod('/registry/pods/default/p2', 0)],
      success: [{ request_range: { key: B('/registry/pods/default/p2') } }],
      failure: [{ request_delete_range: { key: B('/registry/pods/default/p2') } }],
    });
    return { succeeded: r.succeeded, count: Number(r.responses[0].response_range.count) };
  });

  // --- paged list at a pinned revision ---
  const pfx = '/registry/configmaps/';
  await step('create configmaps c0..c9', async () => {
    for (let i = 0; i < 10; i++) await guardedPut(pfx + 'ns/c' + i, 'cm' + i, 0);
    return 'ok';
  });
  await step('list pages of 3 at the first page\'s revision', async () => {
    const pages = [];
    let key = B(pfx);
    let rev = '0';
    let pinned = null;
    for (let n = 0; n < 10; n++) {
      const r = await call(kv, 'Range', { key, range_end: prefixEnd(pfx), limit: '3', revision: rev });
      if (pinned === null) {
        pinned = r.header.revision;
        rev = pinned;
        // Written between pages: invisible at the pinned revision.
        await call(kv, 'Put', { key: B(pfx + 'ns/c10'), value: B('late') });
        await call(kv, 'Put', { key: B(pfx + 'ns/c5'), value: B('changed') });
      }
      pages.push({ keys: r.kvs.map((k) => k.key.toString().slice(pfx.length)),
        values: r.kvs.map((k) => k.value.toString()), more: r.more, count: Number(r.count),
        headerRev: rel(r.header.revision) });
      if (!r.more) break;
      key = Buffer.concat([r.kvs[r.kvs.length - 1].key, Buffer.from([0])]);
    }
    return { pinned: rel(pinned), pages };
  });
  await step('count only', async () => {
    const r = await call(kv, 'Range', { key: B(pfx), range_end: prefixEnd(pfx), count_only: true });
    return { count: Number(r.count), kvs: r.kvs.length };
  });
  await step('keys only with limit 1', async () => {
    const r = await call(kv, 'Range', { key: B(pfx), range_end: prefixEnd(pfx), keys_only: true, limit: '1' });
    return { keys: r.kvs.map((k) => k.key.toString()), value: r.kvs[0].value.length, more: r.more };
  });

  // --- watch from a revision, prev_kv, progress ---
  const wfrom = Number((await call(kv, 'Range', { key: B('/registry/none') })).header.revision) + 1;
  await call(kv, 'Put', { key: B('/registry/pods/default/p3'), value: B('{"v":2}') });
  await call(kv, 'Put', { key: B('/registry/pods/default/p4'), value: B('{"v":1}') });
  await call(kv, 'DeleteRange', { key: B('/registry/pods/default/p4') });
  await step('watch from a revision with prev_kv, then a progress request', async () => {
    const stream = watchSvc.Watch();
    const got = { created: false, events: [], progress: null, lastEventRev: 0 };
    let phase = 0;
    const done = new Promise((resolve, reject) => {
      stream.on('data', (r) => {
        if (r.created) got.created = true;
        for (const e of r.events) {
          got.events.push({ type: e.type, key: e.kv.key.toString(), mod: rel(e.kv.mod_revision),
            prev: e.prev_kv ? e.prev_kv.value.toString() : null });
          got.lastEventRev = Math.max(got.lastEventRev, Number(e.kv.mod_revision));
        }
        if (phase === 0 && got.events.length >= 3) {
          phase = 1;
          stream.write({ progress_request: {} });
        } else if (phase === 1 && !r.created && r.events.length === 0) {
          got.progress = { atLeastLastEvent: Number(r.header.revision) >= got.lastEventRev,
            watchId: r.watch_id };
          resolve();
        }
        if (r.canceled) reject(new Error('watch canceled: ' + r.cancel_reason));
      });
      stream.on('error', reject);
    });
    stream.write({ create_request: { key: B('/registry/pods/'), range_end: prefixEnd('/registry/pods/'),
      start_revision: String(wfrom), prev_kv: true, progress_notify: true } });
    try {
      await withTimeout(done, 5000, 'watch events and progress');
    } finally {
      stream.cancel();
    }
    delete got.lastEventRev;
    return got;
  }, 8000);

  // --- leases for short-lived objects ---
  let leaseId = null;
  await step('lease grant 60 for events', async () => {
    const r = await call(lease, 'LeaseGrant', { TTL: '60' });
    leaseId = r.ID;
    return { TTL: Number(r.TTL), error: r.error };
  });
  await step('events put with the lease', async () => {
    const o = [];
    for (let i = 0; i < 3; i++) o.push(await guardedPut('/registry/events/default/e' + i, 'ev', 0, leaseId || '0'));
    return o.map((x) => x.succeeded);
  });
  await step('lease time to live with keys', async () => {
    const r = await call(lease, 'LeaseTimeToLive', { ID: leaseId || '1', keys: true });
    return { granted: Number(r.grantedTTL), ttlOk: Number(r.TTL) > 50 && Number(r.TTL) <= 60,
      keys: r.keys.map((k) => k.toString()).sort() };
  });
  await step('event keys carry the lease', async () => {
    const r = await call(kv, 'Range', { key: B('/registry/events/'), range_end: prefixEnd('/registry/events/') });
    return r.kvs.map((k) => k.lease === String(leaseId));
  });
  await step('lease revoke removes the events', async () => {
    await call(lease, 'LeaseRevoke', { ID: leaseId || '1' });
    const r = await call(kv, 'Range', { key: B('/registry/events/'), range_end: prefixEnd('/registry/events/'), count_only: true });
    return Number(r.count);
  });

  // --- the compactor ---
  const compactTo = Number((await call(kv, 'Range', { key: B('/registry/none') })).header.revision);
  const compactTxn = (version) => call(kv, 'Txn', {
    compare: [{ key: B('compact_rev_key'), target: 'VERSION', result: 'EQUAL', version: String(version) }],
    success: [{ request_put: { key: B('compact_rev_key'), value: B(String(compactTo)) } }],
    failure: [{ request_range: { key: B('compact_rev_key') } }],
  });
  await step('compactor txn (version 0)', async () => {
    const r = await compactTxn(0);
    return { succeeded: r.succeeded, rev: rel(r.header.revision) };
  });
  await step('compact', async () => {
    const r = await call(kv, 'Compact', { revision: String(compactTo) });
    return { rev: rel(r.header.revision) };
  });
  await step('compactor txn of another server (stale version 0)', async () => {
    const r = await compactTxn(0);
    const cur = r.responses[0].response_range.kvs[0];
    return { succeeded: r.succeeded, version: Number(cur.version), value: rel(cur.value.toString()) };
  });
  await step('list at a compacted revision', async () => {
    try {
      await call(kv, 'Range', { key: B(pfx), range_end: prefixEnd(pfx), revision: String(compactTo - 1) });
      return 'no error';
    } catch (e) {
      return { code: e.code, details: e.details };
    }
  });
  await step('compact again at the same revision', async () => {
    try {
      await call(kv, 'Compact', { revision: String(compactTo) });
      return 'no error';
    } catch (e) {
      return { code: e.code, details: e.details };
    }
  });

  // --- status ---
  await step('status', async () => {
    const s = await call(maint, 'Status', {});
    return { dbSizePositive: Number(s.dbSize) > 0, version: s.version.length > 0,
      revisionMatches: rel(s.header.revision) === rel(compactTo) + 1 };
  });
  const r = await waitFor(() => true, 10);
  check('done', r, '');
  for (const c of [kv, lease, maint, watchSvc]) c.close();
}

start(main, 90000);
