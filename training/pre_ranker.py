"""The cascade's pre-ranker, distilled from the trained DCN with Ray Train.

Distillation, not the labels: the cascade is only right when it keeps what the DCN would rank
highly, so the pre-ranker learns the DCN's final score (position-neutral, the configured head
weights) on the ranker's own training examples. The loss is the squared error on that score,
standardised, so the few high scores the cut must keep are not lost in the many near-zero ones.

    net, report = distill_pre_ranker(examples, dcn, config)           # Ray Train, one worker
    net, report = distill_pre_ranker(examples, dcn, config, use_ray=False)
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from app.ranking.config import HEAD_COLUMNS, HEADS, RankingConfig
from app.ranking.dcn import MultiTaskDCN
from app.ranking.prerank import PreRankerNet
from app.ranking.scorer import combine_heads

PRE_RANKER_CHECKPOINT = "pre_ranker.pt"


def teacher_scores(dcn: MultiTaskDCN, dense: np.ndarray, categorical: np.ndarray, config: RankingConfig,
                   chunk: int = 65_536) -> np.ndarray:
    """The DCN's final score of each example, as serving computes it (no position)."""
    out = []
    dcn.eval()
    with torch.inference_mode():
        for lo in range(0, len(dense), chunk):
            probs = dcn.predict(torch.from_numpy(dense[lo:lo + chunk]), torch.from_numpy(categorical[lo:lo + chunk]))
            out.append(probs.numpy())
    probs = np.concatenate(out) if out else np.zeros((0, len(HEADS)), np.float32)
    return combine_heads({HEAD_COLUMNS[h]: probs[:, k] for k, h in enumerate(HEADS)}, config.weights)


def distill_loop(dense: np.ndarray, target: np.ndarray, config: RankingConfig, device: torch.device | None = None,
                 report: Callable[[dict, PreRankerNet], None] | None = None, log: Callable[[str], None] = print,
                 ) -> PreRankerNet:
    """Fit a PreRankerNet to `target` (the teacher's scores) by standardised squared error."""
    cascade = config.cascade
    torch.manual_seed(config.training.seed)
    torch.set_num_threads(config.training.threads)
    device = device or torch.device("cpu")
    net = PreRankerNet(dense.shape[1], cascade.hidden)
    net.fit_normaliser(dense)
    net.to(device)
    mean, std = float(target.mean()), float(target.std()) or 1.0
    x = torch.tensor(dense, device=device)  # copies: arrays from Ray's object store are read-only
    y = torch.tensor((target - mean) / std, dtype=torch.float32, device=device)
    optimiser = torch.optim.Adam(net.parameters(), lr=cascade.lr)
    gen = torch.Generator().manual_seed(config.training.seed)
    for epoch in range(1, cascade.epochs + 1):
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(x), generator=gen).to(device)
        total, batches = 0.0, 0
        for lo in range(0, len(order), cascade.batch_size):
            idx = order[lo:lo + cascade.batch_size]
            loss = torch.mean((net(x[idx]) - y[idx]) ** 2)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
            batches += 1
        metrics = {"epoch": epoch, "distill_loss": total / max(batches, 1), "seconds": time.perf_counter() - start}
        log("pre-ranker epoch {epoch}/{n}: distill_loss={distill_loss:.4f} ({seconds:.1f}s)".format(
            n=cascade.epochs, **metrics))
        if report is not None:
            report(metrics, net)
    net.eval()
    return net.cpu()


def agreement(net: PreRankerNet, dense: np.ndarray, target: np.ndarray, user_ids: np.ndarray,
              top: int = 10, kept_share: float = 0.3) -> dict[str, float]:
    """How well the pre-ranker keeps what the teacher ranks first, per user: the share of each
    user's teacher top-`top` inside the pre-ranker's top `kept_share` of that user's examples
    (the cut's job), and the rank correlation overall."""
    with torch.inference_mode():
        student = net(torch.from_numpy(dense)).numpy()
    order = np.argsort(user_ids, kind="stable")
    bounds = np.flatnonzero(np.diff(user_ids[order])) + 1
    kept, users = 0.0, 0
    for rows in np.split(order, bounds):
        if len(rows) <= top:
            continue
        n_keep = max(top, int(np.ceil(kept_share * len(rows))))
        teacher_top = set(rows[np.argsort(-target[rows], kind="stable")[:top]].tolist())
        student_kept = set(rows[np.argsort(-student[rows], kind="stable")[:n_keep]].tolist())
        kept += len(teacher_top & student_kept) / top
        users += 1
    ranks = lambda v: np.argsort(np.argsort(v)).astype(np.float64)  # noqa: E731
    spearman = float(np.corrcoef(ranks(student), ranks(target))[0, 1]) if len(target) > 1 else float("nan")
    return {"teacher_top_kept": kept / max(users, 1), "users": float(users), "spearman": spearman}


def _ray_distill_loop(loop_config: dict) -> None:
    import ray
    import ray.train.torch

    from training.ranker import report_checkpoint

    dense, target = ray.get(loop_config["dense"]), ray.get(loop_config["target"])
    config = RankingConfig.model_validate(loop_config["config"])
    distill_loop(dense, target, config, device=ray.train.torch.get_device(),
                 report=lambda metrics, net: report_checkpoint(metrics, net, PRE_RANKER_CHECKPOINT))


def distill_pre_ranker(
    dense: np.ndarray, categorical: np.ndarray, user_ids: np.ndarray, dcn: MultiTaskDCN, config: RankingConfig,
    *, use_ray: bool = True, storage_path: str | Path = "artifacts/ray_train", log: Callable[[str], None] = print,
) -> tuple[PreRankerNet, dict[str, float]]:
    """Teacher scores → distillation (Ray Train, one worker; or in-process) → the net and how
    well it agrees with the teacher on the examples."""
    target = teacher_scores(dcn, dense, categorical, config)
    if use_ray:
        from training.ranker import fit_with_ray_train

        state, _, _ = fit_with_ray_train(_ray_distill_loop, {"dense": dense, "target": target},
                                         {"config": config.model_dump(mode="json")},
                                         PRE_RANKER_CHECKPOINT, "pre_ranker", storage_path)
        net = PreRankerNet(dense.shape[1], config.cascade.hidden)
        net.load_state_dict(state)
        net.eval()
    else:
        net = distill_loop(dense, target, config, log=log)
    report = agreement(net, dense, target, user_ids)
    log("pre-ranker vs DCN on the training examples: {kept:.3f} of each user's DCN top 10 in its top 30 %, "
        "Spearman {spearman:.3f} ({users:.0f} users)".format(kept=report["teacher_top_kept"], **report))
    return net, report
