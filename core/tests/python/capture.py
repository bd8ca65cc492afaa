"""Records what a real CPython BaseManager client sends to a depot manager.

Usage: PYTHON capture.py CLIENT_PYTHON OUT_FILE

Plays a manager that challenges exactly as depot does (`#CHALLENGE#{sha256}`, the depot marker,
a fixed nonce) and answers with CPython's own pickle, while CLIENT_PYTHON runs `client.py`
against it. Every frame of every connection is written to OUT_FILE as
`<conn> <C>S|S>C> <hex>`; the test in core/tests/python.rs replays them.
"""
import hashlib
import hmac
import pickle
import queue
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection

AUTHKEY = b"secret"
NONCE = bytes(range(32))
CHALLENGE = b"#CHALLENGE#" + b"{sha256}" + b"dpot/mgr" + NONCE
EXPOSED = ("empty", "full", "get", "get_nowait", "join", "put", "put_nowait", "qsize", "task_done")

lines = []
lock = threading.Lock()


def log(conn_no, direction, data):
    with lock:
        lines.append(f"{conn_no} {direction} {data.hex()}")


def mac(digest, message):
    return hmac.new(AUTHKEY, message, digest).digest()


def serve(sock, conn_no):
    c = Connection(sock.detach())

    def send(b):
        log(conn_no, "S>C", b)
        c.send_bytes(b)

    def recv():
        b = c.recv_bytes()
        log(conn_no, "C>S", b)
        return b

    send(CHALLENGE)
    answer = recv()
    message = CHALLENGE[len(b"#CHALLENGE#"):]
    if len(answer) == 16:
        ok = hmac.compare_digest(answer, mac("md5", message))
    else:
        ok = answer == b"{sha256}" + mac("sha256", message)
    if not ok:
        send(b"#FAILURE#")
        c.close()
        return
    send(b"#WELCOME#")
    theirs = recv()[len(b"#CHALLENGE#"):]
    if len(theirs) == 20:
        send(mac("md5", theirs))
    else:
        send(b"{sha256}" + mac("sha256", theirs))
    assert recv() == b"#WELCOME#"
    proxy = False
    while True:
        try:
            ident, method, args, kwds = pickle.loads(recv())
        except EOFError:
            break
        if method == "create":
            reply = ("#RETURN", ("dq0", EXPOSED))
        elif method == "accept_connection":
            proxy = True
            reply = ("#RETURN", None)
        elif method == "get":
            reply = ("#ERROR", queue.Empty())
        elif method == "get_nowait":
            reply = ("#RETURN", 7)
        else:
            reply = ("#RETURN", None)
        send(pickle.dumps(reply, protocol=4))
        if not proxy:
            break
    c.close()


def main():
    client_python, out = sys.argv[1], sys.argv[2]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    here = __file__.rsplit("/", 1)[0]
    proc = subprocess.Popen([client_python, f"{here}/client.py", str(port)])
    threads = []
    listener.settimeout(1.0)
    conn_no = 0
    while proc.poll() is None:
        try:
            s, _ = listener.accept()
        except socket.timeout:
            continue
        conn_no += 1
        t = threading.Thread(target=serve, args=(s, conn_no), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(5)
    assert proc.returncode == 0, proc.returncode
    with open(out, "w") as f:
        f.write(f"# {subprocess.check_output([client_python, '--version'], text=True).strip()}\n")
        f.write("\n".join(lines) + "\n")


main()
