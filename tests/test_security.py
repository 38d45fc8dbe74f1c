"""Encryption at rest, no secrets in what a run records, loopback-only local S3."""

from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from orchestration.local_s3 import LocalS3State
from resources.s3 import check_bucket_name
from tests.helpers import EVERY_ASSET, materialise, photo_batch, upload

pytestmark = pytest.mark.integration


def recorded_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """Everything a run leaves in the instance: events, metadata, tags and config."""
    run = instance.get_run_by_id(run_id)
    events = [serialize_value(record) for record in instance.all_logs(run_id)]
    return "\n".join([*events, repr(run.tags), repr(run.run_config)])


def test_every_pipeline_object_is_encrypted_at_rest(s3_env, s3_client):
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "sec", "b1", photo_batch({"coffee": ["flipped"]}))
    with dg.instance_for_test() as instance:
        assert materialise(instance, "sec/b1", assets=EVERY_ASSET).success
    pipeline = s3_env["PIPELINE_BUCKET"]
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=pipeline)["Contents"]]
    assert any(k.startswith("tables/") for k in keys) and any(k.startswith("memo/") for k in keys)
    for key in keys:
        head = s3_client.head_object(Bucket=pipeline, Key=key)
        assert head.get("ServerSideEncryption") == "AES256", key


def test_no_secret_in_run_records_or_output(s3_env, s3_client, capfd):
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "sec", "b2",
           {**photo_batch({"rocket": []}), "bad.jpg": b"not an image"})  # fmt: skip
    with dg.instance_for_test() as instance:
        result = materialise(instance, "sec/b2", assets=EVERY_ASSET)
        text = recorded_text(instance, result.run_id)
    output = capfd.readouterr()
    assert result.success and "rocket.jpg" in text  # the scan does see the run's content
    assert secret not in text
    assert secret not in output.out + output.err


def test_the_secret_scan_catches_a_leak(s3_env):
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]

    @dg.op
    def leaky(context: dg.OpExecutionContext) -> None:
        context.log.info(f"connecting with {secret}")

    @dg.job
    def leaky_job():
        leaky()

    with dg.instance_for_test() as instance:
        result = leaky_job.execute_in_process(instance=instance)
        assert secret in recorded_text(instance, result.run_id)


def test_local_s3_listens_on_loopback_only(seaweed: LocalS3State):
    inodes = set()
    for fd in Path(f"/proc/{seaweed.pid}/fd").iterdir():
        target = fd.readlink().as_posix() if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                listening.append(fields[1].split(":")[0])
    assert listening, "found no listening sockets of the weed process"
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    assert set(listening) <= loopback, listening


@pytest.mark.parametrize("name", ["ab", "Upper", "under_score", "-start", "end-", "a..b", "x" * 64])
def test_bad_bucket_names_are_refused(name):
    with pytest.raises(ValueError, match="invalid bucket name"):
        check_bucket_name(name)


def test_good_bucket_names_pass():
    for name in ("shop-uploads", "abc", "a.b-c1", "x" * 63):
        assert check_bucket_name(name) == name
