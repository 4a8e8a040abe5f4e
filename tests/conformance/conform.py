#!/usr/bin/env python3
"""conform.py: the same client scripts against a 3-member etcd 3.4 cluster and a 3-member Cairn
cluster, outputs normalised and compared.

  conform.py [common flags] etcdctl <name>...   etcdctl transcripts (tests/conformance/transcripts)
  conform.py [common flags] node <script>...    Node.js clients (tests/node/<script>.js)
  conform.py [common flags] failover [etcd|cairn]...
                                                watch and lease across kill -9 of the leader
  common flags: --cairn BIN --etcd BIN --etcdctl BIN --node BIN [--keep]

Each transcript runs, command by command, against each cluster (etcd first); per command the exit
status, stdout and stderr are kept. What legitimately differs between two clusters is replaced by
a placeholder before the comparison: member, cluster and lease ids (by the names the harness knows
them by), URLs and ports, raft term and index, db sizes, timings, server versions, the `ttl`
remaining on a lease, timestamps in etcdctl's own log lines, and the order of lists whose order is
not defined (member list, lease list, the keys of a lease). Revisions are compared: both clusters
run the same writes.

A command whose normalised outputs differ fails the test, unless allowed.txt lists it (id, scope,
command, the part that differs, reason) and docs/api-compat.md, in its section "Differences
found by the conformance tests", names the id. An allowed difference is still printed, marked as
allowed; an entry that no longer matches any difference is reported, so the list can shrink as
Cairn grows. A member that exits by itself or logs a sanitizer report fails the run.

Transcripts read like what a user types:

  # comment
  $ put k v --prev-kv                 etcdctl against m1 (the default endpoint)
  $[ep=m2] get k --consistency=s      options: ep=<member>|all|leader|follower, sort (sort the
  $[sort] lease list                  output's lines), bg=<name> (start in the background),
  $[http] POST /v3/kv/range {...}     http (METHOD PATH [BODY] to the member's client URL
                                      over HTTP/1.1; with metrics: which of METRICS it has;
                                      with stream=N: the first N lines)
  $ txn -i                            a line "<<" right after a command starts its stdin, which
  <<                                  runs up to a line ">>"
  ...
  >>
  % sleep 0.5
  % collect <name> <lines> <secs>     waits until background <name> printed <lines> lines (at
                                      most <secs> s), then stops it and compares its output
  % id <VAR> hex|dec <regex>          takes group 1 of the last command's stdout as an id: {VAR}
                                      in later commands, <VAR> in every output
  % var <VAR> <regex>                 the same, without normalising its value
  % roles                             {LEADER}, {FOLLOWER} (ids, hex) and {LEADER_EP},
                                      {FOLLOWER_EP} of the cluster now; the ids are shown as
                                      <leader> and <follower> in outputs
  % expect-fail                       the harness itself fails unless the last command failed
                                      on etcd (guards the transcript, not the comparison)

  Always defined: {TMP} (the cluster's scratch directory, shown as <tmp>), {FREE1} and {FREE2}
  (free ports for members that are added but never started, shown as <free1>, <free2>).
"""

import argparse
import difflib
import http.client
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clusters  # noqa: E402
from clusters import Cluster, log  # noqa: E402

SKIP = 77  # ctest's SKIP_RETURN_CODE: a service the member does not serve yet
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DOC = os.path.join(REPO, "docs", "api-compat.md")
DOC_SECTION = "## Differences found by the conformance tests"


class HarnessError(Exception):
    """The transcript itself is wrong (it fails against etcd, the reference)."""


# --- normalisation ----------------------------------------------------------------------------

# JSON keys whose values depend on the cluster's life, not on the API's behaviour.
VOLATILE_KEYS = {"raft_term", "raftTerm", "raftIndex", "raftAppliedIndex", "dbSize",
                 "dbSizeInUse", "RaftTerm", "RaftIndex", "RaftAppliedIndex", "DBSize", "took"}
# The seconds left on a lease (timetolive): a second may tick between the two clusters.
REMAINING_KEYS = {"ttl"}
LOG_KEEP = ("level", "msg", "error")


