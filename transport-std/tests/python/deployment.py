"""A plain Python BaseManager deployment, written as a Python user writes one, for depot clients
to join.

usage: deployment.py serve AUTHKEY          serve 'task_queue' (a queue.Queue) and 'one'
                                            (maxsize 1) on a free port; print the port
       deployment.py PORT AUTHKEY ROLE      a Python client of the manager at PORT:
         put_values                         put VALUES into task_queue
         get_values                         get len(VALUES) items, check they equal VALUES
         get_repr N                         get N items from task_queue, print each repr
         put_objects                        put OBJECTS (no depot value maps them)
         get_objects                        get len(OBJECTS) items, check they equal OBJECTS
         put_big / get_big                  put / get and check BIG
"""
import datetime
import decimal
import queue
import sys
from multiprocessing.managers import BaseManager

# What the depot client test puts and expects, as depot values (see values() in the test).
VALUES = [
    7,
    -3,
    2**40,
    1.5,
    "héllo",
    b"\x00bytes",
    [1, [2, "x"]],
    {"a": 1, "b": [True, None]},
    (1, "two"),
]

# Python objects depot keeps as inert pickles.
OBJECTS = [
    datetime.datetime(2024, 5, 17, 12, 30, 1),
    {1, 2, 3},
    [decimal.Decimal("1.25"), 2**100],
]

# Large items: many small values, and one large one.
BIG = [list(range(100_000)), b"x" * 3_000_000]


class QueueManager(BaseManager):
    pass


if sys.argv[1] == "serve":
    tasks = queue.Queue()
    one = queue.Queue(maxsize=1)
    QueueManager.register("task_queue", callable=lambda: tasks)
    QueueManager.register("one", callable=lambda: one)
    m = QueueManager(address=("127.0.0.1", 0), authkey=sys.argv[2].encode())
    server = m.get_server()
    print(server.address[1], flush=True)
    server.serve_forever()

QueueManager.register("task_queue")
QueueManager.register("one")
port, key, role = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
m = QueueManager(address=("127.0.0.1", port), authkey=key)
m.connect()
q = m.task_queue()

if role == "put_values":
    for v in VALUES:
        q.put(v)
elif role == "get_values":
    got = [q.get(timeout=30) for _ in VALUES]
    assert got == VALUES, got
    assert [type(v) for v in got] == [type(v) for v in VALUES], got
    print("values ok")
elif role == "get_repr":
    for _ in range(int(sys.argv[4])):
        print(repr(q.get(timeout=30)), flush=True)
elif role == "put_objects":
    for v in OBJECTS:
        q.put(v)
elif role == "get_objects":
    got = [q.get(timeout=30) for _ in OBJECTS]
    assert got == OBJECTS, got
    print("objects ok")
elif role == "put_big":
    for v in BIG:
        q.put(v)
elif role == "get_big":
    got = [q.get(timeout=30) for _ in BIG]
    assert got == BIG
    print("big ok")
else:
    raise SystemExit(f"unknown role {role}")
