"""A Python BaseManager consumer, written as a Python user writes one, reading what a firmware
producer put into a depot manager's task_queue.

usage: python_consumer.py PORT AUTHKEY COUNT
Prints `ready` once connected, then the repr() of each of COUNT items (so an int prints as 7
and text as '7'), then checks that the queue is empty: a get with a timeout must raise
queue.Empty. Exits non-zero otherwise.
"""
import queue
import sys
from multiprocessing.managers import BaseManager


class QueueManager(BaseManager):
    pass


QueueManager.register("task_queue")

port, key, count = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
m = QueueManager(address=("127.0.0.1", port), authkey=key)
m.connect()
q = m.task_queue()
print("ready", flush=True)
for _ in range(count):
    print(repr(q.get(timeout=30)), flush=True)
try:
    extra = q.get(timeout=0.5)
    sys.exit("an extra item was left in the queue: %r" % (extra,))
except queue.Empty:
    pass