class Normaliser:
    def __init__(self, cl):
        self.cl = cl
        self.ids = {}  # int -> placeholder
        for m, i in cl.ids.items():
            self.ids[i] = "<id:%s>" % m
        if cl.cluster_id is not None:
            self.ids[cl.cluster_id] = "<cluster-id>"
        self.ports = {}
        for m in cl.names:
            self.ports[cl.cport[m]] = "<client:%s>" % m
            self.ports[cl.pport[m]] = "<peer:%s>" % m
        self.role_ids = {}

    def add_id(self, value, name):
        self.ids[value] = "<%s>" % name

    def _id_text(self, text, ids):
        for i, ph in sorted(ids.items(), key=lambda kv: -len(str(kv[0]))):
            for form in ("%16x" % i, "%016x" % i, "%x" % i, "%d" % i):
                if form.strip() != form:  # etcdctl's %16x: padding after a separating space
                    text = text.replace(" " + form, " " + ph)
                    continue
                text = re.sub(r"(?<![0-9a-fA-F])%s(?![0-9a-fA-F])" % re.escape(form), ph, text)
        return text

    def text(self, s, ids):
        s = s.replace(self.cl.tmp, "<tmp>")
        s = re.sub(r"127\.0\.0\.1:(\d+)",
                   lambda mo: self.ports.get(int(mo.group(1)), "127.0.0.1:<port>"), s)
        s = self._id_text(s, ids)
        s = re.sub(r"took = [0-9.]+[a-zµ]+", "took = <duration>", s)
        s = re.sub(r"\b\d+(\.\d+)? ?(B|kB|MB|GB)\b", "<size>", s)
        s = re.sub(r"\b3\.\d+\.\d+\b", "<version>", s)
        s = re.sub(r"\b0x[0-9a-f]{6,}\b", "0x<address>", s)  # a Go stack trace
        s = re.sub(r"\+0x[0-9a-f]+$", "+0x<offset>", s)
        s = re.sub(r"remaining\(-?\d+s\)", "remaining(<n>s)", s)
        s = re.sub(r"attached keys\(\[([^\]]*)\]\)",
                   lambda mo: "attached keys([%s])" % " ".join(sorted(mo.group(1).split())), s)
        # member add: etcdctl prints the initial cluster in Go's map order.
        s = re.sub(r'^(ETCD_INITIAL_CLUSTER=")([^"]*)"',
                   lambda mo: mo.group(1) + ",".join(sorted(mo.group(2).split(","))) + '"', s)
        # Tables: column widths follow the raw values, so cells are compared stripped.
        if re.fullmatch(r"\+[-+]+\+", s):
            return "+--+"
        if s.startswith("|") and s.endswith("|"):
            s = "| " + " | ".join(c.strip() for c in s[1:-1].split("|")) + " |"
        return s

    def value(self, v, ids, key=None, parent=None):
        if isinstance(v, dict):
            out = {}
            status_like = "dbSize" in v or "raftIndex" in v
            for k, x in v.items():
                if k in VOLATILE_KEYS or (k == "version" and status_like):
                    out[k] = "<%s>" % k
                elif k in REMAINING_KEYS and isinstance(x, int):
                    out[k] = "<remaining>"
                elif k == "leader" and isinstance(x, (int, str)) and str(x).isdigit() and \
                        int(x) in ids:
                    out[k] = "<a member>"
                elif k == "TTL" and "grantedTTL" in v:  # the gateway's timetolive: remaining
                    out[k] = "<remaining>"
                else:
                    out[k] = self.value(x, ids, k, v)
            if isinstance(out.get("members"), list):
                out["members"] = sorted(out["members"], key=lambda m: json.dumps(m, sort_keys=True))
            if isinstance(out.get("keys"), list) and all(isinstance(k, str) for k in out["keys"]):
                out["keys"] = sorted(out["keys"])  # a lease's keys: etcd keeps them in a map
            if isinstance(out.get("leases"), list):
                out["leases"] = sorted(out["leases"], key=lambda m: json.dumps(m, sort_keys=True))
            return out
        if isinstance(v, list):
            return [self.value(x, ids, key, parent) for x in v]
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            return ids.get(v, v)
        if isinstance(v, str):
            if re.fullmatch(r"\d{6,}", v) and int(v) in ids:
                return ids[int(v)]
            return self.text(v, ids)
        return v

    def log_line(self, line):
        """etcdctl's own zap log lines: timestamps, callers and client ids dropped."""
        try:
            d = json.loads(line)
        except ValueError:
            return None
        if not isinstance(d, dict) or "level" not in d:
            return None
        return json.dumps({k: d[k] for k in LOG_KEEP if k in d}, sort_keys=True)

    def stream(self, s, ids, sort=False, table=None):
        s = s.rstrip("\n")
        if not s:
            return ""
        try:
            if "\n" not in s and self.log_line(s) is not None:
                raise ValueError("one of etcdctl's log lines")
            d = json.loads(s)
            return json.dumps(self.value(d, ids), indent=1, sort_keys=True)
        except ValueError:
            pass
        lines = []
        for line in s.split("\n"):
            ll = self.log_line(line) if line.startswith("{") else None
            if ll is None and line.startswith("{"):
                try:
                    ll = json.dumps(self.value(json.loads(line), ids), sort_keys=True)
                except ValueError:
                    ll = None
            if ll is None:
                ll = self.text(line, ids)
                if table:
                    ll = table(ll)
            lines.append(ll)
        if sort:
            # Table rows are sorted among themselves, below the header row; other lines all.
            rows = [i for i, ln in enumerate(lines) if ln.startswith("|")]
            if rows:
                body = rows[1:]
                for i, ln in zip(body, sorted(lines[i] for i in body)):
                    lines[i] = ln
            else:
                lines.sort()
        return "\n".join(lines)


