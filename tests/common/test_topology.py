"""The NATS topology: ensure is idempotent, verify names what is missing."""

from __future__ import annotations

import pytest

from mutate.common import messaging, topology
from mutate.common.settings import load
from mutate.v1 import events_pb2


async def test_ensure_twice_changes_nothing(jetstream) -> None:
    settings = load(topology.TopologySettings, {})
    first = await topology.ensure(jetstream, settings)
    assert any("stream MUTATE_JOBS created" in c for c in first)
    before = await jetstream.consumer_info(
        topology.JOBS_STREAM, topology.WORKERS_CONSUMER
    )
    assert await topology.ensure(jetstream, settings) == []
    after = await jetstream.consumer_info(
        topology.JOBS_STREAM, topology.WORKERS_CONSUMER
    )
    assert after.created == before.created
    assert after.config.ack_wait == pytest.approx(30.0)
    # MaxDeliver unlimited: the worker, not the server, dead-letters.
    assert after.config.max_deliver in (None, -1)


async def test_ensure_updates_a_changed_setting(jetstream) -> None:
    await topology.ensure(jetstream, load(topology.TopologySettings, {}))
    changed = await topology.ensure(
        jetstream, load(topology.TopologySettings, {"MUTATE_JOB_ACK_WAIT_MS": "750"})
    )
    assert changed == [f"consumer {topology.JOBS_STREAM}/mutate-workers updated"]
    info = await jetstream.consumer_info(topology.JOBS_STREAM, "mutate-workers")
    assert info.config.ack_wait == pytest.approx(0.75)


async def test_verify_names_what_is_missing(jetstream) -> None:
    with pytest.raises(topology.TopologyMissing) as info:
        await topology.verify(
            jetstream,
            streams=[topology.JOBS_STREAM],
            consumers=[(topology.JOBS_STREAM, topology.WORKERS_CONSUMER)],
            buckets=[topology.CANCELLATIONS_BUCKET],
        )
    message = str(info.value)
    assert "stream MUTATE_JOBS" in message
    assert "consumer MUTATE_JOBS/mutate-workers" in message
    assert "mutate.common.topology ensure" in message


async def test_repeated_publish_of_one_attempt_is_dropped(jetstream) -> None:
    await topology.ensure(jetstream, load(topology.TopologySettings, {}))
    request = events_pb2.JobRequest(job_id="job_a", organization_id="org_a")
    request.attempt = 1
    first = await messaging.publish_job_request(jetstream, request)
    again = await messaging.publish_job_request(jetstream, request)
    assert not first.duplicate
    assert again.duplicate
    request.attempt = 2
    retry = await messaging.publish_job_request(jetstream, request)
    assert not retry.duplicate
    info = await jetstream.stream_info(topology.JOBS_STREAM)
    assert info.state.messages == 2


def test_event_subject_refuses_tokens_that_break_subjects() -> None:
    assert (
        topology.event_subject("org_1", "job_2", "completed")
        == "mutate.events.org_1.job_2.completed"
    )
    for bad in ("a.b", "a*", ">", ""):
        with pytest.raises(ValueError):
            topology.event_subject(bad, "job_2", "completed")
    with pytest.raises(ValueError):
        topology.event_subject("org_1", "job_2", "exploded")
