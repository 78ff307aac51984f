"""The cascade's pre-ranker, distilled from the trained DCN with Ray Train.

Distillation, not the labels: the cascade is only right when it keeps what the DCN would rank
highly, so the pre-ranker learns the DCN's final score (position-neutral, the configured head
weights) on the ranker's own training examples, and it learns the order within each user (a soft
pairwise loss), since the cut only ever compares the candidates of one request.

    net, report = distill_pre_ranker(examples, dcn, config, job=TrainJobConfig(num_workers=2))  # Ray Train
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
from training.config import TrainJobConfig
from training.ray_job import (
    DataParallel, ExampleArrays, RayTrainWorkers, Resumed, checkpoint_state, fresh_run_name, resume_point, run_job,
    shuffled_order, worker_block, worker_log,
)
from training.ray_runtime import local_ray

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


def _partners(user_ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row, where its user's rows start (in user order) and how many there are."""
    order = np.argsort(user_ids, kind="stable")
    _, first, counts = np.unique(user_ids[order], return_index=True, return_counts=True)
    group = np.empty(len(user_ids), np.int64)
    group[order] = np.repeat(np.arange(len(first)), counts)
    return torch.from_numpy(order), torch.from_numpy(np.stack([first[group], counts[group]], axis=1))


def distill_loop(dense: np.ndarray, item_codes: np.ndarray, user_ids: np.ndarray, target: np.ndarray,
                 config: RankingConfig, item_weight: np.ndarray | None = None, device: torch.device | None = None,
                 report: Callable[[dict, PreRankerNet], None] | None = None, log: Callable[[str], None] = print,
                 parallel: DataParallel = DataParallel(), resumed: Resumed | None = None) -> PreRankerNet:
    """Fit a PreRankerNet to the teacher's order within each user: every row is paired with a
    random row of the same user, and the student's score difference learns the teacher's
    (a soft pairwise loss, temperature `cascade.temperature` of the teacher's standard deviation).
    Only the order within a request matters to the cut, so no capacity goes to users' levels.
    `item_weight`: the DCN's item-id embedding table (frozen; None: dense features only).
    Across Ray Train workers (`parallel`), the rows are this worker's block (whole users but the
    block's edges), the normaliser and the temperature's scale come from every worker's rows, and
    a step takes `cascade.batch_size` anchors in all. `resumed`: a restarted run's last
    checkpoint (weights and normaliser), continued from the epoch after it."""
    cascade = config.cascade
    torch.manual_seed(config.training.seed)
    torch.set_num_threads(parallel.threads(config.training.threads))
    device = device or parallel.device
    embedding = None
    if item_weight is not None:
        embedding = torch.nn.Embedding.from_pretrained(torch.tensor(item_weight), freeze=True).to(device)
    net = PreRankerNet(dense.shape[1], cascade.hidden, embedding)
    parallel.fit_normaliser(net, dense)
    if resumed is not None:
        net.load_state_dict(resumed.state)
    net.to(device)
    student = parallel.prepare(net)  # DistributedDataParallel across Ray Train workers
    x = torch.tensor(dense, device=device)  # copies: arrays from Ray's object store are read-only
    codes = torch.tensor(item_codes, device=device)
    scale = float(parallel.moments(target)[1]) * cascade.temperature or 1.0
    y = torch.tensor(target / scale, dtype=torch.float32, device=device)
    order, groups = _partners(np.asarray(user_ids))
    order, groups = order.to(device), groups.to(device)
    optimiser = torch.optim.Adam(student.parameters(), lr=cascade.lr)
    gen = torch.Generator().manual_seed(config.training.seed + parallel.rank)
    bce = torch.nn.BCEWithLogitsLoss()
    batch_size = parallel.batch_size(cascade.batch_size)
    for epoch in range(resumed.epochs_done + 1 if resumed else 1, cascade.epochs + 1):
        start = time.perf_counter()
        student.train()
        anchors = torch.randperm(len(x), generator=gen).to(device)
        total, batches = 0.0, 0
        for lo in range(0, len(anchors), batch_size):
            i = anchors[lo:lo + batch_size]
            first, count = groups[i, 0], groups[i, 1]
            offset = (torch.rand(len(i), generator=gen).to(device) * count).long()
            j = order[first + offset]
            scores = student(torch.cat([x[i], x[j]]), torch.cat([codes[i], codes[j]]))
            loss = bce(scores[:len(i)] - scores[len(i):], torch.sigmoid(y[i] - y[j]))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
            batches += 1
        metrics = {"epoch": epoch, "distill_loss": parallel.mean(total / max(batches, 1)),
                   "seconds": time.perf_counter() - start}
        if parallel.rank == 0:
            log("pre-ranker epoch {epoch}/{n}: distill_loss={distill_loss:.4f} ({seconds:.1f}s)".format(
                n=cascade.epochs, **metrics))
        if report is not None:
            report(metrics, net)
    net.eval()
    return net.cpu()


