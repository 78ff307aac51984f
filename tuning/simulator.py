"""A seeded user simulator with long-term outcomes, serving pages with the real collator and ads.

Structure (after RecSim NG): a `SimulatedUser` has three lifecycle methods — `initial_state`,
`response(state, page, draws)` and `next_state(state, day)` — and is given its `ChoiceModel`
(how a page is examined and clicked) and `AffinityModel` (how much an item suits the user).
`Simulation.run` plays days of sessions over a `SimWorld`.

User model (all parameters in tuning.config; θ and σ are the known truth the audits recover):

    examine slot p       ~ Bernoulli(θ_p),  θ_p = p^(−position_power)             (position-based)
    click organic i      ~ Bernoulli(σ(a_ui)) if examined, a_ui = scale · u·v_i + bias
    hide organic i       ~ Bernoulli(hide_rate · (1 − σ(a_ui))) if examined and not clicked
    hide ad a            ~ Bernoulli(ad_hide_rate · m_cat(a)) if examined
    page utility  U      = Σ_clicks σ(a_ui) + diversity_bonus · (distinct clicked topics − 1)⁺
                           − Σ_examined ads ad_annoyance · m_cat · (1 + fatigue_sensitivity · F)
                           − hide_annoyance · hides
    next page            ~ Bernoulli(σ(continue_bias + continue_utility · U − page_decay · k))
    ad fatigue F         += fatigue_per_ad per examined ad;  F ← decay · F each night
    satisfaction S       ← (1 − r) S + r · mean page utility of the session
    visit on a day       ~ Bernoulli(σ(return_bias + return_sat · S − return_fatigue · F))
    sessions that day    = clip(Poisson(rate · exp(sessions_sat · S)), 1, max)
    churn after a visit  ~ Bernoulli(σ(churn_bias − churn_sat · S + churn_fatigue · F))  (for good)
    interest drift       u ← normalise(u + drift · (mean of clicked v − u)) after each session

Creators: an established creator (≥ min_weekly_exposure examined impressions last week) whose
exposure falls below it this week quits with `quit_probability`; their items leave the pools.

System side (the served pages): each user's pool is the real pipeline's reranked output
(`tuning.world`); each day the system re-scores it with the dynamic user embedding — the real
two-tower user tower re-encoded from the user's newest consumption — adding
`dynamic_weight · (u_t·v − u_0·v)` to the ranker's final score (the system half of the feedback
loop); consumed, hidden and session-served items and quit creators are filtered; the real
AdServer (in-memory caps and budgets, `ManualClock`) runs the auction for every page, and the
real `Collator` blends the page with the trial's α, β, γ and ad-load rules. Ads examined are
committed (revenue = their price per impression); ads placed but not examined are released.
Campaigns are made live for the whole horizon (the generator ends some within days) so that
ad supply is stationary; notifications are not simulated.

Common random numbers: every draw comes from a Generator seeded by (seed, user, day, session,
page) with fixed-size arrays, so two configurations see the same users, the same visit days
while their states agree, and the same uniforms slot by slot.
"""
from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from app.ads.pacing import BudgetPacer
from app.ads.server import AdServer
from app.ads.types import AdCandidate
from app.ads.world import AdWorld
from app.collator.collator import Collator
from app.collator.config import CollatorConfig
from app.collator.types import CollatedPage, CollatorWeights, OrganicEntry, SessionSignals
from app.ads.config import AdsConfig
from app.evaluation.metrics import gini
from app.state.budgets import InMemoryBudgetStore
from app.state.caps import InMemoryCapStore
from app.state.clock import ManualClock
from tuning.config import ChoiceModelConfig, SimulationConfig, UserDynamicsConfig
from tuning.world import SimWorld

DAY = 86_400.0
Progress = Callable[[str], None]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


# -- models passed into the user ---------------------------------------------------------------

