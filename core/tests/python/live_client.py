"""An unchanged BaseManager client run against the Python machine (core/tests/python_live.rs)."""
import datetime
import decimal
import queue
import sys
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.managers import BaseManager, RemoteError


class M(BaseManager):
    pass


M.register("jobs")
M.register("nope")
address = ("127.0.0.1", int(sys.argv[1]))
m = M(address=address, authkey=b"secret")
m.connect()
q = m.jobs()

items = [
    7, 0, -1, -24, -25, 255, 256, 65535, 65536, -(2**31), 2**31, 2**63, 2**64 - 1, -(2**64),
    2**100, -(2**100), 1.5, -0.0, float("inf"), True, False, None, "", "héllo", "x" * 300,
    b"", b"x", b"\x00" * 300, bytearray(b"y"), [], [1, [2, [3]]], {}, {"k": (1, 2), 3: None},
    {(1, 2): "tuple key"}, (), (1,), (1, "a", b"x", [1.5, None], {"k": True}),
    datetime.datetime(2024, 5, 6, 7, 8, 9), decimal.Decimal("1.1"), {1, 2}, frozenset({3}),
    [datetime.date(2020, 1, 2), 1],
]
for it in items:
    q.put(it)
assert q.qsize() == len(items), q.qsize()
assert not q.empty()
for it in items:
    got = q.get(timeout=1)
    want_type = bytes if type(it) is bytearray else type(it)
    assert got == it and type(got) is want_type, (it, got)
assert q.empty()

start = time.monotonic()
try:
    q.get(timeout=0.2)
    raise SystemExit("get(timeout) on an empty queue must raise queue.Empty")
except queue.Empty:
    pass
assert time.monotonic() - start >= 0.2
for call in (q.get_nowait, lambda: q.get(False), lambda: q.get(block=False, timeout=5)):
    try:
        call()
        raise SystemExit("must raise queue.Empty")
    except queue.Empty:
        pass
q.put_nowait("a")
q.put("b", True, 1)
q.put(item="c", block=False)
assert [q.get(), q.get(block=True, timeout=1), q.get_nowait()] == ["a", "b", "c"]
for bad, exc in (
    (lambda: q.get(timeout=-1), ValueError),
    (lambda: q.put(), TypeError),
    (lambda: q.put(1, 2, 3, 4), TypeError),
    (lambda: q.get(nope=1), TypeError),
    (lambda: q.get(timeout="x"), TypeError),
):
    try:
        bad()
        raise SystemExit("must raise")
    except exc:
        pass
done = 0
while True:
    try:
        q.task_done()
        done += 1
    except ValueError:  # task_done() called too many times
        break
assert done == len(items) + 3, done
q.put(1)
q.get()
q.task_done()
q.join()
assert "depot" in str(q)

# A get blocked in one thread is answered when another connection puts.
got = []
t = threading.Thread(target=lambda: got.append(q.get()))
t.start()
time.sleep(0.3)
assert t.is_alive()
m2 = M(address=address, authkey=b"secret")
m2.connect()
m2.jobs().put("late")
t.join(5)
assert got == ["late"], got

try:
    m.nope()
    raise SystemExit("an unknown typeid must fail")
except RemoteError:
    pass
try:
    M(address=address, authkey=b"wrong").connect()
    raise SystemExit("a wrong authkey must fail")
except AuthenticationError:
    pass
print("ok", sys.version.split()[0])
