"""The client side of a capture: an unchanged BaseManager script (see capture.py)."""
import datetime
import queue
import sys
from multiprocessing.managers import BaseManager


class M(BaseManager):
    pass


M.register("jobs")
m = M(address=("127.0.0.1", int(sys.argv[1])), authkey=b"secret")
m.connect()
q = m.jobs()
q.put(7)
q.put((1, "a", b"x", [1.5, None], {"k": True}))
q.put(datetime.datetime(2024, 5, 6, 7, 8, 9))
try:
    q.get(timeout=0.5)
    raise SystemExit("get should have raised queue.Empty")
except queue.Empty:
    pass
assert q.get_nowait() == 7
bad = M(address=("127.0.0.1", int(sys.argv[1])), authkey=b"wrong")
try:
    bad.connect()
    raise SystemExit("a wrong key should fail")
except Exception as e:
    assert type(e).__name__ == "AuthenticationError", repr(e)
