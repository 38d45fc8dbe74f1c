"""The upload sensor on real S3: open batches wait, sealed ones run once."""

import dagster as dg
import pytest

from orchestration.definitions import defs
from sensors.batch_discovery import sealed_batches

pytestmark = pytest.mark.integration


def tick(instance: dg.DagsterInstance):
    """Invoke the sensor as the daemon would, returning its raw result."""
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        return defs.resolve_sensor_def("upload_sensor")(context)


def test_only_sealed_unregistered_batches_are_requested(s3_env, s3_client):
    bucket = s3_env["UPLOADS_BUCKET"]
    s3_client.put_object(Bucket=bucket, Key="uploads/shop-a/open/a.jpg", Body=b"x")
    for batch in ("b1", "b2"):
        s3_client.put_object(Bucket=bucket, Key=f"uploads/shop-b/{batch}/a.jpg", Body=b"x")
        s3_client.put_object(Bucket=bucket, Key=f"uploads/shop-b/{batch}/_SUCCESS", Body=b"")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("upload_batches", ["shop-b/b1"])
        result = tick(instance)
    requests = result.run_requests
    assert [r.partition_key for r in requests] == ["shop-b/b2"]
    assert requests[0].run_key == "shop-b/b2" and requests[0].tags["tenant"] == "shop-b"
    (add,) = result.dynamic_partitions_requests
    assert list(add.partition_keys) == ["shop-b/b2"]


def test_nothing_new_skips_with_a_reason(s3_env, s3_client):
    s3_client.put_object(Bucket=s3_env["UPLOADS_BUCKET"], Key="uploads/s/b/a.jpg", Body=b"x")
    with dg.instance_for_test() as instance:
        result = tick(instance)
    assert isinstance(result, dg.SkipReason)
    assert "1 open" in result.skip_message


def test_discovery_pages_past_one_thousand_keys(s3_env, s3_client):
    from concurrent.futures import ThreadPoolExecutor

    bucket = s3_env["UPLOADS_BUCKET"]
    keys = [f"uploads/big/b1/{i:05d}.jpg" for i in range(1100)] + ["uploads/big/b1/_SUCCESS"]
    keys.append("uploads/zz-last/b9/_SUCCESS")  # sorts after every key of the big batch
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3_client.put_object(Bucket=bucket, Key=k, Body=b""), keys))
    sealed, open_count = sealed_batches(s3_client, bucket)
    assert {b.partition_key for b in sealed} == {"big/b1", "zz-last/b9"}
    assert open_count == 0