def status_row(line):
    """endpoint status, simple or table: is-leader, raft term and indexes are the cluster's."""
    if line.startswith("|") and "ENDPOINT" not in line:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 9:
            for i in (4, 6, 7, 8):
                cells[i] = "<%d>" % i
            return "| " + " | ".join(cells) + " |"
        return line
    cells = [c.strip() for c in line.split(",")]  # an id may be printed space-padded
    if len(cells) >= 9 and "<client" in cells[0]:
        for i in (4, 6, 7, 8):
            cells[i] = "<%d>" % i
        return ", ".join(cells)
    return line


def render(rc, out, err, norm, ids, sort=False, table=None):
    return "exit %d\n-- stdout\n%s\n-- stderr\n%s\n" % (
        rc, norm.stream(out, ids, sort, table), norm.stream(err, ids, sort))


# --- transcripts ------------------------------------------------------------------------------

class Step:
    def __init__(self, kind, text, lineno, opts=None, stdin=None):
        self.kind = kind  # "cmd" or "dir"
        self.text = text
        self.lineno = lineno
        self.opts = opts or {}
        self.stdin = stdin


def parse_transcript(path):
    steps = []
    with open(path) as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("$"):
            opts = {}
            mo = re.match(r"\$(\[([^\]]*)\])?\s+(.*)$", line)
            if not mo:
                raise HarnessError("%s:%d: bad command line" % (path, i))
            for o in filter(None, (mo.group(2) or "").split(",")):
                k, _, v = o.partition("=")
                opts[k.strip()] = v.strip() or True
            st = Step("cmd", mo.group(3), i, opts)
            if i < len(lines) and lines[i].strip() == "<<":
                body = []
                i += 1
                while i < len(lines) and lines[i].strip() != ">>":
                    body.append(lines[i])
                    i += 1
                if i >= len(lines):
                    raise HarnessError("%s:%d: stdin not closed by >>" % (path, st.lineno))
                i += 1
                st.stdin = "\n".join(body) + "\n"
            steps.append(st)
        elif line.startswith("%"):
            steps.append(Step("dir", line[1:].strip(), i))
        else:
            raise HarnessError("%s:%d: a line starts with $, %%, # or is empty" % (path, i))
    return steps


class Background:
    def __init__(self, proc, key, opts, logpath):
        self.proc = proc
        self.key = key
        self.opts = opts
        self.path = logpath


