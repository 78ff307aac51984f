"""FriendLists: the social graph as one CSR table, read the way a dict of per-user lists was."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.data.friends import FriendLists


def test_each_user_gets_its_own_edges_in_the_tables_order():
    edges = pd.DataFrame({"user_id": [3, 1, 3, 1, 3], "friend_id": [9, 2, 4, 7, 1],
                          "weight": [0.5, 1.0, 0.25, 2.0, 3.0], "close": [True, False, False, True, False]})
    friends = FriendLists.from_edges(edges)
    ids, weights, close = friends.of(3)
    assert ids.tolist() == [9, 4, 1] and weights.tolist() == [0.5, 0.25, 3.0] and close.tolist() == [True, False, False]
    assert friends.of(1)[0].tolist() == [2, 7]
    expected = {int(u): g["friend_id"].tolist() for u, g in edges.groupby("user_id")}
    assert {u: friends.of(u)[0].tolist() for u in expected} == expected


@pytest.mark.parametrize("user", [0, 2, 4, 10**12, -1])
def test_a_user_without_friends_or_unknown_gets_empty_lists(user):
    friends = FriendLists.from_edges(pd.DataFrame({"user_id": [1, 3], "friend_id": [3, 1], "weight": 1.0, "close": False}))
    assert [len(a) for a in friends.of(user)] == [0, 0, 0]


def test_an_empty_graph_and_a_negative_user_id():
    empty = FriendLists.from_edges(pd.DataFrame({"user_id": np.zeros(0, np.int64), "friend_id": np.zeros(0, np.int64),
                                                 "weight": np.zeros(0), "close": np.zeros(0, bool)}))
    assert len(empty.of(1)[0]) == 0
    with pytest.raises(ValueError, match="user_id"):
        FriendLists.from_edges(pd.DataFrame({"user_id": [-2], "friend_id": [1], "weight": 1.0, "close": False}))
