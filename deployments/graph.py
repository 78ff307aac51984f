"""The application: one ingress over four stage deployments, composed with DeploymentHandles.

    serve deploy serve_config.yaml        # import_path: deployments.graph:app
    serve.run(build_app(user_config))     # tests and `rayfeed serve --no-deploy-cli`

Defaults here are what a bare `serve run deployments.graph:app` gets; serve_config.yaml sets
every deployment's autoscaling, resources, queue bounds and user_config explicitly.
"""
from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.auction import Auction
from deployments.ingress import FeedIngress
from deployments.monitor import Monitor
from deployments.ranking import Ranking
from deployments.reranking import Reranking
from deployments.retrieval import Retrieval

DEPLOYMENTS = {"FeedIngress": FeedIngress, "Retrieval": Retrieval, "Ranking": Ranking,
               "Reranking": Reranking, "Auction": Auction, "Monitor": Monitor}

# Fractional CPUs: on a 2-core machine, 1 CPU per replica would leave most replicas pending.
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "FeedIngress": {"max_ongoing_requests": 32, "max_queued_requests": 64,
                    "ray_actor_options": {"num_cpus": 0.3}},
    "Retrieval": {"max_ongoing_requests": 8, "max_queued_requests": 64,
                  "ray_actor_options": {"num_cpus": 0.3}},
    "Ranking": {"max_ongoing_requests": 16, "max_queued_requests": 64,
                "ray_actor_options": {"num_cpus": 0.3}},
    "Reranking": {"max_ongoing_requests": 8, "max_queued_requests": 64,
                  "ray_actor_options": {"num_cpus": 0.2}},
    "Auction": {"max_ongoing_requests": 8, "max_queued_requests": 64,
                "ray_actor_options": {"num_cpus": 0.2}},
    # One replica: the live monitor joins predictions and events in one process.
    "Monitor": {"num_replicas": 1, "max_ongoing_requests": 4, "ray_actor_options": {"num_cpus": 0.1}},
}


def build_app(
    user_config: dict[str, Any] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    stage_user_config: dict[str, dict[str, Any]] | None = None,
) -> Application:
    """`user_config` (DeploymentSettings) goes to every deployment, `stage_user_config[name]`
    replaces it for one; `options[name]` overrides that deployment's Serve options."""
    options = options or {}
    stage_user_config = stage_user_config or {}

    def bound(name: str, *args: Any):
        opts = {**DEFAULT_OPTIONS[name], **options.get(name, {})}
        opts["user_config"] = stage_user_config.get(name, user_config or {})
        return DEPLOYMENTS[name].options(**opts).bind(*args)

    return bound("FeedIngress", bound("Retrieval"), bound("Ranking"), bound("Reranking"), bound("Auction"),
                 bound("Monitor"))


app = build_app()
