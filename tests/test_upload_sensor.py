"""The upload sensor on the session SeaweedFS, invoked tick by tick as the daemon would."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import botocore.exceptions
import dagster as dg
import pytest

from orchestration.definitions import defs, pipeline_resources
from resources.s3 import S3Resource
from resources.uploads import UploadsBucket
from sensors.upload_sensor import MAX_RUNS_PER_TICK, upload_sensor

pytestmark = pytest.mark.integration


def tick(instance, cursor=None, resources=None):
    """One evaluation; returns the SensorResult (or raises what the tick would report)."""
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources or defs.resources
    ) as context:
        return upload_sensor(context)


def put_all(client, bucket, keys, body=b"x"):
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=body), keys))


def seal(client, bucket, batch, body=b""):
    client.put_object(Bucket=bucket, Key=f"uploads/{batch}/_SUCCESS", Body=body)


def requested(result) -> list[str]:
    return [r.partition_key for r in result.run_requests]


@pytest.fixture
def bucket(s3_env):
    return s3_env["UPLOADS_BUCKET"]


def test_sealed_batches_run_once_and_open_ones_wait(bucket, s3_client):
    put_all(s3_client, bucket, ["uploads/a/open/1.jpg", "uploads/b/b1/1.jpg", "uploads/b/b2/1.jpg"])
    seal(s3_client, bucket, "b/b1")
    seal(s3_client, bucket, "b/b2")
    with dg.instance_for_test() as instance:
        first = tick(instance)
        assert requested(first) == ["b/b1", "b/b2"]
        assert {r.tags["tenant"] for r in first.run_requests} == {"b"}
        (add,) = first.dynamic_partitions_requests
        assert sorted(add.partition_keys) == ["b/b1", "b/b2"]
        second = tick(instance, first.cursor)
    assert requested(second) == []  # a re-tick never requests the same sealing again
    assert "1 waiting" in second.skip_reason.skip_message


def test_run_keys_are_stable_and_a_reseal_runs_again(bucket, s3_client):
    put_all(s3_client, bucket, ["uploads/t/b/1.jpg"])
    seal(s3_client, bucket, "t/b")
    with dg.instance_for_test() as instance:
        first = tick(instance)
        # Same listing, no cursor: the same run key, which Dagster refuses to launch twice.
        assert tick(instance).run_requests[0].run_key == first.run_requests[0].run_key
        instance.add_dynamic_partitions("upload_batches", ["t/b"])
        time.sleep(1.1)  # LastModified has one-second resolution
        put_all(s3_client, bucket, ["uploads/t/b/2.jpg"])
        seal(s3_client, bucket, "t/b")
        resealed = tick(instance, first.cursor)
    assert requested(resealed) == ["t/b"]
    assert resealed.run_requests[0].run_key != first.run_requests[0].run_key
    assert not resealed.dynamic_partitions_requests[0].partition_keys  # already registered


def test_quiet_period_seals_a_batch_without_marker(s3_env, bucket, s3_client, monkeypatch):
    import sensors.upload_sensor as sensor_module

    resources = pipeline_resources(defs.resources["s3"])
    resources["uploads"] = UploadsBucket(
        s3=defs.resources["s3"], bucket=bucket, quiet_period_seconds=600
    )
    put_all(s3_client, bucket, ["uploads/q/b1/1.jpg"])
    real_clock = sensor_module.clock
    with dg.instance_for_test() as instance:
        early = tick(instance, resources=resources)
        assert requested(early) == []
        # The sensor's clock moves, S3's LastModified stays: 9 minutes on, still waiting
        # (a margin for a slow machine), 10 minutes on, sealed by the quiet period.
        monkeypatch.setattr(sensor_module, "clock", lambda: real_clock() + timedelta(minutes=9))
        assert requested(tick(instance, early.cursor, resources=resources)) == []
        monkeypatch.setattr(sensor_module, "clock", lambda: real_clock() + timedelta(seconds=601))
        late = tick(instance, early.cursor, resources=resources)
    assert requested(late) == ["q/b1"]


def test_manifest_gates_readiness_and_a_malformed_one_does_not_block_others(
    bucket, s3_client, capfd
):
    put_all(s3_client, bucket, ["uploads/m/partial/1.jpg", "uploads/m/bad/1.jpg",
                                "uploads/m/good/1.jpg"])  # fmt: skip
    seal(s3_client, bucket, "m/partial", json.dumps({"files": ["1.jpg", "2.jpg"]}).encode())
    seal(s3_client, bucket, "m/bad", b"{oops")
    seal(s3_client, bucket, "m/good", json.dumps({"files": ["1.jpg"]}).encode())
    with dg.instance_for_test() as instance:
        result = tick(instance)
        assert requested(result) == ["m/good"]
        assert "m/bad: _SUCCESS is neither empty nor JSON" in capfd.readouterr().err
        put_all(s3_client, bucket, ["uploads/m/partial/2.jpg"])
        later = tick(instance, result.cursor)
    assert requested(later) == ["m/partial"]


def test_round_robin_cap_does_not_starve_a_small_tenant(bucket, s3_client):
    big = [f"big/b{i:03d}" for i in range(MAX_RUNS_PER_TICK + 5)]
    put_all(s3_client, bucket, [f"uploads/{b}/_SUCCESS" for b in big]
            + ["uploads/small/only/_SUCCESS", "uploads/zed/z1/_SUCCESS"], body=b"")  # fmt: skip
    with dg.instance_for_test() as instance:
        first = tick(instance)
        second = tick(instance, first.cursor)
        third = tick(instance, second.cursor)
    assert len(first.run_requests) == MAX_RUNS_PER_TICK
    assert {"small/only", "zed/z1"} <= set(requested(first))
    assert sorted(requested(first) + requested(second)) == sorted([*big, "small/only", "zed/z1"])
    assert requested(third) == []


def test_listing_pages_past_one_thousand_keys(bucket, s3_client):
    keys = [f"uploads/p/b1/{i:05d}.jpg" for i in range(2500)]
    put_all(s3_client, bucket, [*keys, "uploads/zz/last/_SUCCESS"], body=b"")
    seal(s3_client, bucket, "p/b1", json.dumps({"files": [k.rsplit("/", 1)[1] for k in keys]}))
    with dg.instance_for_test() as instance:
        result = tick(instance)
    # Both need the last page: zz/last sorts after everything, p/b1's manifest names all.
    assert requested(result) == ["p/b1", "zz/last"]


def test_s3_down_fails_the_tick_and_keeps_the_cursor(s3_env):
    dead = S3Resource(endpoint_url="http://127.0.0.1:9", aws_access_key_id="k",
                      aws_secret_access_key="s", region_name="us-east-1", max_attempts=2,
                      connect_timeout=1)  # fmt: skip
    resources = {"uploads": UploadsBucket(s3=dead, bucket=s3_env["UPLOADS_BUCKET"])}
    cursor = json.dumps({"done": {"t/b": "abc"}, "last_tenant": "t"})
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context,
    ):
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            upload_sensor(context)
        assert context.cursor == cursor
        # S3 back: the next tick goes on from the same cursor.
        assert isinstance(tick(instance, cursor), dg.SensorResult)


class UploadDuringListing(S3Resource):
    """Uploads a batch that sorts *before* the listing's position, between its pages."""

    late_bucket: str

    def create_client(self):
        client = super().create_client()
        pages = []

        def after_page(**_):
            pages.append(1)
            if len(pages) == 1:  # after the first page: the listing has moved past "a/..."
                put_all(client, self.late_bucket, ["uploads/a/late/1.jpg"], body=b"")
                seal(client, self.late_bucket, "a/late")

        client.meta.events.register("after-call.s3.ListObjectsV2", after_page)
        return client


