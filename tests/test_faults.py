"""Faults between the pipeline and a real S3: injected through botocore's event hooks,
and a SeaweedFS server stopped in the middle of a run."""

import time
from collections import Counter

import botocore.awsrequest
import botocore.exceptions
import dagster as dg
import pytest

from assets import ALL_ASSETS
from orchestration.definitions import env_s3, pipeline_resources
from orchestration.jobs import image_pipeline_job
from orchestration.local_s3 import LocalS3, _free_port
from orchestration.runner import materializations
from photogroup.embed import LocalEmbedder
from resources.embedder import EmbedderResource
from resources.s3 import S3Resource
from tests.helpers import materialise, metadata, photo_batch, upload

pytestmark = pytest.mark.integration

SENDS: Counter = Counter()  # (key, outcome) -> sends seen by the hook
FAULTS: dict[str, list[str]] = {}  # key -> faults to inject on its next sends, in order


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_):
        yield self.body


def _inject(request, **_):
    key = request.url.split("?")[0].split("/", 4)[-1]
    fault = FAULTS.get(key, []).pop(0) if FAULTS.get(key) else None
    SENDS[(key, fault or "sent")] += 1
    if fault == "drop":
        raise botocore.exceptions.ConnectionClosedError(endpoint_url=request.url)
    if fault:
        status, code = fault.split(":")
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        return botocore.awsrequest.AWSResponse(request.url, int(status), {}, _Raw(body))
    return None


class FaultyS3Resource(S3Resource):
    def create_client(self):
        client = super().create_client()
        client.meta.events.register("before-send.s3.GetObject", _inject)
        client.meta.events.register("provide-client-params.s3.PutObject", _writing)
        client.meta.events.register("after-call.s3.PutObject", _written)
        return client


WRITTEN: list[str] = []  # keys PUT successfully, in order


def _writing(params, context, **_):
    context["put_key"] = params["Key"]


def _written(http_response, context, **_):
    if http_response.status_code == 200:
        WRITTEN.append(context["put_key"])


def faulty_resources() -> dict:
    return pipeline_resources(env_s3(FaultyS3Resource))


@pytest.fixture(autouse=True)
def clean():
    SENDS.clear()
    FAULTS.clear()


def test_retryable_errors_are_retried_and_counted(s3_env, s3_client):
    files = photo_batch({"astronaut": ["flipped"], "coffee": []})
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "f", "b1", files)
    keys = [f"uploads/f/b1/{name}" for name in files]
    FAULTS[keys[0]] = ["503:SlowDown", "500:InternalError"]
    FAULTS[keys[1]] = ["drop"]
    FAULTS[keys[2]] = ["503:ServiceUnavailable"]
    with dg.instance_for_test() as instance:
        result = materialise(
            instance, "f/b1", faulty_resources(), assets=("raw_images", "product_images")
        )
    assert result.success
    assert metadata(result, "raw_images")["fetch_retries"] == 4
    assert metadata(result, "raw_images")["accepted"] == 3
    # Each upload reached S3 once, for raw_images and product_images together (renditions
    # are made from the manifest's decode): a retried GET is not sent again after it
    # succeeded.
    assert SENDS[(keys[0], "sent")] == SENDS[(keys[1], "sent")] == 1


def test_access_denied_is_not_retried_and_fails_clearly(s3_env, s3_client):
    files = photo_batch({"rocket": []})
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "f", "b2", files)
    key = "uploads/f/b2/rocket.jpg"
    FAULTS[key] = ["403:AccessDenied", "403:AccessDenied"]
    with (
        dg.instance_for_test() as instance,
        pytest.raises(dg.Failure, match="could not be fetched") as failure,
    ):
        materialise(instance, "f/b2", faulty_resources(), assets=("raw_images",))
    assert key in str(failure.value.metadata["failed_keys"].value)
    assert SENDS[(key, "403:AccessDenied")] == 1  # one attempt, no retries
    assert SENDS[(key, "sent")] == 0


def _chain(error) -> str:
    """An error's message with those of its causes, as the UI shows them."""
    return error.message + (_chain(error.cause) if error.cause else "")


# --- the S3 server stops mid-run --------------------------------------------------------

SERVER: dict = {}
EMBEDDED: list[int] = []