class AffinityModel(Protocol):
    def logit(self, latent: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Click logit of each item for a user with interest `latent`."""


@dataclass(frozen=True)
class LatentAffinityModel:
    """a_ui = scale · u·v_i + bias over the world's item latents."""

    item_latent: np.ndarray
    scale: float
    bias: float

    def logit(self, latent: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        return self.scale * (self.item_latent[item_ids] @ latent) + self.bias


class ChoiceModel(Protocol):
    def examination(self, n: int) -> np.ndarray:
        """θ_1..θ_n: probability that each position is examined."""

    def click_probability(self, logits: np.ndarray) -> np.ndarray:
        """P(click | examined)."""


@dataclass(frozen=True)
class PositionBasedChoiceModel:
    """The position-based model: examination depends only on the position, click on relevance."""

    config: ChoiceModelConfig

    def examination(self, n: int) -> np.ndarray:
        return self.config.examination(n)

    def click_probability(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits)


# -- the user ------------------------------------------------------------------------------------

@dataclass
class UserState:
    latent: np.ndarray
    satisfaction: float
    fatigue: float
    active: bool = True
    consumed: set[int] = field(default_factory=set)
    hidden: set[int] = field(default_factory=set)
    clicks_newest_first: list[int] = field(default_factory=list)
    visited_today: bool = False


@dataclass(frozen=True)
class PageDraws:
    """The uniforms one page consumes (fixed sizes, for common random numbers)."""

    examine: np.ndarray
    click: np.ndarray
    hide: np.ndarray
    scroll: float

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int) -> "PageDraws":
        u = rng.random(3 * n + 1)
        return cls(u[:n], u[n:2 * n], u[2 * n:3 * n], float(u[-1]))


@dataclass
class PageResponse:
    examined: np.ndarray  # bool per slot
    clicked: np.ndarray  # bool per slot (organic only)
    hidden: np.ndarray  # bool per slot
    utility: float
    continues: bool
    clicked_items: list[int]
    examined_items: list[int]  # organic item ids examined
    examined_ads: list[int]  # slot indices of examined ads
    relevance: float  # Σ σ(a) over examined organic (true expected engagement)


@dataclass(frozen=True)
class LoggedImpression:
    """One organic slot of a served page and what the user did, with the truth behind it:
    `preference` σ(a_ui) (the click probability once examined) and `examination` θ_p."""

    user_id: int
    item_id: int
    position: int
    clicked: bool
    day: int
    ts: float
    request_id: str
    hidden: bool
    preference: float
    examination: float


class SimulatedUser(ABC):
    """RecSim-style user: lifecycle methods over an explicit state."""

    @abstractmethod
    def initial_state(self, index: int) -> UserState: ...

    @abstractmethod
    def response(self, state: UserState, page: CollatedPage, page_index: int, draws: PageDraws) -> PageResponse: ...

    @abstractmethod
    def end_session(self, state: UserState, utilities: Sequence[float], clicked: Sequence[int]) -> None: ...

    @abstractmethod
    def next_state(self, state: UserState, rng: np.random.Generator) -> UserState:
        """Overnight transition: churn (after a visit), fatigue decay."""


class FeedUser(SimulatedUser):
    """The concrete user of the module docstring."""

    def __init__(self, world: SimWorld, choice: ChoiceModel, affinity: AffinityModel,
                 dynamics: UserDynamicsConfig, choice_config: ChoiceModelConfig) -> None:
        self.world = world
        self.choice = choice
        self.affinity = affinity
        self.dynamics = dynamics
        self.choice_config = choice_config

    def initial_state(self, index: int) -> UserState:
        return UserState(self.world.user_latent[index].copy(), self.dynamics.satisfaction_init, 0.0)

    def visit_probability(self, state: UserState) -> float:
        d = self.dynamics
        return float(sigmoid(d.return_bias + d.return_satisfaction * state.satisfaction - d.return_fatigue * state.fatigue))

    def sessions_rate(self, state: UserState) -> float:
        return self.dynamics.sessions_per_day * math.exp(self.dynamics.sessions_satisfaction * state.satisfaction)

    def churn_probability(self, state: UserState) -> float:
        d = self.dynamics
        return float(sigmoid(d.churn_bias - d.churn_satisfaction * state.satisfaction + d.churn_fatigue * state.fatigue))

    def _ad_multiplier(self, category: str) -> float:
        return self.dynamics.ad_category_annoyance.get(category, 1.0)

    def response(self, state: UserState, page: CollatedPage, page_index: int, draws: PageDraws) -> PageResponse:
        d, c = self.dynamics, self.choice_config
        slots = page.slots
        n = len(slots)
        theta = self.choice.examination(n)
        examined = draws.examine[:n] < theta
        clicked = np.zeros(n, bool)
        hidden = np.zeros(n, bool)
        organic_idx = [k for k, s in enumerate(slots) if s.kind == "organic"]
        ad_idx = [k for k, s in enumerate(slots) if s.kind == "ad"]
        utility = 0.0
        relevance = 0.0
        clicked_items: list[int] = []
        if organic_idx:
            oi = np.array(organic_idx)
            items = np.array([int(slots[k].ref_id) for k in organic_idx], dtype=np.int64)
            p = self.choice.click_probability(self.affinity.logit(state.latent, items))
            ex = examined[oi]
            cl = ex & (draws.click[oi] < p)
            hd = ex & ~cl & (draws.hide[oi] < c.organic_hide_rate * (1 - p))
            clicked[oi], hidden[oi] = cl, hd
            clicked_items = items[cl].tolist()
            utility += float(p[cl].sum())
            relevance = float(p[ex].sum())
            if cl.any():
                n_topics = int((self.world.item_topics[items[cl]].sum(axis=0) > 0).sum())
                utility += d.diversity_bonus * max(n_topics - 1, 0)
        examined_ads: list[int] = []
        for k in ad_idx:
            if not examined[k]:
                continue
            examined_ads.append(k)
            m = self._ad_multiplier(slots[k].item.category)
            utility -= d.ad_annoyance * m * (1 + d.ad_fatigue_sensitivity * state.fatigue)
            state.fatigue += d.ad_fatigue_per_ad
            if draws.hide[k] < c.ad_hide_rate * m:
                hidden[k] = True
        utility -= d.hide_annoyance * int(hidden.sum())
        continues = draws.scroll < float(sigmoid(d.continue_bias + d.continue_utility * utility - d.continue_page_decay * page_index))
        examined_items = [int(slots[k].ref_id) for k in organic_idx if examined[k]]
        state.consumed.update(clicked_items)
        state.hidden.update(int(slots[k].ref_id) for k in organic_idx if hidden[k])
        return PageResponse(examined, clicked, hidden, utility, bool(continues), clicked_items, examined_items,
                            examined_ads, relevance)

    def end_session(self, state: UserState, utilities: Sequence[float], clicked: Sequence[int]) -> None:
        d = self.dynamics
        if utilities:
            state.satisfaction = (1 - d.satisfaction_rate) * state.satisfaction + d.satisfaction_rate * float(np.mean(utilities))
        if clicked:
            target = self.world.item_latent[np.asarray(clicked)].mean(axis=0)
            u = state.latent + d.interest_drift * (target - state.latent)
            state.latent = u / max(np.linalg.norm(u), 1e-9)
            state.clicks_newest_first = list(reversed(clicked)) + state.clicks_newest_first

    def next_state(self, state: UserState, rng: np.random.Generator) -> UserState:
        if state.visited_today and rng.random() < self.churn_probability(state):
            state.active = False
        state.fatigue *= self.dynamics.ad_fatigue_daily_decay
        state.visited_today = False
        return state


# -- results -------------------------------------------------------------------------------------

DAY_FIELDS = ("active_users", "visits", "sessions", "pages", "organic_examined", "clicks", "ads_examined",
              "revenue", "hides", "satisfaction", "fatigue", "relevance")


@dataclass
class SimulationResult:
    days: list[dict[str, float]]
    weeks: list[dict[str, float]]
    item_exposure: np.ndarray  # examined organic impressions per item id
    creator_exposure: dict[int, float]
    n_users: int
    objective: dict[str, float]
    seconds: float
    final_latent: np.ndarray
    initial_latent: np.ndarray

    @property
    def long_term_value(self) -> float:
        return self.objective["long_term_value"]

    def summary(self) -> dict[str, float]:
        return dict(self.objective)


def long_term_objective(days: list[dict[str, float]], n_users: int, config: SimulationConfig) -> dict[str, float]:
    """LTV = revenue + click_value · organic clicks + retained_user_value · retained users (per 100 users)."""
    o = config.objective
    revenue = sum(d["revenue"] for d in days)
    clicks = sum(d["clicks"] for d in days)
    retained = days[-1]["active_users"] if days else float(n_users)
    scale = 100.0 / max(n_users, 1)
    value = revenue + o.click_value * clicks + o.retained_user_value * retained
    return {
        "long_term_value": value * scale,
        "revenue": revenue * scale,
        "engagement_value": o.click_value * clicks * scale,
        "retention_value": o.retained_user_value * retained * scale,
        "clicks": clicks * scale,
        "retained_share": retained / max(n_users, 1),
        "day1_revenue": days[0]["revenue"] * scale if days else 0.0,
        "revenue_per_page": revenue / max(sum(d["pages"] for d in days), 1),
        "ads_per_page": sum(d["ads_examined"] for d in days) / max(sum(d["pages"] for d in days), 1),
        "sessions": sum(d["sessions"] for d in days) * scale,
    }


# -- the simulation --------------------------------------------------------------------------------

def stationary_ad_world(world: AdWorld) -> AdWorld:
    """Every campaign live for the whole horizon (ad supply must not end mid-simulation)."""
    campaigns = tuple(dataclasses.replace(c, start_ts=0.0, end_ts=1e13) for c in world.campaigns)
    return AdWorld(world.advertisers, campaigns, world.ads)


class ExposureReranker(Protocol):
    def rerank(self, item_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Order (indices) of the pool after an exposure-aware adjustment."""


@dataclass
class Simulation:
    """Plays `days` days for every user of `world` under one collator configuration."""

    world: SimWorld
    collator_config: CollatorConfig
    config: SimulationConfig
    seed: int = 0
    ads_config: AdsConfig = field(default_factory=AdsConfig)
    reranker: ExposureReranker | None = None
    position_randomisation: int = 0  # >0: shuffle the first n organic entries of each page (audit logs)
    log_impressions: bool = False
    impressions: list[LoggedImpression] = field(default_factory=list)

    def __post_init__(self) -> None:
        w = self.world
        c = self.config
        self.collator = Collator(self.collator_config)
        self.weights = CollatorWeights(self.collator_config.alpha, self.collator_config.beta, self.collator_config.gamma)
        self.choice = PositionBasedChoiceModel(c.choice)
        self.affinity = LatentAffinityModel(w.item_latent, c.choice.affinity_scale, c.choice.affinity_bias)
        self.user = FeedUser(w, self.choice, self.affinity, c.user, c.choice)
        self.clock = ManualClock(w.start_time)
        self.ad_server = None
        if w.ads is not None:
            self.ad_server = AdServer(
                stationary_ad_world(w.ads.world), w.ads.ranker, BudgetPacer.from_config(w.ads.forecast, self.ads_config),
                InMemoryCapStore(), InMemoryBudgetStore(self.ads_config.reservation_ttl_s), self.ads_config, self.clock,
            )
        self._topics = {}
        self._request = 0

    # -- system side -------------------------------------------------------------------------
    def _daily_pools(self, states: list[UserState], initial_sys: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each user's pool in today's order: final + dynamic-embedding term, optional reranker."""
        w, sys = self.world, self.config.system
        extra_vecs = None
        if w.embed_users is not None and sys.dynamic_weight > 0 and initial_sys is not None:
            histories = [s.clicks_newest_first + w.user_history.get(int(u), []) for s, u in zip(states, w.user_ids)]
            extra_vecs = w.embed_users(w.user_ids, histories)
        out = []
        for r, u in enumerate(w.user_ids):
            pool = w.pools[int(u)]
            score = pool.final.copy()
            if extra_vecs is not None:
                v = w.item_latent[pool.item_ids]
                score = score + sys.dynamic_weight * (v @ extra_vecs[r] - v @ initial_sys[r])
            order = np.argsort(-score, kind="stable") if extra_vecs is not None else np.arange(len(score))
            if self.reranker is not None:
                order = order[self.reranker.rerank(pool.item_ids[order], score[order])]
            out.append((pool.item_ids[order], np.maximum(score[order], 0.0), pool.p_click[order]))
        return out

    def _entries(self, items: np.ndarray, values: np.ndarray, p_click: np.ndarray, skip: set[int],
                 quit_creators: set[int], n: int) -> list[OrganicEntry]:
        w = self.world
        out: list[OrganicEntry] = []
        for item, value, p in zip(items, values, p_click):
            item = int(item)
            creator = int(w.item_creator[item])
            if item in skip or creator in quit_creators:
                continue
            topics = self._topics.get(item)
            if topics is None:
                topics = self._topics[item] = tuple(t for t, x in zip(w.topics, w.item_topics[item]) if x > 0)
            out.append(OrganicEntry(item, float(value), float(min(max(p, 0.0), 1.0)), creator, topics))
            if len(out) == n:
                break
        return out

    def _serve_ads(self, user_id: int, request_id: str, session_id: str) -> list[AdCandidate]:
        if self.ad_server is None:
            return []
        user = self.world.ad_users.get(user_id)
        if user is None:
            return []
        n_slots = max(1, self.config.system.page_size // self.collator_config.organic_per_ad)
        return list(self.ad_server.serve(user, request_id, n_slots, now=self.clock(), session_id=session_id).ads)

    # -- the loop -----------------------------------------------------------------------------
    def run(self, days: int | None = None, progress: Progress | None = None) -> SimulationResult:
        started = time.perf_counter()
        w, c = self.world, self.config
        days = days or c.days
        n = w.n_users
        states = [self.user.initial_state(r) for r in range(n)]
        initial_latent = np.stack([s.latent for s in states])
        initial_sys = None
        if w.embed_users is not None and c.system.dynamic_weight > 0:
            initial_sys = w.embed_users(w.user_ids, [w.user_history.get(int(u), []) for u in w.user_ids])
        item_exposure = np.zeros(len(w.item_creator))
        creator_exposure: dict[int, float] = {}
        week_creator: dict[int, float] = {}
        last_week_creator: dict[int, float] = {}
        quit_creators: set[int] = set()
        day_rows: list[dict[str, float]] = []
        week_rows: list[dict[str, float]] = []
        week_consumed: list[set[int]] = [set() for _ in range(n)]
        week_creators_consumed: list[set[int]] = [set() for _ in range(n)]
        page_size = c.system.page_size
        for day in range(days):
            day_start = w.start_time + day * DAY
            pools = self._daily_pools(states, initial_sys)
            row = dict.fromkeys(DAY_FIELDS, 0.0)
            sessions: list[tuple[float, int, int]] = []
            for r, u in enumerate(w.user_ids):
                s = states[r]
                if not s.active:
                    continue
                rng = np.random.default_rng([self.seed, int(u), day, 0])
                visit_u, count_u = rng.random(), rng.random()
                times = np.sort(rng.uniform(0, DAY, size=c.user.max_sessions_per_day))
                if visit_u >= self.user.visit_probability(s):
                    continue
                k = int(np.clip(_poisson_from_uniform(self.user.sessions_rate(s), count_u), 1, c.user.max_sessions_per_day))
                s.visited_today = True
                row["visits"] += 1
                sessions += [(day_start + float(times[j]), r, j) for j in range(k)]
            for ts, r, j in sorted(sessions):
                s, u = states[r], int(w.user_ids[r])
                self.clock.now = max(self.clock.now, ts)
                items, values, p_click = pools[r]
                signals = SessionSignals()
                served: set[int] = set()
                utilities: list[float] = []
                clicked: list[int] = []
                session_id = f"s{u}-{day}-{j}"
                row["sessions"] += 1
                for page_k in range(c.user.max_pages_per_session):
                    draws = PageDraws.draw(np.random.default_rng([self.seed, u, day, 1 + j, page_k]), page_size)
                    entries = self._entries(items, values, p_click, s.consumed | s.hidden | served, quit_creators, page_size)
                    if not entries:
                        break
                    if self.position_randomisation:
                        m = min(self.position_randomisation, len(entries))
                        perm = np.random.default_rng([self.seed, u, day, 1 + j, page_k, 7]).permutation(m)
                        entries = [entries[i] for i in perm] + entries[m:]
                    self._request += 1
                    request_id = f"{session_id}-{page_k}"
                    ads = self._serve_ads(u, request_id, session_id)
                    page = self.collator.collate(entries, ads, (), signals, page_size, self.weights)
                    if self.ad_server is not None and page.unplaced_ads:
                        self.ad_server.release(request_id, [a.ad_id for a in page.unplaced_ads])
                    resp = self.user.response(s, page, page_k, draws)
                    unseen_ads = []
                    for k, slot in enumerate(page.slots):
                        if slot.kind != "ad":
                            continue
                        if resp.examined[k]:
                            if self.ad_server.commit_impression(request_id, slot.item.ad_id):
                                row["revenue"] += slot.item.price
                        else:
                            unseen_ads.append(slot.item.ad_id)
                    if unseen_ads:
                        self.ad_server.release(request_id, unseen_ads)
                    if self.log_impressions:
                        self._log_page(u, day, request_id, page, resp, s)
                    for item in resp.examined_items:
                        item_exposure[item] += 1
                        creator = int(w.item_creator[item])
                        creator_exposure[creator] = creator_exposure.get(creator, 0.0) + 1
                        week_creator[creator] = week_creator.get(creator, 0.0) + 1
                    for item in resp.clicked_items:
                        week_consumed[r].add(item)
                        week_creators_consumed[r].add(int(w.item_creator[item]))
                    served.update(int(sl.ref_id) for sl in page.slots if sl.kind == "organic")
                    n_ads_examined = len(resp.examined_ads)
                    n_examined = int(resp.examined.sum())
                    signals = SessionSignals(
                        ads_shown_in_session=signals.ads_shown_in_session + sum(sl.kind == "ad" for sl in page.slots),
                        impressions_in_session=signals.impressions_in_session + n_examined,
                        ads_in_session_impressions=signals.ads_in_session_impressions + n_ads_examined,
                        hides_in_session=signals.hides_in_session + int(resp.hidden.sum()),
                    )
                    row["pages"] += 1
                    row["organic_examined"] += len(resp.examined_items)
                    row["clicks"] += len(resp.clicked_items)
                    row["ads_examined"] += n_ads_examined
                    row["hides"] += int(resp.hidden.sum())
                    row["relevance"] += resp.relevance
                    utilities.append(resp.utility)
                    clicked += resp.clicked_items
                    if not resp.continues:
                        break
                self.user.end_session(s, utilities, clicked)
            for r, u in enumerate(w.user_ids):
                if states[r].active:
                    self.user.next_state(states[r], np.random.default_rng([self.seed, int(u), day, 99]))
            active = [s for s in states if s.active]
            row["active_users"] = len(active)
            row["satisfaction"] = float(np.mean([s.satisfaction for s in active])) if active else 0.0
            row["fatigue"] = float(np.mean([s.fatigue for s in active])) if active else 0.0
            row["day"] = day + 1
            day_rows.append(row)
            if (day + 1) % 7 == 0 or day + 1 == days:
                week_rows.append(self._week_row(len(week_rows) + 1, states, week_consumed, week_creators_consumed,
                                                item_exposure, week_creator, len(quit_creators)))
                newly = self._creators_quitting(last_week_creator, week_creator, len(week_rows))
                quit_creators |= newly
                week_rows[-1]["creators_quit"] = float(len(quit_creators))
                last_week_creator, week_creator = week_creator, {}
                week_consumed = [set() for _ in range(n)]
                week_creators_consumed = [set() for _ in range(n)]
            if progress is not None:
                progress(f"day {day + 1}/{days}: active {row['active_users']:.0f}/{n}, sessions {row['sessions']:.0f}, "
                         f"clicks {row['clicks']:.0f}, revenue {row['revenue']:.2f}, satisfaction {row['satisfaction']:.2f}")
        objective = long_term_objective(day_rows, n, c)
        return SimulationResult(day_rows, week_rows, item_exposure, creator_exposure, n, objective,
                                time.perf_counter() - started, np.stack([s.latent for s in states]), initial_latent)

    def _log_page(self, user_id: int, day: int, request_id: str, page: CollatedPage, resp: PageResponse,
                  state: UserState) -> None:
        """Every organic slot of a served page, with the truth that drew its response."""
        organic = [k for k, slot in enumerate(page.slots) if slot.kind == "organic"]
        if not organic:
            return
        items = np.array([int(page.slots[k].ref_id) for k in organic], np.int64)
        preference = self.choice.click_probability(self.affinity.logit(state.latent, items))
        examination = self.choice.examination(len(page.slots))
        for k, item, q in zip(organic, items.tolist(), preference.tolist()):
            self.impressions.append(LoggedImpression(
                user_id, item, page.slots[k].position, bool(resp.clicked[k]), day, self.clock(), request_id,
                bool(resp.hidden[k]), float(q), float(examination[k])))

    def _week_row(self, week: int, states: list[UserState], consumed: list[set[int]], creators: list[set[int]],
                  item_exposure: np.ndarray, week_creator: dict[int, float], n_quit: int) -> dict[str, float]:
        w = self.world
        active = [r for r, s in enumerate(states) if s.active]
        topics = [int((w.item_topics[list(consumed[r])].sum(axis=0) > 0).sum()) if consumed[r] else 0 for r in active]
        profiles = w.topic_profile(np.stack([states[r].latent for r in active])) if active else np.zeros((0, 1))
        entropy = -(profiles * np.log(np.maximum(profiles, 1e-12))).sum(axis=1) if active else np.zeros(0)
        return {
            "week": float(week),
            "active_users": float(len(active)),
            "unique_topics_consumed": float(np.mean(topics)) if topics else 0.0,
            "unique_creators_consumed": float(np.mean([len(creators[r]) for r in active])) if active else 0.0,
            "interest_entropy": float(entropy.mean()) if len(entropy) else 0.0,
            "creators_exposed": float(len(week_creator)),
            "creator_exposure_gini": gini(np.array(list(week_creator.values()))) if week_creator else 0.0,
            "creators_quit": float(n_quit),
        }

    def _creators_quitting(self, last: dict[int, float], this: dict[int, float], week: int) -> set[int]:
        cfg = self.config.creators
        rng = np.random.default_rng([self.seed, 424242, week])
        out = set()
        for creator in sorted(last):
            if last[creator] >= cfg.min_weekly_exposure and this.get(creator, 0.0) < cfg.min_weekly_exposure:
                if rng.random() < cfg.quit_probability:
                    out.add(creator)
        return out


def _poisson_from_uniform(rate: float, u: float) -> int:
    """Inverse-CDF Poisson draw from one uniform (keeps the draw count fixed for CRN)."""
    k, p = 0, math.exp(-rate)
    cdf = p
    while u > cdf and k < 1000:
        k += 1
        p *= rate / k
        cdf += p
    return k


def simulate(world: SimWorld, collator_config: CollatorConfig, config: SimulationConfig, seed: int = 0,
             days: int | None = None, progress: Progress | None = None, **kwargs) -> SimulationResult:
    """One configuration, one seed: the whole horizon."""
    return Simulation(world, collator_config, config, seed, **kwargs).run(days, progress)
