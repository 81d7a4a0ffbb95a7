"""The plain-data codec between the program's process and the checker (no sandbox needed)."""

from __future__ import annotations

import collections
import fractions
import json
import re

import pytest

from restem_pipeline.rewards.sandbox import plaindata as pd


def roundtrip(value, **kw):
    return pd.decode(json.loads(json.dumps(pd.encode(value))), **kw)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -7,
        3.5,
        "x",
        [1, (2, 3)],
        (1,),
        {1: "a", (2, 3): [4]},
        {1, 2},
        frozenset({"a"}),
        10**40,
        -(10**19),
        float("inf"),
        2 + 3j,
        b"\x00\xff",
        collections.Counter("aab"),
        collections.deque([1, 2]),
        fractions.Fraction(1, 3),
    ],
)
def test_values_come_back_equal_and_of_the_same_type(value):
    back = roundtrip(value)
    assert back == value and type(back) is type(value)


def test_subclasses_travel_as_their_builtin_value():
    P = collections.namedtuple("P", "x y")

    class Liar(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    assert type(roundtrip(P(1, 2))) is tuple and roundtrip(P(1, 2)) == (1, 2)
    back = roundtrip(Liar("abc"))
    assert type(back) is str and back == "abc" and back != "zzz"


def test_objects_become_handles_or_mirrors_that_cannot_be_compared():
    class Node:
        def __init__(self, v):
            self.v, self.left = v, None

    tree = pd.encode(Node(1), handles={})
    assert tree["obj"] == "Node" and tree["a"] == {"d": [["v", 1], ["left", None]]}
    mirror = pd.decode(tree, mirror=True)
    assert mirror.v == 1
    with pytest.raises(pd.NotPlainData):
        _ = mirror == 1
    remote = pd.decode({"h": 3})
    with pytest.raises(pd.NotPlainData):
        bool(remote)
    # rebuilt on the receiver's own class of that name
    rebuilt = pd.decode(tree, classes={"Node": Node})
    assert type(rebuilt) is Node and rebuilt.v == 1
    with pytest.raises(pd.NotPlainData):
        pd.encode(object())  # no handle table: not data


def test_builtin_types_and_matches_travel_by_value():
    assert roundtrip(int) is int and roundtrip(str) is str
    m = roundtrip(re.match(r"(a)(b)?", "ac"))
    assert bool(m) and m.group() == "a" and m.groups() == ("a", None) and m.span() == (0, 1)


@pytest.mark.parametrize(
    "tree",
    [
        {"t": 5},
        {"zz": []},
        {"i": 7},
        {"f": "1e400"},
        {"d": [[[1], 2]]},
        {"fr": [1, 0]},
        {"a": 1, "b": 2, "c": 3, "d": 4},
    ],
)
def test_malformed_trees_are_not_plain_data(tree):
    with pytest.raises(pd.NotPlainData):
        pd.decode(tree)


def test_nesting_is_bounded():
    deep: list = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(pd.NotPlainData):
        pd.encode(deep)
    loop: list = []
    loop.append(loop)
    with pytest.raises(pd.NotPlainData):
        pd.encode(loop)


def test_to_json_turns_tuples_and_sets_into_lists():
    assert pd.to_json((1, {3, 2}, {"k": (4,)})) == [1, [2, 3], {"k": [4]}]
    with pytest.raises(pd.NotPlainData):
        pd.to_json(float("nan"))