def run_transcript(cl, tname, steps, keep):
    """Runs the steps against cl; returns [(key, rendered output)]."""
    norm = Normaliser(cl)
    env = {"TMP": cl.tmp}
    # Two free ports for members that are added but never started (shown as <free1>, <free2>).
    for n, port in enumerate(clusters.free_ports(2), 1):
        env["FREE%d" % n] = str(port)
        norm.ports[port] = "<free%d>" % n
    results = []
    last = None  # (rc, out, err) of the last command
    redo = None  # renders the last command's output again
    bg = {}
    seq = 0
    for st in steps:
        if st.kind == "dir":
            words = st.text.split(None, 3)
            op = words[0]
            if op == "sleep":
                time.sleep(float(words[1]))
            elif op in ("id", "var"):
                name = words[1]
                if op == "id":
                    base, rx = words[2], st.text.split(None, 3)[3]
                else:
                    base, rx = None, st.text.split(None, 2)[2]
                mo = re.search(rx, last[1]) if last else None
                if not mo and cl.flavour == "etcd":
                    raise HarnessError("%s:%d: %s: /%s/ not found in [%s]" % (
                        tname, st.lineno, cl.flavour, rx, "%s] [%s" % last[1:] if last else ""))
                if not mo:
                    # The command failed on Cairn (its difference is already recorded): later
                    # commands get a value no cluster has given out.
                    log("%s:%d: %s: /%s/ not found; %s stands for an unknown id" % (
                        tname, st.lineno, cl.flavour, rx, name))
                    val = "7ffffffffffffff0" if base == "hex" else "999999999"
                else:
                    val = mo.group(1)
                if base:
                    n = int(val, 16 if base == "hex" else 10)
                    env[name] = "%x" % n
                    env[name + ".dec"] = "%d" % n
                    norm.add_id(n, name)
                    if redo:  # the command that gave out the id shows it by name too
                        results[-1] = (results[-1][0], redo())
                else:
                    env[name] = val
            elif op == "roles":
                lead = cl.leader()
                fol = [m for m in cl.names if m != lead][0]
                env.update(LEADER="%x" % cl.ids[lead], FOLLOWER="%x" % cl.ids[fol],
                           LEADER_EP=cl.ep[lead], FOLLOWER_EP=cl.ep[fol])
                norm.role_ids = {cl.ids[lead]: "<leader>", cl.ids[fol]: "<follower>"}
            elif op == "collect":
                redo = None
                name, nlines, secs = words[1], int(words[2]), float(words[3])
                b = bg.pop(name)
                deadline = time.monotonic() + secs
                while time.monotonic() < deadline and b.proc.poll() is None:
                    with open(b.path, errors="replace") as f:
                        if len(f.read().splitlines()) >= nlines:
                            break
                    time.sleep(0.05)
                time.sleep(0.2)  # anything printed right after the awaited line
                clusters.reap(b.proc)
                with open(b.path, errors="replace") as f:
                    out = f.read()
                with open(b.path + ".err", errors="replace") as f:
                    err = f.read()
                rc = b.proc.returncode
                rc = 0 if rc == -signal.SIGKILL else rc
                ids = {**norm.ids, **norm.role_ids} if b.opts.get("roles") else norm.ids
                results.append((b.key, render(rc, out, err, norm, ids, bool(b.opts.get("sort")))))
            elif op == "expect-fail":
                if cl.flavour == "etcd" and last and last[0] == 0:
                    raise HarnessError("%s:%d: the command before succeeded on etcd" % (
                        tname, st.lineno))
            else:
                raise HarnessError("%s:%d: unknown directive %s" % (tname, st.lineno, op))
            continue
        def subst(t):
            return re.sub(r"\{([A-Z_0-9.]+)\}", lambda mo: env[mo.group(1)], t)
        text = subst(st.text)
        stdin = subst(st.stdin) if st.stdin is not None else None
        args = shlex.split(text)
        ep = st.opts.get("ep", "m1")
        if ep == "all":
            ep = cl.all
        elif ep in cl.ep:
            ep = cl.ep[ep]
        elif ep in ("leader", "follower"):
            ep = env[ep.upper() + "_EP"]
        if "http" in st.opts:
            out = http_call(ep if ep != cl.all else cl.ep["m1"], text, st.opts)
            key = "[http] " + st.text
            results.append((key, "-- http\n%s\n" % norm.stream(out, norm.ids)))
            redo = None
            continue
        if "bg" in st.opts:
            seq += 1
            path = os.path.join(cl.tmp, "bg-%d.out" % seq)
            cmd = [cl.etcdctl, "--endpoints=" + ep, "--dial-timeout=2s",
                   "--command-timeout=5s"] + args
            with open(path, "wb") as o, open(path + ".err", "wb") as e:
                p = clusters.spawn(cmd, stdout=o, stderr=e,
                                   stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                   env=dict(os.environ, ETCDCTL_API="3"))
            if stdin:
                # Written, not closed: interactive watch ends at end of input.
                p.stdin.write(stdin.encode())
                p.stdin.flush()
            bg[st.opts["bg"]] = Background(p, "[bg %s] %s" % (st.opts["bg"], st.text),
                                           st.opts, path)
            continue
        rc, out, err = cl.ctl(args, ep=ep, stdin=stdin)
        last = (rc, out, err)
        ids = {**norm.ids, **norm.role_ids} if st.opts.get("roles") else norm.ids
        table = status_row if "endpoint status" in text else None
        key = st.text + ("\n<<\n" + st.stdin + ">>" if st.stdin else "")
        sort = bool(st.opts.get("sort"))
        results.append((key, render(rc, out, err, norm, ids, sort, table)))

        def redo(rc=rc, out=out, err=err, ids=ids, sort=sort, table=table):
            return render(rc, out, err, norm, {**ids, **norm.ids}, sort, table)
    for b in bg.values():
        clusters.reap(b.proc)
    return results


