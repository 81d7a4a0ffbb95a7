"""Plain data across the sandbox's process boundary: a tagged JSON codec and length-prefixed frames.

Runs inside the sandbox image (standard library only) and on the host. A candidate program's return
values and a test's arguments cross between processes as data, never as objects: :func:`encode`
turns a value into JSON with tags for what JSON lacks (tuples, sets, big or special numbers, bytes,
non-string dict keys, ``Counter``/``deque``/``Fraction``/``Decimal``, ``re.Match``, builtin types
by name), and :func:`decode`
rebuilds it from builtin types only, so whatever bytes a hostile program writes, the trusted side
compares real ``int``/``str``/``list``... with their own ``==``. Instances of subclasses of a builtin
type travel as that type's value (a namedtuple is a tuple; a ``str`` subclass with a rigged ``__eq__``
is just its characters). An instance of a class travels as its class name and attributes
(``{"obj": "Node", "a": {...}}``) and is rebuilt on the *receiver's own* class of that name (MBPP's
trees and ``Pair`` objects: the checker's class comes from the data set's setup code, the program's
from the program); without such a class the receiver gets a *handle* (``{"h": n}``): a
:class:`Remote` it may pass back as an argument, but that cannot be compared, hashed or truth-tested
(:class:`NotPlainData`). Integers of 19+ digits travel in hex (``int(s, 16)`` has no digit limit).

:func:`place_fds` puts a child's descriptors where the protocol expects them.

Not covered: shared identity (a list appearing twice arrives as two lists) and cycles (rejected by
the depth limit).
"""

from __future__ import annotations

import collections
import contextlib
import decimal
import fcntl
import fractions
import json
import math
import os
import re
import select
import struct
import time
import types

HDR = struct.Struct(">I")
MAX_DEPTH = 200
_BIG = 10**18
_MATCH = type(re.match("", ""))
# Builtin types a test may pass as a value (``remove_datatype(t, int)``), sent by name.
BUILTIN_TYPES = {
    t.__name__: t
    for t in (int, float, str, bool, list, tuple, dict, set, frozenset, complex, bytes, bytearray, type(None), object)
}


class NotPlainData(BaseException):
    """A value that cannot be compared as data (a handle, a cycle, a rigged object)."""


class FrameError(Exception):
    """The peer sent something that is not a frame (too large, not JSON) or went away mid-frame."""


class Remote:
    """A handle to an object living in the candidate's process: pass it back, never compare it."""

    __slots__ = ("ref",)

    def __init__(self, ref: int):
        self.ref = ref

    def _refuse(self, *_a, **_k):
        raise NotPlainData("the program returned an object, not plain data; it cannot be compared")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __len__ = __iter__ = _refuse
    __contains__ = __str__ = __int__ = __float__ = __index__ = __add__ = __radd__ = _refuse
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<object #{self.ref} in the candidate's process>"


class Mirror:
    """The checker's copy of an object of a class only the program defines (MBPP's ``Node``): an
    attribute bag that tests may read and set and pass back (rebuilt on the program's class), but
    never compare: the program's ``__eq__`` is not ours to run."""

    def __init__(self, cls_name: str, attrs: dict):
        object.__setattr__(self, "_Mirror__cls", cls_name)
        self.__dict__.update(attrs)

    def _refuse(self, *_a, **_k):
        raise NotPlainData(f"a {self._Mirror__cls} object from the program cannot be compared")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __len__ = __iter__ = _refuse
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{self._Mirror__cls} from the program>"


class MatchValue:
    """A ``re.Match`` as data: truthy, with ``group``/``groups``/``span``/``start``/``end``."""

    __slots__ = ("_groups", "_spans")

    def __init__(self, groups: list, spans: list):
        self._groups, self._spans = groups, spans

    def group(self, i: int = 0):
        return self._groups[i]

    def groups(self):
        return tuple(self._groups[1:])

    def span(self, i: int = 0):
        return tuple(self._spans[i])

    def start(self, i: int = 0):
        return self._spans[i][0]

    def end(self, i: int = 0):
        return self._spans[i][1]

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<re.Match span={tuple(self._spans[0])}, match={self._groups[0]!r}>"