class StopS3MidRunEmbedder(LocalEmbedder):
    """Stops the S3 server just before embedding its second chunk, once: when the first
    chunk's embeddings are stored (they are written while the next chunk computes)."""

    def embed(self, images):
        if len(EMBEDDED) == 1 and SERVER.pop("stop_on_second_chunk", False):
            deadline = time.monotonic() + 30
            while sum("/embeddings/" in k for k in WRITTEN) < EMBEDDED[0]:
                assert time.monotonic() < deadline, "the first chunk's entries were not written"
                time.sleep(0.01)
            SERVER["server"].stop()
        EMBEDDED.append(len(images))
        return super().embed(images)


class StopS3EmbedderResource(EmbedderResource):
    def get_embedder(self):
        return StopS3MidRunEmbedder()


def crash_job():
    """Module-level so Dagster can reconstruct it for re-execution from failure."""
    resources = faulty_resources()
    resources["embedder"] = StopS3EmbedderResource(batch_size=2, s3=resources["uploads"].s3)
    defs = dg.Definitions(assets=ALL_ASSETS, jobs=[image_pipeline_job], resources=resources)
    return defs.resolve_job_def("image_pipeline_job")


IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


@pytest.fixture
def own_server(tmp_path, monkeypatch):
    """A SeaweedFS of this test's own: it gets stopped and restarted."""
    server = LocalS3(tmp_path / "s3", s3_port=_free_port())
    state = server.start()
    SERVER["server"] = server
    for name, value in {**state.env(), "UPLOADS_BUCKET": "crash-uploads",
                        "PIPELINE_BUCKET": "crash-pipeline"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    try:
        yield server
    finally:
        server.stop(timeout=2.0)  # throwaway data: skip weed's ~16 s graceful stop
        SERVER.clear()
        EMBEDDED.clear()
        WRITTEN.clear()


def test_s3_stopped_mid_run_fails_clearly_and_resumes_without_redoing_work(own_server):
    client = S3Resource(endpoint_url=own_server.status().endpoint_url,
                        aws_access_key_id=own_server.status().access_key,
                        aws_secret_access_key=own_server.status().secret_key,
                        region_name="us-east-1").get_client()  # fmt: skip
    for bucket in ("crash-uploads", "crash-pipeline"):
        client.create_bucket(Bucket=bucket)
    files = photo_batch({"astronaut": ["flipped", "resized"], "coffee": ["brightened"],
                         "chelsea": []})  # fmt: skip
    upload(client, "crash-uploads", "crash", "b1", files)
    SERVER["stop_on_second_chunk"] = True
    job = dg.reconstructable(crash_job)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("upload_batches", ["crash/b1"])
        with dg.execute_job(job, instance, run_config=IN_PROCESS,
                            tags={"dagster/partition": "crash/b1"}) as first:  # fmt: skip
            assert not first.success
            errors = [_chain(e.step_failure_data.error) for e in first.all_events
                      if e.is_step_failure]  # fmt: skip
            assert any("Could not connect to the endpoint URL" in m for m in errors), errors
        # The second chunk was computed and its write failed; writes run while the next
        # chunk computes, so the failure shows at most one chunk later.
        assert EMBEDDED in ([2, 2], [2, 2, 2])
        first_run = len(EMBEDDED)

        own_server.start()  # same folder and port: the data is still there
        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        with dg.execute_job(job, instance, run_config=IN_PROCESS, reexecution_options=options,
                            tags={"dagster/partition": "crash/b1"}) as second:  # fmt: skip
            assert second.success, [
                _chain(e.step_failure_data.error)[-1500:]
                for e in second.all_events
                if e.is_step_failure
            ]
            executed = {e.step_key for e in second.all_events if e.is_step_success}
            assert "raw_images" not in executed  # not redone: its output was kept
            (event,) = materializations(second, "image_embeddings")
            embeddings = {k: v.value for k, v in event.metadata.items()}
    # Only the first chunk was stored before the stop: it is a hit, and just the 4 others
    # are embedded again (the second chunk's result never reached the memo).
    assert (embeddings["memo_hits"], embeddings["memo_misses"]) == (2, len(files) - 2)
    assert EMBEDDED[first_run:] == [2, 2]