# Metrics an operator's dashboards and alerts read from /metrics: whether each is there is
# compared, not its value.
METRICS = ["etcd_server_has_leader", "etcd_server_leader_changes_seen_total",
           "etcd_server_proposals_committed_total", "etcd_server_proposals_applied_total",
           "etcd_server_proposals_pending", "etcd_server_proposals_failed_total",
           "etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes",
           "etcd_network_peer_round_trip_time_seconds_bucket",
           "etcd_disk_wal_fsync_duration_seconds_bucket",
           "etcd_disk_backend_commit_duration_seconds_bucket", "etcd_server_quota_backend_bytes",
           "grpc_server_started_total", "grpc_server_handled_total",
           "process_resident_memory_bytes", "process_open_fds"]


def http_call(ep, text, opts):
    """$[http] METHOD PATH [BODY]: HTTP/1.1 to the member's client URL. Shown: the status, the
    content type and the body (for [http,metrics], which of METRICS it has; for
    [http,stream=N], its first N lines, read for at most 3 s)."""
    parts = text.split(None, 2)
    method, path = parts[0], parts[1]
    body = parts[2].encode() if len(parts) > 2 else None
    hostport = ep.split("//", 1)[1]
    host, port = hostport.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=3 if "stream" in opts else 5)
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/json"} if body else {})
        r = conn.getresponse()
        head = "HTTP %d\ncontent-type: %s" % (r.status, r.getheader("Content-Type"))
        if "stream" in opts:
            lines = []
            try:
                while len(lines) < int(opts["stream"]):
                    ln = r.readline()  # the body, chunked encoding undone
                    if not ln:
                        break
                    if ln.strip():
                        lines.append(ln.decode(errors="replace").rstrip("\n"))
            except OSError:
                lines.append("(no more within 3 s)")
            return head + "\n" + "\n".join(lines)
        data = r.read().decode(errors="replace")
        if "metrics" in opts:
            have = {re.split(r"[{ ]", ln, 1)[0] for ln in data.splitlines()
                    if ln and not ln.startswith("#")}
            return head.split("\n")[0] + "\n" + "\n".join(
                "%s: %s" % (m, "present" if m in have else "absent") for m in METRICS)
        return head + "\n" + data
    except (OSError, http.client.HTTPException) as e:
        return "connection error: %s" % type(e).__name__
    finally:
        conn.close()


# --- comparison -------------------------------------------------------------------------------

class Allowed:
    def __init__(self, path):
        self.entries = []
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = [p.strip() for p in line.split(" | ", 4)]
                if len(parts) != 5:
                    raise HarnessError("%s:%d: want id | scope | command | part | reason" % (
                        path, n))
                self.entries.append({"id": parts[0], "scope": re.compile(parts[1]),
                                     "cmd": re.compile(parts[2]),
                                     "part": re.compile(parts[3]) if parts[3] != "*" else None,
                                     "reason": parts[4], "used": False})
        try:
            with open(DOC) as f:
                doc = f.read()
        except OSError:
            doc = ""
        section = doc.split(DOC_SECTION, 1)[1] if DOC_SECTION in doc else ""
        section = section.split("\n## ", 1)[0]
        self.undocumented = [e["id"] for e in self.entries if "`%s`" % e["id"] not in section]

    def match(self, scope, key, a, b):
        """The entry that excuses the difference between outputs a and b of command key: its
        part (every match of it, in both) is all that differs, or it is "*" (the whole output)."""
        for e in self.entries:
            if not (e["scope"].fullmatch(scope) and e["cmd"].search(key)):
                continue
            ph = "<allowed:%s>" % e["id"]
            if e["part"] is None or e["part"].sub(ph, a) == e["part"].sub(ph, b):
                e["used"] = True
                return e
        return None

    def covering(self, scope, key):
        """Ids of the entries for this command (when what they set aside is not all that differs)."""
        return [e["id"] for e in self.entries
                if e["scope"].fullmatch(scope) and e["cmd"].search(key)]

    def unused(self, scopes):
        return [e for e in self.entries
                if not e["used"] and any(e["scope"].fullmatch(s) for s in scopes)]


