"""BaseManager client roles, written as a Python user writes them, run against a depot manager.

usage: basemanager.py PORT AUTHKEY ROLE [ARGS]
  produce N        put 0..N-1 into task_queue
  consume N        get N items from task_queue, print them one per line
  errors           queue.Empty after a timeout, queue.Full on put_nowait (queue 'one' full)
  put_objects      put a datetime and a user-class instance
  get_objects      get them back and check they are equal
  block            block in get on task_queue (killed by the test)
"""
import datetime
import queue
import sys
import time
from multiprocessing.managers import BaseManager

from shapes import Point


class QueueManager(BaseManager):
    pass


QueueManager.register("task_queue")
QueueManager.register("one")

# The values every client library must read alike (depot's Rust test puts and checks the same).
VALUES = [
    7, -3, 2**40, 1.5, -0.25, True, False, None, "text", "héllo", b"\x00bytes",
    [1, [2, "three"]], {"k": 1, "nested": {"list": [1.5, None]}}, [],
]

port, key, role = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
m = QueueManager(address=("127.0.0.1", port), authkey=key)
m.connect()

if role == "produce":
    q = m.task_queue()
    for i in range(int(sys.argv[4])):
        q.put(i)
elif role == "consume":
    q = m.task_queue()
    for _ in range(int(sys.argv[4])):
        print(q.get(timeout=30), flush=True)
elif role == "errors":
    q = m.task_queue()
    t = time.monotonic()
    try:
        q.get(timeout=0.5)
        raise SystemExit("get on an empty queue returned")
    except queue.Empty:
        waited = time.monotonic() - t
        assert waited >= 0.4, waited
    one = m.one()
    one.put_nowait("fills it")
    try:
        one.put_nowait("too many")
        raise SystemExit("put_nowait on a full queue returned")
    except queue.Full:
        pass
    assert one.full() and one.qsize() == 1
    assert one.get_nowait() == "fills it"
    assert one.empty()
    print("errors ok")
elif role == "put_objects":
    q = m.task_queue()
    q.put(datetime.datetime(2026, 11, 30, 18, 0, 5))
    q.put(Point(3, -4))
    q.put({"nested": [1, 2.5, "three", b"four", None, True], "t": (1, "a")})
elif role == "get_objects":
    q = m.task_queue()
    assert q.get(timeout=5) == datetime.datetime(2026, 11, 30, 18, 0, 5)
    p = q.get(timeout=5)
    assert isinstance(p, Point) and p == Point(3, -4), p
    d = q.get(timeout=5)
    assert d == {"nested": [1, 2.5, "three", b"four", None, True], "t": (1, "a")}, d
    print("objects ok")
elif role == "put_values":
    q = m.task_queue()
    for v in VALUES:
        q.put(v)
elif role == "get_values":
    q = m.task_queue()
    got = [q.get(timeout=5) for _ in VALUES]
    assert got == VALUES, got
    assert [type(g) for g in got] == [type(v) for v in VALUES], got
    print("values ok")
elif role == "block":
    q = m.task_queue()
    print("blocking", flush=True)
    q.get()
else:
    raise SystemExit(f"unknown role {role}")
