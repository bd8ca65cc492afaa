"""A Condition and lists, as a Python user writes them, against a depot manager.

usage: conditions_lists.py PORT AUTHKEY ROLE
  consumer    ConditionProxy: with 'cv', print "waiting", wait_for an item in list 'items',
              print it
  producer    with 'cv', append 42 to 'items' and notify
  cv_rules    AutoProxy: waiting/notifying unheld raise, a wait that times out returns False
              holding the lock, reentrant acquire, notify_all
  list_use    ListProxy and AutoProxy against a Python list, and a full list
"""
import sys
from multiprocessing.managers import BaseManager, ConditionProxy, ListProxy


class Typed(BaseManager):
    pass


Typed.register("cv", proxytype=ConditionProxy)
Typed.register("items", proxytype=ListProxy)
Typed.register("small", proxytype=ListProxy)


class Auto(BaseManager):
    pass


for name in ["cv", "items"]:
    Auto.register(name)

port, key, role = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
m = (Auto if role == "cv_rules" else Typed)(address=("127.0.0.1", port), authkey=key)
m.connect()

if role == "consumer":
    cv, items = m.cv(), m.items()
    with cv:
        print("waiting", flush=True)
        assert cv.wait_for(lambda: len(items) > 0, timeout=30)
        print(items.pop(0), flush=True)
elif role == "producer":
    cv, items = m.cv(), m.items()
    with cv:
        items.append(42)
        cv.notify()
elif role == "cv_rules":
    cv = m.cv()
    for call in (lambda: cv.wait(0.1), lambda: cv.notify(), lambda: cv.release()):
        try:
            call()
            raise SystemExit("must raise without the lock")
        except RuntimeError:
            pass
    with cv:
        assert cv.wait(0.2) is False
        # Still held: reentrant, and released twice.
        assert cv.acquire()
        cv.release()
        cv.notify_all()
        cv.notify(3)
    try:
        cv.release()
        raise SystemExit("released once too often")
    except RuntimeError:
        pass
    print("ok")
elif role == "list_use":
    for proxy in (m.items(), Auto(address=("127.0.0.1", port), authkey=key)):
        if isinstance(proxy, BaseManager):
            proxy.connect()
            proxy = proxy.items()
        while len(proxy):
            proxy.pop()
        model = []
        for l in (proxy, model):
            l.append(1)
            l.append("two")
            l.append([3, 3.5])
            l.insert(0, None)
            l.insert(-1, b"x")
            l.insert(100, 7)
            l[1] = 10
            l[-1] = 8
            l.remove("two")
            l.reverse()
            l.append(10)
        assert len(proxy) == len(model), (len(proxy), model)
        assert [proxy[i] for i in range(len(model))] == model, model
        assert proxy[-1] == model[-1] and proxy[0] == model[0]
        assert list(proxy) == model
        assert proxy.index(10) == model.index(10)
        assert proxy.count(10) == 2
        assert 8 in proxy and 99 not in proxy
        for bad in (lambda: proxy[len(model)], lambda: proxy.__setitem__(-99, 1)):
            try:
                bad()
                raise SystemExit("must raise IndexError")
            except IndexError:
                pass
        for bad in (lambda: proxy.index(99), lambda: proxy.remove(99)):
            try:
                bad()
                raise SystemExit("must raise ValueError")
            except ValueError:
                pass
        assert proxy.pop() == model.pop()
        assert proxy.pop(0) == model.pop(0)
        del proxy[0]
        del model[0]
        assert list(proxy) == model
    small = m.small()
    small.append(1)
    small.append(2)
    try:
        small.append(3)
        raise SystemExit("a full list must refuse")
    except MemoryError:
        pass
    assert list(small) == [1, 2]
    print("ok")
else:
    raise SystemExit("unknown role " + role)