def compare(scope, ref, got, allowed):
    """Prints the differences; returns (failures, allowed differences, identical). Steps are
    paired by their command; a step only one side ran (a Node script that stopped early) is a
    difference too."""
    fails = allowed_n = same = 0
    pairs = []
    sm = difflib.SequenceMatcher(a=[k for k, _ in ref], b=[k for k, _ in got], autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            pairs += [(ref[i][0], ref[i][1], got[j][1]) for i, j in zip(range(i1, i2),
                                                                       range(j1, j2))]
        else:
            pairs += [(ref[i][0], ref[i][1], "(not run)\n") for i in range(i1, i2)]
            pairs += [(got[j][0], "(not run)\n", got[j][1]) for j in range(j1, j2)]
    for key, a, b in pairs:
        if a == b:
            same += 1
            continue
        e = allowed.match(scope, key, a, b)
        diff = "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True),
                                            "etcd", "cairn", n=20))
        if e:
            allowed_n += 1
            print("~~ %s: %s\n   allowed (%s): %s" % (scope, key.split("\n")[0], e["id"],
                                                      e["reason"]))
        else:
            fails += 1
            part = allowed.covering(scope, key)
            print("!! %s: DIFFERENT: $ %s%s\n%s" % (
                scope, key, "\n   (more than allowed.txt's %s sets aside)" % ", ".join(part)
                if part else "", diff))
    return fails, allowed_n, same


# --- node clients -----------------------------------------------------------------------------

def run_node(cl, node, script, secs=120):
    argv = [node, os.path.join(REPO, "tests", "node", script + ".js"), "--endpoints", cl.all,
            "--flavour", cl.flavour]
    p = clusters.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, cwd=os.path.join(REPO, "tests", "node"))
    try:
        out, err = p.communicate(timeout=secs)
    except subprocess.TimeoutExpired:
        clusters.reap(p)
        out, err = p.communicate()
        err += b"\n(killed after %d s)" % secs
    clusters.reap(p)
    norm = Normaliser(cl)
    results = []
    failed = []
    for line in out.decode(errors="replace").splitlines():
        try:
            d = json.loads(line)
            step, v = d["step"], d["out"]
        except (ValueError, KeyError, TypeError):
            results.append(("(output) " + line, ""))
            continue
        if isinstance(v, str) and v.startswith("FAILED"):
            failed.append("%s: %s" % (step, v))
        results.append((step, json.dumps(norm.value(v, norm.ids), indent=1, sort_keys=True)))
    errtxt = err.decode(errors="replace")
    results.append(("exit status", "exit %d" % p.returncode))
    if cl.flavour == "etcd" and (failed or p.returncode != 0):
        raise HarnessError("%s against etcd: %s\n%s" % (script, "; ".join(failed) or
                                                         "exit %d" % p.returncode, errtxt[-3000:]))
    if failed or p.returncode != 0:
        sys.stderr.write("----- %s against %s: stderr -----\n%s\n" % (script, cl.flavour,
                                                                    errtxt[-3000:]))
    return results


def failover(cl, node, secs=150):
    """failover.js against cl; it asks on stdout for the leader to be killed."""
    argv = [node, os.path.join(REPO, "tests", "node", "failover.js"), "--flavour", cl.flavour,
            "--members", json.dumps({m: cl.ep[m] for m in cl.names})]
    p = clusters.spawn(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                       cwd=os.path.join(REPO, "tests", "node"))
    deadline = time.monotonic() + secs
    buf = b""
    ok = False
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 0.5)
        if not r:
            continue
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode(errors="replace")
            print("  %s| %s" % (cl.flavour, text))
            if text.startswith("KILL-LEADER"):
                lead = cl.leader(10)
                cl.kill(lead)
                p.stdin.write(("KILLED %s %s\n" % (lead, cl.ep[lead])).encode())
                p.stdin.flush()
            elif text.endswith("] PASS"):
                ok = True
    if p.poll() is None:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print("failover.js against %s: killed after %d s" % (cl.flavour, secs))
    clusters.reap(p)
    return (ok and p.returncode == 0) or p.returncode == SKIP, p.returncode