def agreement(net: PreRankerNet, dense: np.ndarray, item_codes: np.ndarray, target: np.ndarray,
              user_ids: np.ndarray, top: int = 10, kept_share: float = 0.3) -> dict[str, float]:
    """How well the pre-ranker keeps what the teacher ranks first, per user: the share of each
    user's teacher top-`top` inside the pre-ranker's top `kept_share` of that user's examples
    (the cut's job), and the rank correlation within users (mean over users)."""
    with torch.inference_mode():
        student = net(torch.from_numpy(dense), torch.from_numpy(np.asarray(item_codes, np.int64))).numpy()
    order = np.argsort(user_ids, kind="stable")
    bounds = np.flatnonzero(np.diff(user_ids[order])) + 1
    kept, correlations, users = 0.0, [], 0
    ranks = lambda v: np.argsort(np.argsort(v)).astype(np.float64)  # noqa: E731
    for rows in np.split(order, bounds):
        if len(rows) <= top:
            continue
        n_keep = max(top, int(np.ceil(kept_share * len(rows))))
        teacher_top = set(rows[np.argsort(-target[rows], kind="stable")[:top]].tolist())
        student_kept = set(rows[np.argsort(-student[rows], kind="stable")[:n_keep]].tolist())
        kept += len(teacher_top & student_kept) / top
        correlations.append(np.corrcoef(ranks(student[rows]), ranks(target[rows]))[0, 1])
        users += 1
    spearman = float(np.nanmean(correlations)) if correlations else float("nan")
    return {"teacher_top_kept": kept / max(users, 1), "users": float(users), "spearman": spearman}


def _ray_distill_loop(loop_config: dict) -> None:
    import ray

    from training.ranker import report_checkpoint

    block = worker_block(loop_config["examples"])
    config = RankingConfig.model_validate(loop_config["config"])
    distill_loop(block["dense"], block["item_codes"], block["user_ids"], block["target"], config,
                 ray.get(loop_config["item_weight"]), parallel=RayTrainWorkers(), log=worker_log,
                 report=lambda metrics, net: report_checkpoint(metrics, net, PRE_RANKER_CHECKPOINT),
                 resumed=resume_point(PRE_RANKER_CHECKPOINT))


def distill_pre_ranker(
    dense: np.ndarray, categorical: np.ndarray, user_ids: np.ndarray, dcn: MultiTaskDCN, config: RankingConfig,
    *, use_ray: bool = True, storage_path: str | Path = "artifacts/ray_train", log: Callable[[str], None] = print,
    job: TrainJobConfig | None = None,
) -> tuple[PreRankerNet, dict[str, float]]:
    """Teacher scores → distillation (Ray Train on `job`'s workers, default one; or in-process)
    → the net, wired to the DCN's item embedding, and how well it agrees with the teacher on the
    examples. Each worker's block holds whole users (rows shuffled by user), so a row's partners
    come from the same user, as in one process."""
    target = teacher_scores(dcn, dense, categorical, config)
    net = PreRankerNet.for_dcn(dcn, config.cascade.hidden)
    names = dcn.schema.categorical_names
    item_codes = categorical[:, names.index("item_id")] if "item_id" in names else np.zeros(len(dense), np.int64)
    item_weight = None if net.item_embedding is None else net.item_embedding.weight.detach().cpu().numpy()
    if use_ray:
        import ray

        job = job or TrainJobConfig()
        order = None if job.num_workers == 1 else shuffled_order(len(dense), config.training.seed, groups=user_ids)
        examples = {"dense": dense, "item_codes": item_codes, "user_ids": user_ids, "target": target}
        with local_ray(workers=job.num_workers):  # the item table travels through the object store
            result = run_job(_ray_distill_loop, {"examples": ExampleArrays(examples, order)},
                             {"config": config.model_dump(mode="json"), "item_weight": ray.put(item_weight)},
                             job, storage_path, fresh_run_name("pre_ranker"), num_to_keep=2)
        state = checkpoint_state(result, PRE_RANKER_CHECKPOINT)
    else:
        state = distill_loop(dense, item_codes, user_ids, target, config, item_weight, log=log).state_dict()
    net.load_state_dict(state)
    net.eval()
    report = agreement(net, dense, item_codes, target, user_ids)
    log("pre-ranker vs DCN on the training examples: {kept:.3f} of each user's DCN top 10 in its top 30 %, "
        "Spearman within users {spearman:.3f} ({users:.0f} users)".format(kept=report["teacher_top_kept"], **report))
    return net, report
