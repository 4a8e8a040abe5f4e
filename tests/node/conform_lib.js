'use strict';
// conform_lib.js: what the client scripts run by tests/conformance/conform.py share. A script
// prints one JSON line per step, {"step": name, "out": value}; conform.py runs it against an etcd
// 3.4 cluster and a Cairn cluster and compares the steps. An assertion prints "ok" or
// "FAILED: why" as its step's value, so a failure shows in the comparison and fails the run
// against etcd (the reference) outright. Every wait is bounded: a step by stepTimeout, the
// whole script by the deadline given to start().

function args() {
  const a = {};
  const v = process.argv.slice(2);
  for (let i = 0; i + 1 < v.length; i += 2) a[v[i].replace(/^--/, '')] = v[i + 1];
  return a;
}

let failures = 0;

function emit(step, out) {
  process.stdout.write(JSON.stringify({ step, out: out === undefined ? null : out }) + '\n');
}

function check(step, cond, detail) {
  if (cond) {
    emit(step, 'ok');
  } else {
    failures++;
    emit(step, 'FAILED: ' + (typeof detail === 'string' ? detail : JSON.stringify(detail)));
  }
  return cond;
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new Error('timed out after ' + ms + ' ms: ' + what)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

// What an error looks like to a client: its class (etcd3's mapping of the gRPC status) and the
// server's message.
function errText(e) {
  if (!e) return 'no error';
  const code = e.code !== undefined ? ' code=' + e.code : '';
  const msg = String(e.details || e.message || e).split('\n')[0];
  return 'error: ' + (e.constructor ? e.constructor.name : 'Error') + code + ': ' + msg;
}

// step(name, fn): runs fn (bounded); emits what it returns, or the error it throws.
async function step(name, fn, ms = 10000) {
  try {
    const v = await withTimeout(Promise.resolve().then(fn), ms, name);
    if (v !== undefined) emit(name, v);
    return v;
  } catch (e) {
    emit(name, errText(e));
    return undefined;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// waitFor(fn, ms): polls fn every 100 ms until it returns a truthy value or ms pass.
async function waitFor(fn, ms) {
  const end = Date.now() + ms;
  for (;;) {
    let v;
    try {
      v = await fn();
    } catch (e) {
      v = undefined;
    }
    if (v || Date.now() >= end) return v;
    await sleep(100);
  }
}

function start(main, deadlineMs) {
  const t = setTimeout(() => {
    emit('deadline', 'FAILED: the script ran past ' + deadlineMs + ' ms');
    process.exit(3);
  }, deadlineMs);
  t.unref();
  main()
    .then(() => {
      emit('assertions failed', failures);
      process.exit(failures ? 1 : 0);
    })
    .catch((e) => {
      emit('script error', 'FAILED: ' + (e && e.stack ? e.stack : String(e)));
      process.exit(2);
    });
}

module.exports = { args, emit, check, withTimeout, errText, step, sleep, waitFor, start };
