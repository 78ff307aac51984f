"""Old Ray Train runs are pruned from training.storage_dir: only finished runs of the same job,
beyond the newest `keep`; a run still going (no marker) and other jobs' runs stay."""
from __future__ import annotations

import os

from training.ray_job import FINISHED_MARKER, JobStorage, fresh_run_name, prune_finished_runs


def _run(root, name: str, finished_at: int | None) -> str:
    (root / name / "checkpoint_000000").mkdir(parents=True)
    if finished_at is not None:
        marker = root / name / FINISHED_MARKER
        marker.write_text("done")
        os.utime(marker, ns=(finished_at, finished_at))
    return name


def test_only_finished_runs_of_the_job_beyond_the_newest_are_deleted(tmp_path):
    old = [_run(tmp_path, f"ranker-20261201-00000{k}-aaaaa{k}", finished_at=10**18 + k) for k in range(4)]
    going = _run(tmp_path, "ranker-20261201-000009-bbbbbb", finished_at=None)  # another training, still running
    other_job = _run(tmp_path, "two_tower-20261201-000001-cccccc", finished_at=10**18)
    given_name = _run(tmp_path, "my-run", finished_at=10**18)
    current = _run(tmp_path, fresh_run_name("ranker"), finished_at=2 * 10**18)

    deleted = prune_finished_runs(JobStorage.of(tmp_path), current, keep=2)

    assert sorted(deleted) == sorted(old[:3])  # the current run and the newest other finished one stay
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([old[3], going, other_job, given_name, current])
    assert prune_finished_runs(JobStorage.of(tmp_path), "my-run", keep=1) == []  # not a fresh name: nothing


def test_a_storage_that_does_not_exist_yet_prunes_nothing(tmp_path):
    assert prune_finished_runs(JobStorage.of(tmp_path / "absent"), fresh_run_name("ranker"), keep=1) == []
