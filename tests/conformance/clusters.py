"""clusters.py: three-member clusters of etcd 3.4 or Cairn on 127.0.0.1, for the conformance tests.

Both flavours take the same flags. Cairn adds --gossip-listen, so members on one host do not share
its port, --gossip-join, so they form one gossip pool, and --gossip-store-members=false, so the
leader does not write /cairn/members/ keys that etcd has not got: the transcripts compare
revisions. Ports are picked at random in 20000-32767, below Linux's ephemeral range, and checked
free by binding them, as tests/integration/lib.sh does. Every process is started with
PR_SET_PDEATHSIG (SIGKILL), so it dies with the harness even when the harness is killed itself;
stop() and the atexit/signal handlers kill what is left by pid. Every wait is bounded.
"""

import atexit
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import ports  # noqa: E402

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_LIVE = []  # every Popen started here and not yet reaped


def _die_with_parent():
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv, **kw):
    """subprocess.Popen that is killed with the harness and by kill_all()."""
    p = subprocess.Popen(argv, preexec_fn=_die_with_parent, **kw)
    _LIVE.append(p)
    return p


def reap(p, secs=10):
    """Kills p (SIGKILL, by pid) unless it has exited, and waits for it (bounded)."""
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        p.wait(timeout=secs)
    except subprocess.TimeoutExpired:
        pass
    if p in _LIVE:
        _LIVE.remove(p)


def kill_all():
    for p in list(_LIVE):
        reap(p)


def _on_signal(signum, _frame):
    kill_all()
    sys.exit(128 + signum)


atexit.register(kill_all)
atexit.register(ports.release)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def free_ports(n):
    """n free ports on 127.0.0.1, claimed for this process until it exits (tests/lib/ports.py)."""
    return ports.claim(n)


def log(msg):
    sys.stderr.write("[%7.2fs] %s\n" % (time.monotonic() - _T0, msg))
    sys.stderr.flush()


_T0 = time.monotonic()


