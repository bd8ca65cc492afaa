"""SyncManager-style objects, as a Python user writes them, against a depot manager.

usage: objects.py PORT AUTHKEY ROLE
  event_wait      wait for event 'ready' (30 s), print True/False
  event_set       set event 'ready'
  lock_hold       take lock 'lk' with `with`, print "held", sleep (killed by the test)
  lock_use        the lock and rlock rules: acquire/release, timeouts, `with`, errors
  typed           the same objects through the stdlib's typed proxies (proxytype=)
  value_dict      a value and a dict
  calls           registered calls 'area' and 'echo'
"""
import sys
import threading
import time
from multiprocessing.managers import (
    AcquirerProxy,
    BarrierProxy,
    BaseManager,
    DictProxy,
    NamespaceProxy,
    EventProxy,
    ValueProxy,
)


class M(BaseManager):
    pass


# AutoProxy: the methods come from the manager's answer to `create`.
for name in ["ready", "lk", "rlk", "sem", "v", "d", "gate", "area", "echo"]:
    M.register(name)


class Typed(BaseManager):
    pass


Typed.register("ready", proxytype=EventProxy)
Typed.register("lk", proxytype=AcquirerProxy)
Typed.register("sem", proxytype=AcquirerProxy)
Typed.register("v", proxytype=ValueProxy)
Typed.register("d", proxytype=DictProxy)
Typed.register("gate", proxytype=BarrierProxy)
Typed.register("ns", proxytype=NamespaceProxy)

port, key, role = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
m = (Typed if role == "typed" else M)(address=("127.0.0.1", port), authkey=key)
m.connect()

if role == "event_wait":
    print(m.ready().wait(30), flush=True)
elif role == "event_set":
    e = m.ready()
    e.set()
    assert e.is_set()
elif role == "lock_hold":
    with m.lk():
        print("held", flush=True)
        time.sleep(60)
elif role == "lock_use":
    l = m.lk()
    assert l.acquire() is True
    assert l.locked() is True
    # Not reentrant: a second acquire times out, and a non-blocking one fails at once.
    t = time.monotonic()
    assert l.acquire(True, 0.2) is False
    assert time.monotonic() - t >= 0.15
    assert l.acquire(False) is False
    l.release()
    assert l.locked() is False
    try:
        l.release()
        raise SystemExit("released an unlocked lock")
    except RuntimeError:
        pass
    with l:
        assert l.locked()
    assert not l.locked()
    r = m.rlk()
    assert r.acquire() and r.acquire(timeout=1)
    r.release()
    r.release()
    s = m.sem()
    assert s.acquire() and s.acquire(blocking=False)
    assert s.get_value() == 0
    assert s.acquire(timeout=0.1) is False
    s.release()
    s.release()
    assert s.get_value() == 2
    # A lock is held by its connection: another thread (another connection) waits for it.
    got = []
    l.acquire()
    th = threading.Thread(target=lambda: got.append(m.lk().acquire(timeout=0.2)))
    th.start()
    th.join()
    assert got == [False], got
    l.release()
    print("ok", flush=True)
elif role == "typed":
    e = m.ready()
    e.set()
    assert e.is_set() and e.wait(1)
    e.clear()
    assert not e.wait(0.05)
    l = m.lk()
    with l:
        pass
    assert l.acquire(blocking=False)
    l.release()
    s = m.sem()
    with s:
        pass
    v = m.v()
    v.value = {"n": 1, "tags": ["a", "b"]}
    assert v.value == {"n": 1, "tags": ["a", "b"]}, v.value
    v.set(2.5)
    assert v.get() == 2.5
    d = m.d()
    d["a"] = 1
    assert d.get("a", 5) == 1 and d.get("zz", 5) == 5 and d.get("zz") is None
    assert d.pop("zz", (1, "x")) == (1, "x")
    assert d.pop("a", 9) == 1 and len(d) == 0
    # The barrier's attributes, as BarrierProxy reads them; two parties meet at it.
    g = m.gate()
    assert (g.parties, g.n_waiting, g.broken) == (2, 0, False)
    other = []

    def party():
        m2 = Typed(address=("127.0.0.1", port), authkey=key)
        m2.connect()
        other.append(m2.gate().wait(10))

    th = threading.Thread(target=party)
    th.start()
    while g.n_waiting == 0:
        time.sleep(0.01)
    assert g.n_waiting == 1
    mine = g.wait(10)
    th.join()
    assert sorted([mine] + other) == [0, 1], (mine, other)
    g.abort()
    assert g.broken is True
    try:
        g.wait(1)
        raise SystemExit("waited at a broken barrier")
    except threading.BrokenBarrierError:
        pass
    g.reset()
    assert g.broken is False
    # A dict read as a namespace.
    ns = m.ns()
    ns.x = 1
    ns.label = "a"
    assert (ns.x, ns.label) == (1, "a")
    del ns.x
    try:
        ns.x
        raise SystemExit("a deleted attribute was found")
    except AttributeError:
        pass
    try:
        del ns.nope
        raise SystemExit("a missing attribute was deleted")
    except AttributeError:
        pass
    print("ok", flush=True)
elif role == "value_dict":
    v = m.v()
    assert v.get() is None
    v.set(41)
    assert v.compare_and_set(41, 42) is True
    assert v.compare_and_set(41, 43) is False
    assert v.get() == 42
    d = m.d()
    d["a"] = 1
    d[("t", 2)] = [1, 2]
    assert d["a"] == 1 and d[("t", 2)] == [1, 2]
    assert "a" in d and "zz" not in d
    assert len(d) == 2
    assert d.keys() == ["a", ("t", 2)], d.keys()
    assert d.values() == [1, [1, 2]], d.values()
    assert d.items() == [("a", 1), (("t", 2), [1, 2])], d.items()
    assert d.get("zz") is None
    try:
        d["zz"]
        raise SystemExit("a missing key was found")
    except KeyError:
        pass
    assert d.pop("a") == 1
    del d[("t", 2)]
    assert len(d) == 0
    # Defaults, as Python's dict gives them.
    assert d.get("zz", 7) == 7
    assert d.get("zz", [1, "x"]) == [1, "x"]
    assert d.get("zz", None) is None
    d["k"] = "v"
    assert d.get("k", 7) == "v"
    assert d.pop("k", 0) == "v"
    assert d.pop("k", 0) == 0
    assert d.pop("k", None) is None
    try:
        d.pop("k")
        raise SystemExit("popped a missing key")
    except KeyError:
        pass
    try:
        d.get("zz", "x" * 100)
        raise SystemExit("a default larger than the limit was taken")
    except ValueError:
        pass
    assert len(d) == 0

    def setter():
        m2 = M(address=("127.0.0.1", port), authkey=key)
        m2.connect()
        time.sleep(0.1)
        m2.d()["go"] = "now"

    th = threading.Thread(target=setter)
    th.start()
    assert d.wait_for_key("go", 10) == "now"
    th.join()
    g = m.gate()
    assert g.n_waiting() == 0
    print("ok", flush=True)
elif role == "calls":
    area = m.area()
    assert area((6, 7)) == 42
    assert area.call([3, 5]) == 15
    try:
        area((2**32 - 1, 2))
        raise SystemExit("an overflow was answered")
    except RuntimeError as e:
        assert "too large" in str(e), e
    try:
        area("not a pair")
        raise SystemExit("a wrong request was answered")
    except RuntimeError:
        pass
    echo = m.echo()
    assert echo("hi") == "hi"
    assert echo() is None
    print("ok", flush=True)
else:
    raise SystemExit(f"unknown role {role}")