def encode(value, handles: dict | None = None, depth: int = 0):
    """JSON-able tagged tree for ``value``; non-plain objects become handles stored in ``handles``."""
    if depth > MAX_DEPTH:
        raise NotPlainData(f"value nested deeper than {MAX_DEPTH} levels")
    d = depth + 1
    if value is None or isinstance(value, bool):
        return bool(value) if value is not None else None
    if isinstance(value, int):
        v = int(value)
        return v if -_BIG < v < _BIG else {"i": hex(v)}
    if isinstance(value, float):
        v = float(value)
        return v if math.isfinite(v) else {"f": repr(v)}
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, collections.Counter):
        return {"ctr": [[encode(k, handles, d), encode(n, handles, d)] for k, n in dict.items(value)]}
    if isinstance(value, dict):
        return {"d": [[encode(k, handles, d), encode(v, handles, d)] for k, v in dict.items(value)]}
    if isinstance(value, list):
        return [encode(v, handles, d) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"t": [encode(v, handles, d) for v in tuple.__iter__(value)]}
    if isinstance(value, frozenset):
        return {"fs": [encode(v, handles, d) for v in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"s": [encode(v, handles, d) for v in set.__iter__(value)]}
    if isinstance(value, collections.deque):
        return {"dq": [encode(v, handles, d) for v in collections.deque.__iter__(value)]}
    if isinstance(value, complex):
        return {"c": [encode(value.real, handles, d), encode(value.imag, handles, d)]}
    if isinstance(value, bytes | bytearray):
        return {"b": bytes(value).hex(), "ba": isinstance(value, bytearray)}
    if isinstance(value, fractions.Fraction):
        return {"fr": [encode(value.numerator, handles, d), encode(value.denominator, handles, d)]}
    if isinstance(value, decimal.Decimal):
        return {"dec": str(decimal.Decimal.__str__(value))}
    if type(value) is _MATCH:
        n = value.re.groups
        return {
            "m": [
                [encode(value.group(i), handles, d) for i in range(n + 1)],
                [list(value.span(i)) for i in range(n + 1)],
            ]
        }
    if isinstance(value, Remote):
        return {"h": int(value.ref)}
    if isinstance(value, Mirror):
        attrs = {k: v for k, v in vars(value).items() if k != "_Mirror__cls"}
        return {"obj": value._Mirror__cls, "a": encode(attrs, handles, d)}
    if isinstance(value, type) and BUILTIN_TYPES.get(value.__name__) is value:
        return {"ty": value.__name__}
    out: dict = {}
    attrs = getattr(value, "__dict__", None)
    if isinstance(attrs, dict) and not isinstance(value, type) and callable(getattr(value, "__class__", None)):
        with contextlib.suppress(NotPlainData, RecursionError):
            out = {"obj": str(type(value).__name__), "a": encode(dict(attrs), handles, d)}
    if handles is not None:
        ref = len(handles) + 1
        handles[ref] = value
        out["h"] = ref
    if not out:
        raise NotPlainData(f"an object of type {type(value).__name__!r} is not plain data")
    return out


def decode(tree, resolve=None, depth: int = 0, classes: dict | None = None, mirror: bool = False):
    """Builtin-typed value from an :func:`encode` tree. Handles go through ``resolve(ref)`` or become
    :class:`Remote`; an object's attributes are rebuilt on the class of its name in ``classes`` (the
    receiver's own class), else it is a :class:`Mirror` (``mirror=True``, the checker), its handle,
    or a ``SimpleNamespace``.
    Raises :class:`NotPlainData` on anything malformed."""
    if depth > MAX_DEPTH:
        raise NotPlainData(f"value nested deeper than {MAX_DEPTH} levels")
    d = depth + 1
    t = type(tree)
    if tree is None or t in (bool, int, float, str):
        return tree
    if t is list:
        return [decode(v, resolve, d, classes, mirror) for v in tree]
    if t is not dict or not 1 <= len(tree) <= 3:
        raise NotPlainData(f"malformed value of type {t.__name__}")
    if "obj" in tree or ("h" in tree and len(tree) == 1):
        return _decode_object(tree, resolve, d, classes, mirror)
    tag, body = next(iter(tree.items()))
    try:
        if tag == "t":
            return tuple(decode(v, resolve, d, classes, mirror) for v in body)
        if tag == "d":
            return {decode(k, resolve, d, classes, mirror): decode(v, resolve, d, classes, mirror) for k, v in body}
        if tag == "s":
            return {decode(v, resolve, d, classes, mirror) for v in body}
        if tag == "fs":
            return frozenset(decode(v, resolve, d, classes, mirror) for v in body)
        if tag == "dq":
            return collections.deque(decode(v, resolve, d, classes, mirror) for v in body)
        if tag == "ctr":
            return collections.Counter(
                {decode(k, resolve, d, classes, mirror): decode(v, resolve, d, classes, mirror) for k, v in body}
            )
        if tag == "i" and type(body) is str:
            return int(body, 16)
        if tag == "f" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "c":
            return complex(*(float(decode(x, resolve, d)) for x in body))
        if tag == "b":
            raw = bytes.fromhex(body)
            return bytearray(raw) if tree.get("ba") else raw
        if tag == "fr":
            return fractions.Fraction(*(int(decode(x, resolve, d)) for x in body))
        if tag == "dec" and type(body) is str:
            return decimal.Decimal(body)
        if tag == "m":
            groups, spans = body
            return MatchValue([decode(g, resolve, d) for g in groups], [[int(a), int(b)] for a, b in spans])
        if tag == "ty" and BUILTIN_TYPES.get(body) is not None:
            return BUILTIN_TYPES[body]
    except NotPlainData:
        raise
    except (TypeError, ValueError, KeyError, ZeroDivisionError, decimal.InvalidOperation, RecursionError) as e:
        raise NotPlainData(f"malformed {tag!r} value: {type(e).__name__}") from None
    raise NotPlainData(f"unknown value tag {tag!r}")


def _decode_object(tree: dict, resolve, depth: int, classes: dict | None, mirror: bool):
    ref, name = tree.get("h"), tree.get("obj")
    cls = (classes or {}).get(name) if type(name) is str else None
    if isinstance(cls, type) and "a" in tree:
        attrs = decode(tree["a"], resolve, depth, classes, mirror)
        if type(attrs) is dict and all(type(k) is str for k in attrs):
            try:
                obj = cls.__new__(cls)
                obj.__dict__.update(attrs)
                return obj
            except (TypeError, AttributeError):
                pass
    if mirror and type(name) is str and "a" in tree:
        attrs = decode(tree["a"], resolve, depth, classes, mirror)
        if type(attrs) is dict and all(type(k) is str for k in attrs):
            return Mirror(name, attrs)
    if type(ref) is int:
        return resolve(ref) if resolve else Remote(ref)
    if "a" in tree:
        attrs = decode(tree["a"], resolve, depth, classes, mirror)
        if type(attrs) is dict and all(type(k) is str for k in attrs):
            return types.SimpleNamespace(**attrs)
    raise NotPlainData(f"malformed object value {name!r}")


def to_json(value, depth: int = 0):
    """A decoded value as the host's JSON (tuples and deques as lists, sets as sorted lists)."""
    if depth > MAX_DEPTH:
        raise NotPlainData(f"value nested deeper than {MAX_DEPTH} levels")
    d = depth + 1
    t = type(value)
    if value is None or t in (bool, int, str):
        return value
    if t is float:
        if not math.isfinite(value):
            raise NotPlainData("returned a non-finite float, which has no JSON form")
        return value
    if t in (list, tuple, collections.deque):
        return [to_json(v, d) for v in value]
    if t in (set, frozenset):
        items = [to_json(v, d) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if t in (dict, collections.Counter):
        return {str(k): to_json(v, d) for k, v in value.items()}
    raise NotPlainData(f"returned a {t.__name__}, which has no JSON form")


# ------------------------------------------------------------------------------------------ frames


def write_frame(fd: int, obj) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    view = memoryview(HDR.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int, limit: int, deadline: float | None = None, poll=None, sizes: list | None = None):
    """One JSON frame from ``fd``; ``None`` on EOF at a frame boundary; :class:`Timeout` when
    ``deadline`` passes (``poll()`` runs every 50 ms while waiting and may raise to stop the wait).
    The frame's size is appended to ``sizes``."""
    head = _read_exact(fd, HDR.size, deadline, poll)
    if head is None:
        return None
    (n,) = HDR.unpack(head)
    if sizes is not None:
        sizes.append(n)
    if n > limit:
        raise FrameError(f"a message of {n} bytes (limit {limit})")
    body = _read_exact(fd, n, deadline, poll)
    if body is None:
        raise FrameError("the peer went away in the middle of a message")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise FrameError(f"a message that is not JSON: {type(e).__name__}") from None


class Timeout(Exception):
    """``read_frame`` waited past its deadline."""


def _read_exact(fd: int, n: int, deadline: float | None, poll) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        wait = 0.05 if poll else None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout()
            wait = min(wait, left) if wait else left
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            if poll:
                poll()
            continue
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def place_fds(fds: list[int], first: int, stdio: list[int] | None = None) -> None:
    """In a fresh child: ``stdio`` (or /dev/null) on 0-2, ``fds`` on ``first``, ``first + 1``...;
    every other descriptor closed. Copies go above 100 first, so no target clobbers a source."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in [*(stdio or []), *fds]]
    if stdio is None:
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
    else:
        for target, fd in enumerate(high[:3]):
            os.dup2(fd, target)
        high = high[3:]
    for i, fd in enumerate(high):
        os.dup2(fd, first + i)
    os.closerange(first + len(fds), 65536)