class Cluster:
    """n members of one flavour ("etcd" or "cairn"), each m1 .. mn."""

    def __init__(self, flavour, binary, etcdctl, n=3, tmp=None):
        self.flavour = flavour
        self.binary = binary
        self.etcdctl = etcdctl
        self.tmp = tmp or tempfile.mkdtemp(prefix="cairn-conf-%s." % flavour)
        self.names = ["m%d" % (i + 1) for i in range(n)]
        ports = free_ports(3 * n)
        self.cport = {m: ports[i] for i, m in enumerate(self.names)}
        self.pport = {m: ports[n + i] for i, m in enumerate(self.names)}
        self.gport = {m: ports[2 * n + i] for i, m in enumerate(self.names)}
        self.ep = {m: "http://127.0.0.1:%d" % self.cport[m] for m in self.names}
        self.peer = {m: "http://127.0.0.1:%d" % self.pport[m] for m in self.names}
        self.all = ",".join(self.ep[m] for m in self.names)
        self.initial = ",".join("%s=%s" % (m, self.peer[m]) for m in self.names)
        self.token = "conf-%s-%d" % (flavour, os.getpid())
        self.proc = {}
        self.ids = {}  # member name -> member id (int)
        self.cluster_id = None

    def args(self, m):
        a = [self.binary, "--name", m, "--data-dir", os.path.join(self.tmp, m + ".data"),
             "--listen-client-urls", self.ep[m], "--advertise-client-urls", self.ep[m],
             "--listen-peer-urls", self.peer[m], "--initial-advertise-peer-urls", self.peer[m],
             "--initial-cluster", self.initial, "--initial-cluster-state", "new",
             "--initial-cluster-token", self.token]
        if self.flavour == "cairn":
            # One gossip pool: each member joins through the others.
            join = ",".join("127.0.0.1:%d" % self.gport[o] for o in self.names if o != m)
            a += ["--gossip-listen", "127.0.0.1:%d" % self.gport[m], "--gossip-store-members=false"]
            if join:
                a += ["--gossip-join", join]
        return a

    def start_member(self, m):
        logf = open(os.path.join(self.tmp, m + ".log"), "ab")
        self.proc[m] = spawn(self.args(m), stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        logf.close()
        log("%s %s started (pid %d) at %s" % (self.flavour, m, self.proc[m].pid, self.ep[m]))

    def start(self, secs=30):
        for m in self.names:
            self.start_member(m)
        for m in self.names:
            self.wait_healthy(m, secs)
        for m in self.names:
            st = self.status(m)
            self.ids[m] = st["header"]["member_id"]
            self.cluster_id = st["header"]["cluster_id"]
        return self

    def ctl(self, args, ep=None, timeout=20, stdin=None):
        """etcdctl against ep (default: every member); (rc, stdout, stderr) as text."""
        env = dict(os.environ, ETCDCTL_API="3")
        argv = [self.etcdctl, "--endpoints=" + (ep or self.all), "--dial-timeout=2s",
                "--command-timeout=5s"] + list(args)
        p = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  env=env)
        try:
            out, err = p.communicate(stdin.encode() if stdin is not None else None,
                                     timeout=timeout)
        except subprocess.TimeoutExpired:
            reap(p)
            out, err = p.communicate()
            return 124, out.decode(errors="replace"), err.decode(errors="replace") + \
                "\n(killed after %d s)" % timeout
        reap(p)
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def status(self, m):
        rc, out, err = self.ctl(["endpoint", "status", "-w", "json"], ep=self.ep[m])
        if rc != 0:
            raise RuntimeError("endpoint status of %s failed: %s" % (m, err.strip()))
        return json.loads(out)[0]["Status"]

    def wait_healthy(self, m, secs):
        deadline = time.monotonic() + secs
        while True:
            rc, _, _ = self.ctl(["--dial-timeout=1s", "--command-timeout=1s", "endpoint",
                                 "health"], ep=self.ep[m], timeout=5)
            if rc == 0:
                return
            if self.proc[m].poll() is not None:
                raise RuntimeError("%s %s exited before it was healthy\n%s" %
                                   (self.flavour, m, self.tail(m)))
            if time.monotonic() > deadline:
                raise RuntimeError("%s %s not healthy within %d s\n%s" %
                                   (self.flavour, m, secs, self.tail(m)))
            time.sleep(0.1)

    def leader(self, secs=10, exclude=()):
        """The member name every live member names as leader (bounded wait)."""
        deadline = time.monotonic() + secs
        while True:
            seen = set()
            for m in self.names:
                if m in exclude or m not in self.proc:
                    continue
                try:
                    seen.add(self.status(m)["leader"])
                except (RuntimeError, ValueError, KeyError, IndexError):
                    seen.add(None)
            if len(seen) == 1:
                lid = seen.pop()
                for m, i in self.ids.items():
                    if i == lid and m not in exclude:
                        return m
            if time.monotonic() > deadline:
                raise RuntimeError("%s: no common leader within %d s" % (self.flavour, secs))
            time.sleep(0.1)

    def kill(self, m):
        p = self.proc.pop(m)
        log("kill -9 %s %s (pid %d)" % (self.flavour, m, p.pid))
        reap(p)

    def tail(self, m, lines=60):
        try:
            with open(os.path.join(self.tmp, m + ".log"), "rb") as f:
                data = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "----- %s %s.log -----\n%s" % (self.flavour, m, "\n".join(data[-lines:]))

    def problems(self):
        """Members that exited by themselves, and sanitizer reports in any member's log."""
        out = []
        for m, p in self.proc.items():
            if p.poll() is not None:
                out.append("%s %s exited with status %s" % (self.flavour, m, p.returncode))
        for m in self.names:
            try:
                with open(os.path.join(self.tmp, m + ".log"), "rb") as f:
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                         "Assertion `", "panic:"):
                if mark in text:
                    out.append("%s %s: %r in its log" % (self.flavour, m, mark))
        return out

    def stop(self, keep=False, show_logs=False):
        for m in list(self.proc):
            reap(self.proc.pop(m))
        if show_logs:
            for m in self.names:
                sys.stderr.write(self.tail(m) + "\n")
        if keep:
            log("%s data directories and logs kept in %s" % (self.flavour, self.tmp))
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
