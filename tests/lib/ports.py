#!/usr/bin/env python3
"""Free ports for tests, claimed so that concurrent tests do not pick the same ones.

A port found free can be taken by a concurrent test (ctest runs several) before the member it
was picked for binds it. Each pick is therefore claimed in $TMPDIR/cairn-ports: a file named
after the port holding the claimer's pid, written under an flock of the directory's .lock.
Ports claimed by a live process, this one included (an earlier pick not bound yet), are passed
over; a claim whose process is gone is taken over. bench/cluster.c (cairn-bench's own
clusters) uses the same directory and format.

    python3 ports.py claim <n> <pid>     n ports, one per line, claimed for pid
    python3 ports.py release <pid>       removes pid's claims
"""

import errno
import fcntl
import os
import random
import socket
import sys

LOW, HIGH = 20000, 32767  # below Linux's ephemeral range: outgoing connections never take them


def claims_dir():
    t = os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(t if t.startswith("/") else "/tmp", "cairn-ports")


def _owner(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def _bindable(port, kind):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def claim(n, pid=None):
    """n distinct ports free on 127.0.0.1 for TCP and UDP (gossip uses both), claimed for pid."""
    pid = pid or os.getpid()
    d = claims_dir()
    os.makedirs(d, mode=0o1777, exist_ok=True)
    with open(os.path.join(d, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        picked, tries = [], 0
        while len(picked) < n:
            tries += 1
            if tries > 5000:
                raise RuntimeError("no free ports found in %d..%d" % (LOW, HIGH))
            port = random.randint(LOW, HIGH)
            if port in picked:
                continue
            other = _owner(os.path.join(d, str(port)))
            if other > 0 and (other == pid or _alive(other)):
                continue  # taken, by another test or by an earlier pick of this one
            if _bindable(port, socket.SOCK_STREAM) and _bindable(port, socket.SOCK_DGRAM):
                picked.append(port)
        for port in picked:
            with open(os.path.join(d, str(port)), "w") as f:
                f.write("%d\n" % pid)
    return picked


def release(pid=None):
    """Removes pid's claims."""
    pid = pid or os.getpid()
    d = claims_dir()
    try:
        names = os.listdir(d)
    except OSError:
        return
    for name in names:
        path = os.path.join(d, name)
        if name.isdigit() and _owner(path) == pid:
            try:
                os.unlink(path)
            except OSError:
                pass


def main(argv):
    if len(argv) == 4 and argv[1] == "claim":
        for port in claim(int(argv[2]), int(argv[3])):
            print(port)
        return 0
    if len(argv) == 3 and argv[1] == "release":
        release(int(argv[2]))
        return 0
    sys.stderr.write("usage: ports.py claim <n> <pid> | release <pid>\n")
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except RuntimeError as e:
        sys.exit(str(e))