# --- main -------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", required=True)
    ap.add_argument("--etcd", default="/usr/bin/etcd")
    ap.add_argument("--etcdctl", default="etcdctl")
    ap.add_argument("--node", default="node")
    ap.add_argument("--keep", action="store_true", help="keep data directories and logs")
    ap.add_argument("mode", choices=["etcdctl", "node", "failover"])
    ap.add_argument("names", nargs="+")
    a = ap.parse_args()
    keep = a.keep or os.environ.get("IT_KEEP") == "1"
    allowed = Allowed(os.path.join(HERE, "allowed.txt"))
    if allowed.undocumented:
        print("!! allowed.txt ids not named in %s, section \"%s\": %s" % (
            DOC, DOC_SECTION[3:], ", ".join(allowed.undocumented)))
        return 1
    flavours = {"etcd": a.etcd, "cairn": a.cairn}

    if a.mode in ("node", "failover") and not os.path.isdir(
            os.path.join(REPO, "tests", "node", "node_modules", "etcd3")):
        print("!! tests/node/node_modules is missing: run scripts/node-deps.sh (make node-deps)")
        return 1
    if a.mode == "failover":
        bad = skipped = 0
        for fl in a.names:
            cl = Cluster(fl, flavours[fl], a.etcdctl)
            good = False
            try:
                cl.start()
                good, rc = failover(cl, a.node)
                for msg in cl.problems():
                    print("!! %s" % msg)
                    good = False
                if rc == SKIP:
                    skipped += 1
                    if fl == "etcd":
                        raise HarnessError("failover.js found a service etcd does not serve")
                print("failover against %s: %s (exit %s)" % (
                    fl, "SKIPPED: a service is not served yet" if rc == SKIP else
                    "PASS" if good else "FAIL", rc))
            finally:
                cl.stop(keep=keep, show_logs=not good)
            bad += 0 if good else 1
        return 1 if bad else SKIP if skipped else 0

    if a.mode == "etcdctl":
        work = [(n, parse_transcript(os.path.join(HERE, "transcripts", n + ".txt")))
                for n in a.names]
    else:
        work = [(n, None) for n in a.names]
    runs = {}
    health = {}
    for fl in ("etcd", "cairn"):
        cl = Cluster(fl, flavours[fl], a.etcdctl)
        good = False
        try:
            cl.start()
            log("%s ids: %s, cluster %x" % (fl, {m: "%x" % i for m, i in cl.ids.items()},
                                            cl.cluster_id))
            for name, steps in work:
                t0 = time.monotonic()
                if steps is not None:
                    runs[(fl, name)] = run_transcript(cl, name, steps, keep)
                else:
                    runs[(fl, name)] = run_node(cl, a.node, name)
                log("%s: %s done in %.1f s" % (fl, name, time.monotonic() - t0))
            health[fl] = cl.problems()
            good = not health[fl]
        finally:
            cl.stop(keep=keep, show_logs=not good)
    fails = allowed_n = same = 0
    for msg in health["etcd"] + health["cairn"]:
        print("!! %s (its log is above)" % msg)
        fails += 1
    for name, _ in work:
        f, al, s = compare(name, runs[("etcd", name)], runs[("cairn", name)], allowed)
        fails += f
        allowed_n += al
        same += s
    for e in allowed.unused([n for n, _ in work]):
        print("-- allowed.txt entry %s excused no difference in this run" % e["id"])
    if keep:
        for (fl, name), res in runs.items():
            path = os.path.join("/tmp", "conform-%s-%s.txt" % (name, fl))
            with open(path, "w") as f:
                for k, v in res:
                    f.write("$ %s\n%s\n" % (k, v))
            log("transcript: %s" % path)
    print("== %s: %d identical, %d allowed differences, %d failing" % (
        " ".join(a.names), same, allowed_n, fails))
    return 1 if fails else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as e:
        print("HARNESS ERROR: %s" % e)
        sys.exit(2)
