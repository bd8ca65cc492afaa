#!/usr/bin/env python3
"""Python BaseManager side of depot-bench: the manager and its clients, standard library only.

The Rust harness starts one process per role and talks to it by lines on stdin/stdout (the
clients also run against depot's manager: --queue then names depot's queue):
  manager   serve task_queue (a queue.Queue) and a 'control' object; print {"port": P}
  connect   time COUNT connect() calls; print {"samples_ns": [...]}
  pairs     COUNT put-then-get pairs on one proxy; print {"elapsed_ns": N}
  produce   print READY, wait for a line, put COUNT items then SENTINELS Nones;
            print {"done_ns": wall-clock ns}
  consume   print READY, wait for a line, get until None; print {"received": N, "last_ns": ns}
  hold      open 10 proxy connections, print WARM, wait; open COUNT more, print READY, wait
  fill      print READY, wait; the manager queues COUNT distinct items; print DONE, wait
"""

import argparse
import json
import queue
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Client
from multiprocessing.managers import BaseManager, dispatch

WARM_CONNECTIONS = 10
# Parallel openers in 'hold': the manager's listen backlog is 16.
HOLD_OPENERS = 8


class QueueManager(BaseManager):
    pass


def emit(obj):
    print(json.dumps(obj), flush=True)


def wait_line():
    sys.stdin.readline()


def serve(args):
    task_queue = queue.Queue()

    class Control:
        """Fills the queue inside the manager for the memory figure (g)."""

        def fill(self, count, size):
            put = task_queue.put
            for i in range(count):
                put(i.to_bytes(size, "little"))
            return task_queue.qsize()

    QueueManager.register("task_queue", callable=lambda: task_queue)
    QueueManager.register("control", callable=Control)
    manager = QueueManager(address=("127.0.0.1", args.port), authkey=args.authkey.encode())
    server = manager.get_server()
    emit({"port": server.address[1]})
    server.serve_forever()


def connect(args):
    QueueManager.register(args.queue)
    QueueManager.register("control")
    manager = QueueManager(address=("127.0.0.1", args.port), authkey=args.authkey.encode())
    manager.connect()
    return manager


def proxy(args):
    """The queue's proxy, as `manager.task_queue()` would give it."""
    return getattr(connect(args), args.queue)()


def time_connects(args):
    QueueManager.register(args.queue)
    samples = []
    for _ in range(args.count):
        manager = QueueManager(address=("127.0.0.1", args.port), authkey=args.authkey.encode())
        start = time.perf_counter_ns()
        manager.connect()
        samples.append(time.perf_counter_ns() - start)
    emit({"samples_ns": samples})


def pairs(args):
    q = proxy(args)
    item = b"x" * args.size
    q.put(item)
    q.get()
    start = time.perf_counter_ns()
    for _ in range(args.count):
        q.put(item)
        q.get()
    emit({"elapsed_ns": time.perf_counter_ns() - start})


def produce(args):
    q = proxy(args)
    q.qsize()  # opens the proxy's connection before the barrier
    item = b"x" * args.size
    print("READY", flush=True)
    wait_line()
    put = q.put
    for _ in range(args.count):
        put(item)
    for _ in range(args.sentinels):
        put(None)
    emit({"done_ns": time.time_ns()})


def consume(args):
    q = proxy(args)
    q.qsize()
    print("READY", flush=True)
    wait_line()
    get = q.get
    received, last_ns = 0, 0
    while get() is not None:
        received += 1
        last_ns = time.time_ns()
    emit({"received": received, "last_ns": last_ns})


def hold(args):
    address, authkey = ("127.0.0.1", args.port), args.authkey.encode()

    def open_one(i):
        # What a proxy does on first use: a connection the manager serves in a thread of its own.
        conn = Client(address, authkey=authkey)
        dispatch(conn, None, "accept_connection", ("hold|%d" % i,))
        return conn

    held = [open_one(i) for i in range(WARM_CONNECTIONS)]
    print("WARM", flush=True)
    wait_line()
    with ThreadPoolExecutor(HOLD_OPENERS) as pool:
        held += pool.map(open_one, range(WARM_CONNECTIONS, WARM_CONNECTIONS + args.count))
    print("READY", flush=True)
    wait_line()
    for conn in held:
        conn.close()


def fill(args):
    manager = connect(args)
    control = manager.control()
    q = manager.task_queue()
    q.qsize()
    print("READY", flush=True)
    wait_line()
    queued = control.fill(args.count, args.size)
    if queued != args.count:
        sys.exit("queued %d items, asked for %d" % (queued, args.count))
    print("DONE", flush=True)
    wait_line()


MODES = {
    "manager": serve,
    "connect": time_connects,
    "pairs": pairs,
    "produce": produce,
    "consume": consume,
    "hold": hold,
    "fill": fill,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--authkey", required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--sentinels", type=int, default=1)
    parser.add_argument("--queue", default="task_queue")
    args = parser.parse_args()
    MODES[args.mode](args)


if __name__ == "__main__":
    main()
