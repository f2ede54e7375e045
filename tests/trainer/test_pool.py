"""The data pool: seeded epoch-wise sampling, replacement by synthesized samples, job book, checkpointing."""

from __future__ import annotations

import json

import pytest

from syngrpo.data.pool import DataPool, PendingJob
from syngrpo.synthesis.client import job_key
from syngrpo.types import Sample


def _samples(n: int) -> list[Sample]:
    return [
        Sample(id=f"s{i}", task="rec", image=f"/img/{i}.png", problem=f"the object {i}", solution=[1, 2, 30, 40],
               width=64, height=64)
        for i in range(n)
    ]


def _synth(origin: Sample, generation: int = 1, tag: str = "a") -> Sample:
    return origin.evolve(id=f"{origin.id}~{tag}", image=f"/synth/{origin.id}-{tag}.png", source_id=origin.origin_id,
                         generation=generation, description=f"desc {tag}")


def _job(pool: DataPool, origin_id: str, step: int, t: float = 0.0) -> PendingJob:
    base = pool.synthesis_base(origin_id)
    return PendingJob(key=job_key(pool.run_tag, step, origin_id), origin_id=origin_id, base=base.to_dict(),
                      description="a beach", seed=step, step=step, submitted_at=t)


def test_one_epoch_visits_every_sample_exactly_once():
    pool = DataPool(_samples(10), seed=3)
    ids = [s.id for s in pool.draw(10)]
    assert sorted(ids) == sorted(f"s{i}" for i in range(10))
    assert pool.progress == pytest.approx(1.0)


def test_batches_run_on_into_the_next_epoch_with_a_new_order():
    pool = DataPool(_samples(5), seed=0)
    first = [s.id for s in pool.draw(4)]
    second = [s.id for s in pool.draw(4)]
    assert pool.epoch == 1 and pool.position == 3
    assert sorted(first + second[:1]) == sorted(f"s{i}" for i in range(5))
    orders = {tuple(s.id for s in DataPool(_samples(5), seed=0).draw(15)[5 * e: 5 * e + 5]) for e in range(3)}
    assert len(orders) > 1  # epochs are shuffled differently


def test_same_seed_draws_the_same_batches_and_another_seed_does_not():
    a = [s.id for s in DataPool(_samples(20), seed=1).draw(30)]
    b = [s.id for s in DataPool(_samples(20), seed=1).draw(30)]
    c = [s.id for s in DataPool(_samples(20), seed=2).draw(30)]
    assert a == b
    assert a != c


def test_replaced_sample_is_drawn_instead_of_its_original():
    pool = DataPool(_samples(3), seed=0)
    new = _synth(pool.original("s1"))
    assert pool.replace("s1", new)
    drawn = {s.origin_id: s for s in pool.draw(3)}
    assert drawn["s1"] is new
    assert drawn["s1"].solution == pool.original("s1").solution  # labels stay (foreground consistency)
    assert pool.synthesized_fraction() == pytest.approx(1 / 3)


def test_replace_rejects_a_sample_of_another_origin():
    pool = DataPool(_samples(3), seed=0)
    with pytest.raises(ValueError, match="descends from"):
        pool.replace("s0", _synth(pool.original("s1")))


def test_source_original_always_synthesizes_from_the_original_and_newest_result_wins():
    pool = DataPool(_samples(2), seed=0, source="original")
    pool.replace("s0", _synth(pool.original("s0"), tag="a"))
    assert pool.synthesis_base("s0") is pool.original("s0")
    assert pool.replace("s0", _synth(pool.original("s0"), tag="b"), base_generation=0)
    assert pool.current("s0").id == "s0~b"


def test_source_latest_builds_on_the_current_version_and_drops_stale_results():
    pool = DataPool(_samples(2), seed=0, source="latest")
    first = _synth(pool.original("s0"), generation=1, tag="a")
    assert pool.replace("s0", first, base_generation=0)
    assert pool.synthesis_base("s0") is first
    # a result computed from generation 0 arrives after generation 1 took its place: stale
    assert not pool.replace("s0", _synth(pool.original("s0"), generation=1, tag="late"), base_generation=0)
    assert pool.current("s0") is first
    assert pool.counters.stale == 1
    assert pool.replace("s0", _synth(first, generation=2, tag="b"), base_generation=1)
    assert pool.current("s0").generation == 2


def test_one_job_per_sample_and_a_cap_on_jobs_in_flight():
    pool = DataPool(_samples(4), seed=0)
    pool.track(_job(pool, "s0", 1))
    assert not pool.can_submit("s0", max_in_flight=10)
    assert pool.can_submit("s1", max_in_flight=10)
    pool.track(_job(pool, "s1", 1))
    assert not pool.can_submit("s2", max_in_flight=2)


def test_result_routes_back_to_its_job_and_unknown_keys_are_counted():
    pool = DataPool(_samples(2), seed=0)
    job = _job(pool, "s1", 7)
    pool.track(job)
    assert pool.take(job.key) is job
    assert pool.take(job.key) is None  # each result is taken once
    assert pool.take("someone-else") is None
    assert pool.counters.unknown == 2
    assert not pool.in_flight


def test_late_jobs_expire_and_leave_the_original_in_place():
    pool = DataPool(_samples(2), seed=0)
    pool.track(_job(pool, "s0", 1, t=100.0))
    pool.track(_job(pool, "s1", 2, t=190.0))
    late = pool.expire(now=250.0, timeout=100.0)
    assert [j.origin_id for j in late] == ["s0"]
    assert list(pool.in_flight) == [job_key(pool.run_tag, 2, "s1")]
    assert pool.current("s0") is pool.original("s0")
    assert pool.counters.expired == 1


def test_state_round_trips_through_json_and_continues_the_same_draws():
    pool = DataPool(_samples(7), seed=5, source="latest")
    pool.draw(9)
    pool.replace("s3", _synth(pool.original("s3")), base_generation=0)
    pool.track(_job(pool, "s2", 4, t=12.5))
    state = json.loads(json.dumps(pool.state_dict()))

    restored = DataPool(_samples(7), seed=0)
    restored.load_state_dict(state)
    assert [s.id for s in restored.draw(12)] == [s.id for s in pool.draw(12)]
    assert restored.current("s3").id == "s3~a"
    assert restored.source == "latest" and restored.run_tag == pool.run_tag
    job = restored.in_flight[job_key(pool.run_tag, 4, "s2")]
    assert job.origin_id == "s2" and job.submitted_at == 12.5 and job.base_sample().id == "s2"
    assert restored.counters.as_dict() == pool.counters.as_dict()


def test_restoring_onto_other_samples_is_refused():
    state = DataPool(_samples(3), seed=0).state_dict()
    with pytest.raises(ValueError, match="other samples"):
        DataPool(_samples(4), seed=0).load_state_dict(state)


def test_duplicate_sample_ids_are_refused():
    with pytest.raises(ValueError, match="unique"):
        DataPool(_samples(2) + _samples(1), seed=0)


def test_job_keys_differ_between_runs_and_steps():
    a, b = DataPool(_samples(1)), DataPool(_samples(1))
    assert job_key(a.run_tag, 1, "s0") != job_key(b.run_tag, 1, "s0")
    assert job_key(a.run_tag, 1, "s0") != job_key(a.run_tag, 2, "s0")