def test_a_batch_landing_behind_the_listing_is_seen_on_the_next_tick(s3_env, bucket, s3_client):
    put_all(s3_client, bucket, [f"uploads/z/big/{i:04d}.jpg" for i in range(1200)], body=b"")
    seal(s3_client, bucket, "z/big")
    s3 = UploadDuringListing(
        endpoint_url=s3_env["S3_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"], late_bucket=bucket,
    )  # fmt: skip
    resources = {"uploads": UploadsBucket(s3=s3, bucket=bucket)}
    with dg.instance_for_test() as instance:
        first = tick(instance, resources=resources)
        second = tick(instance, first.cursor)
    # The listing had passed "a/" when it landed, so this tick cannot see it...
    assert requested(first) == ["z/big"]
    # ...and the next one does: nothing is skipped by a position cursor.
    assert requested(second) == ["a/late"]


def test_cursor_stays_small_after_ten_thousand_batches_and_nothing_runs_twice(
    bucket, s3_client, monkeypatch
):
    import sensors.upload_sensor as sensor_module
    from sensors.sensor_state import MARGIN

    batches = [f"t{i % 20:02d}/b{i:05d}" for i in range(10_000)]
    put_all(s3_client, bucket, [f"uploads/{b}/_SUCCESS" for b in batches], body=b"")
    real_clock = sensor_module.clock
    sealed_by = real_clock() + timedelta(seconds=1)  # S3 rounds LastModified down
    monkeypatch.setattr(sensor_module, "MAX_RUNS_PER_TICK", 4_000)
    runs: list[str] = []
    cursor = None
    with dg.instance_for_test() as instance:
        for _ in range(3):
            result = tick(instance, cursor)
            runs += requested(result)
            cursor = result.cursor
        assert sorted(runs) == sorted(batches)  # every batch once, none twice
        # Once every sealing is older than the margin: nothing runs, the cursor is small.
        monkeypatch.setattr(sensor_module, "clock", lambda: sealed_by + MARGIN)
        result = tick(instance, cursor)
        assert requested(result) == []
        assert len(result.cursor) < 2_048, len(result.cursor)
        # A re-seal after that is a new sealing: that batch, and only it, runs again.
        while datetime.now(UTC) < sealed_by + timedelta(seconds=1):
            time.sleep(0.2)
        seal(s3_client, bucket, batches[123])
        monkeypatch.setattr(sensor_module, "clock", real_clock)
        again = tick(instance, result.cursor)
    assert requested(again) == [batches[123]]


@dg.op
def _noop():
    pass


@dg.job
def _elsewhere():
    _noop()


def test_a_batch_run_elsewhere_since_its_seal_is_adopted_and_a_reseal_runs(bucket, s3_client):
    put_all(s3_client, bucket, ["uploads/r/ran/1.jpg", "uploads/r/not/1.jpg"])
    seal(s3_client, bucket, "r/ran")
    seal(s3_client, bucket, "r/not")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("upload_batches", ["r/ran", "r/not"])
        time.sleep(1.1)  # the run is created after the seal (one-second LastModified)
        _elsewhere.execute_in_process(instance=instance, tags={"dagster/partition": "r/ran"})
        first = tick(instance)
        assert requested(first) == ["r/not"]  # registered, but never run since its seal
        seal(s3_client, bucket, "r/ran")
        assert requested(tick(instance, first.cursor)) == ["r/ran"]
