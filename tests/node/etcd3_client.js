'use strict';
// etcd3_client.js: the npm etcd3 client (on @grpc/grpc-js, a gRPC stack other than etcdctl's
// grpc-go) against a cluster: put/get/delete, txn with if/then/else, prefix reads with limit and
// sort, leases kept alive and let expire with keys attached, a watch with prev_kv, member list
// and status. Revisions are printed relative to the cluster's revision when a part starts, so a
// part that fails cannot shift the numbers of the next.
//
//   node etcd3_client.js --endpoints http://127.0.0.1:2379,... --flavour etcd|cairn
const { Etcd3 } = require('etcd3');
const { args, emit, check, step, sleep, waitFor, start } = require('./conform_lib');

const opts = args();
const hosts = opts.endpoints.split(',');

async function main() {
  const client = new Etcd3({
    hosts,
    dialTimeout: 3000,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 5000 }),
  });
  const headRev = async () => Number((await client.getAll().prefix('\0none/').exec()).header.revision);
  const rel = (base, r) => (r === undefined || r === null ? r : Number(r) - base);

  // --- put, get, delete ---
  let base = await headRev();
  await step('put a/1..a/5', async () => {
    const revs = [];
    for (let i = 1; i <= 5; i++) {
      const r = await client.put('a/' + i).value('v' + (6 - i));
      revs.push(rel(base, r.header.revision));
    }
    return revs;
  });
  await step('get a/3 string', () => client.get('a/3').string());
  await step('get a/missing', () => client.get('a/missing').string());
  await step('get a/3 exec', async () => {
    const r = await client.get('a/3').exec();
    return {
      count: Number(r.count), more: r.more,
      kvs: r.kvs.map((kv) => ({ key: kv.key.toString(), value: kv.value.toString(),
        create: rel(base, kv.create_revision), mod: rel(base, kv.mod_revision),
        version: Number(kv.version), lease: kv.lease })),
    };
  });
  await step('put a/2 getPrevious', async () => {
    const p = await client.put('a/2').value('v2b').getPrevious();
    return p ? { key: p.key.toString(), value: p.value.toString(), version: Number(p.version) } : p;
  });
  await step('getAll prefix a/ keys', () => client.getAll().prefix('a/').keys());
  await step('getAll prefix a/ limit 2 sort Key Descend', () =>
    client.getAll().prefix('a/').limit(2).sort('Key', 'Descend').strings());
  await step('getAll prefix a/ sort Value Ascend', async () => {
    const r = await client.getAll().prefix('a/').sort('Value', 'Ascend').exec();
    return r.kvs.map((kv) => kv.value.toString());
  });
  await step('getAll prefix a/ sort Mod Descend limit 3', async () => {
    const r = await client.getAll().prefix('a/').sort('Mod', 'Descend').limit(3).exec();
    return { keys: r.kvs.map((kv) => kv.key.toString()), more: r.more, count: Number(r.count) };
  });
  await step('getAll prefix a/ count', () => client.getAll().prefix('a/').count());
  await step('getAll range a/2..a/4', () => client.getAll().inRange({ start: 'a/2', end: 'a/4' }).keys());
  await step('delete a/1 getPrevious', async () =>
    (await client.delete().key('a/1').getPrevious()).map((kv) => [kv.key.toString(), kv.value.toString()]));
  await step('delete prefix a/', async () => Number((await client.delete().prefix('a/').exec()).deleted));
  await step('get after delete', () => client.getAll().prefix('a/').count());
  await step('get at an old revision', async () => {
    const r = await client.get('a/3').revision(String(base + 3)).string();
    return r;
  });

  // --- txn ---
  base = await headRev();
  await client.put('t/k').value('x');
  const txn = async (name, cmpValue) =>
    step(name, async () => {
      const r = await client.if('t/k', 'Value', '==', cmpValue)
        .then(client.put('t/then').value('1'), client.get('t/k'))
        .else(client.get('t/k'), client.put('t/else').value('1'))
        .commit();
      return {
        succeeded: r.succeeded, rev: rel(base, r.header.revision),
        responses: r.responses.map((x) => x.response + (x.response_range ?
          ':' + x.response_range.kvs.map((kv) => kv.value.toString()).join(',') : '')),
      };
    });
  await txn('txn then branch', 'x');
  await txn('txn else branch', 'nope');
  await step('txn compare version and mod', async () => {
    const k = await client.get('t/k').exec();
    const mod = k.kvs[0].mod_revision;
    const r = await client.if('t/k', 'Version', '==', 1).and('t/k', 'Mod', '==', mod)
      .and('t/none', 'Create', '==', 0)
      .then(client.delete().key('t/then')).commit();
    return { succeeded: r.succeeded, n: r.responses.length };
  });
  await step('txn keys after', () => client.getAll().prefix('t/').strings());

  // --- leases ---
  base = await headRev();
  const kept = client.lease(3);
  await step('lease grant (3 s, kept alive)', async () => {
    const id = await kept.grant();
    return typeof id === 'string' && id.length > 0 ? 'granted' : 'no id';
  });
  await step('put with lease', async () => {
    await kept.put('l/kept').value('k');
    return 'ok';
  });
  await step('lease keepaliveOnce', async () => {
    const r = await kept.keepaliveOnce();
    return { TTL: Number(r.TTL) };
  });
  const dropped = client.lease(2, { autoKeepAlive: false });
  await step('lease grant (2 s, not kept alive)', async () => {
    await dropped.grant();
    await dropped.put('l/dropped').value('d');
    return 'ok';
  });
  await step('lease timeToLive with keys', async () => {
    const r = await client.leaseClient.leaseTimeToLive({ ID: await kept.grant(), keys: true });
    return { granted: Number(r.grantedTTL), within: Number(r.TTL) >= 1 && Number(r.TTL) <= 3,
      keys: r.keys.map((k) => k.toString()) };
  });
  await step('lease leases lists both', async () => {
    const r = await client.leaseClient.leaseLeases();
    return r.leases.length;
  });
  const gone = await waitFor(async () => !(await client.get('l/dropped').exists()), 8000);
  check('abandoned lease key gone within 8 s', gone, 'l/dropped still present');
  await sleep(1500); // more than the kept lease's TTL since its grant
  await step('kept lease key still present', () => client.get('l/kept').string());
  await step('lease revoke', async () => {
    await kept.revoke();
    return 'ok';
  });
  await step('key gone with the revoked lease', () => client.get('l/kept').exists());

  // --- watch ---
  base = await headRev();
  const events = [];
  let watcher;
  await step('watch create prefix w/ with prev kv', async () => {
    watcher = await client.watch().prefix('w/').withPreviousKV().create();
    watcher.on('put', (kv, prev) => events.push(['put', kv.key.toString(), kv.value.toString(),
      prev ? prev.value.toString() : null, rel(base, kv.mod_revision)]));
    watcher.on('delete', (kv, prev) => events.push(['delete', kv.key.toString(), null,
      prev ? prev.value.toString() : null, rel(base, kv.mod_revision)]));
    return 'created';
  });
  await client.put('w/1').value('a');
  await client.put('w/1').value('b');
  await client.put('w/2').value('c');
  await client.delete().key('w/1');
  await waitFor(() => events.length >= 4, 5000);
  emit('watch events', events);
  await step('watch from a past revision', async () => {
    const seen = [];
    const w = await client.watch().key('w/1').startRevision(String(base + 1)).create();
    w.on('put', (kv) => seen.push(['put', kv.value.toString()]));
    w.on('delete', () => seen.push(['delete']));
    await waitFor(() => seen.length >= 3, 5000);
    await w.cancel();
    return seen;
  });
  if (watcher) await step('watch cancel', async () => { await watcher.cancel(); return 'ok'; });

  // --- cluster and maintenance ---
  await step('member list', async () => {
    const r = await client.cluster.memberList({});
    return r.members.map((m) => ({ name: m.name, learner: m.isLearner, peers: m.peerURLs.length,
      clients: m.clientURLs.length })).sort((x, y) => (x.name < y.name ? -1 : 1));
  });
  await step('status', async () => {
    const s = await client.maintenance.status({});
    const members = (await client.cluster.memberList({})).members.map((m) => String(m.ID));
    return {
      versionSet: s.version.length > 0, dbSizePositive: Number(s.dbSize) > 0,
      leaderIsMember: members.includes(String(s.leader)), termPositive: Number(s.raftTerm) > 0,
    };
  });
  client.close();
}

start(main, 90000);
