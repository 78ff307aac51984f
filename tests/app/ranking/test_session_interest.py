"""SessionInterestScorer: the short-term half of the ranking ensemble."""
from __future__ import annotations

import numpy as np

from app.pipeline import Candidates, FeedQuery
from app.ranking.config import SessionInterestConfig
from app.ranking.session import SessionInterestScorer

#                     crime drama comedy
TOPICS = np.array([[0, 0, 0],   # item 0 unused
                   [1, 1, 0],   # 1 crime drama
                   [1, 1, 0],   # 2 crime drama
                   [1, 0, 0],   # 3 crime
                   [0, 1, 0],   # 4 drama
                   [0, 1, 1],   # 5 drama comedy
                   [0, 1, 0],   # 6 drama
                   [0, 0, 1],   # 7 comedy
                   [0, 0, 0]],  # 8 no topics
                  dtype=np.float32)


def candidates(final: list[float]) -> Candidates:
    ids = np.arange(3, 3 + len(final))
    c = Candidates.from_source("test", ids, np.zeros(len(ids)))
    return c.with_scores({"final": np.asarray(final, np.float32)})


def test_without_a_session_the_ranker_scores_stand():
    stage = SessionInterestScorer(TOPICS, SessionInterestConfig(weight=1.0))
    c = candidates([0.3, 0.2, 0.1, 0.4, 0.2, 0.1])
    out = stage.score(FeedQuery(user_id=1), c)
    np.testing.assert_array_equal(out["final"], c.scores["final"])
    assert not out["session_interest"].any()


def test_crime_dramas_lift_crime_more_than_drama_and_never_lower_a_score():
    stage = SessionInterestScorer(TOPICS, SessionInterestConfig(weight=1.0))
    c = candidates([0.2, 0.2, 0.2, 0.2, 0.2, 0.2])  # items 3..8
    out = stage.score(FeedQuery(user_id=1, session_item_ids=(1, 2)), c)
    match = dict(zip(c.item_ids.tolist(), out["session_interest"].tolist()))
    assert match[3] > match[4] > 0  # crime is the rarer, telling topic
    assert match[7] == 0 and match[8] == 0
    assert (out["final"] >= c.scores["final"]).all()
    assert out["final"][0] > out["final"][1]


def test_the_weight_scales_the_lift_and_zero_turns_it_off():
    c = candidates([0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    query = FeedQuery(user_id=1, session_item_ids=(3,))
    off = SessionInterestScorer(TOPICS, SessionInterestConfig(weight=0.0)).score(query, c)
    one = SessionInterestScorer(TOPICS, SessionInterestConfig(weight=1.0)).score(query, c)
    two = SessionInterestScorer(TOPICS, SessionInterestConfig(weight=2.0)).score(query, c)
    np.testing.assert_array_equal(off["final"], c.scores["final"])
    lift_one, lift_two = one["final"] - c.scores["final"], two["final"] - c.scores["final"]
    np.testing.assert_allclose(lift_two, 2 * lift_one, rtol=1e-5)
    assert lift_one[0] > 0  # item 3 itself: a perfect match doubles at weight 1
    np.testing.assert_allclose(one["final"][0], 0.4, rtol=1e-5)
