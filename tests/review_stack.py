"""One seeded batch and one review app for the whole test session (both review test modules
use them): buckets on the session SeaweedFS, a DAGSTER_HOME of their own, the pipeline run
once, the app in a child process on a free port, stopped by its handle."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image
from pillow_heif import register_heif_opener

from orchestration.local_s3 import REPO_ROOT, LocalS3State, _free_port
from photogroup.samples import load_photo
from tests.helpers import materialise, photo_batch, upload

TENANT, BATCH, OTHER_TENANT, OTHER_BATCH = "shop-a", "b1", "shop-b", "b9"
#: A box shot from 0, 40 and 150 degrees and its artwork variant from 0 and 40: the look of
#: the box at 0 degrees cannot tell the box at 40 from the variant at 40 (a same_look link
#: refused as ambiguous), so the page marks those products undecided.
UNDECIDED_BATCH = "b2"
PHOTOS = {"coffee": ["resized", "flipped"], "astronaut": ["brightened"], "chelsea": [],
          "rocket": ["recompressed"]}  # fmt: skip
REJECTED = {"notes.txt": b"not a photo at all"}
#: An iPhone's HEIC of chelsea (stored turned, with a rotation): browsers cannot show it.
PHONE_PHOTO = "IMG_0001.HEIC"


def phone_photo() -> bytes:
    register_heif_opener()  # to write one
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    turned = load_photo("chelsea").transpose(Image.Transpose.ROTATE_90)
    out = io.BytesIO()
    turned.save(out, format="HEIF", quality=90, exif=exif.tobytes())
    return out.getvalue()


@dataclass(frozen=True)
class ReviewStack:
    url: str
    env: dict[str, str]
    token: str  # shop-a's
    other_token: str  # shop-b's
    accepted: list[str]  # the accepted file names of shop-a/b1

    @property
    def batch_path(self) -> str:
        return f"/t/{TENANT}/b/{BATCH}"

    @property
    def undecided_path(self) -> str:
        return f"/t/{TENANT}/b/{UNDECIDED_BATCH}"


def undecided_batch() -> dict[str, bytes]:
    """The renders of ``UNDECIDED_BATCH`` as JPEG uploads."""
    import io

    import numpy as np

    from bench import render_products as rp

    sources = ("skimage:astronaut", "skimage:chelsea")
    box = rp.make_product(7001, "box", sources)
    variant = rp.make_variant(box, "artwork", np.random.default_rng(3), sources)
    shots = {"box-0": (box, 0), "box-40": (box, 40), "box-150": (box, 150),
             "variant-0": (variant, 2), "variant-40": (variant, 42)}  # fmt: skip
    out = {}
    for name, (product, azimuth) in shots.items():
        view = rp.View(azimuth_deg=azimuth, elevation_deg=15)
        buffer = io.BytesIO()
        rp.render(product, view, "grey_sweep", size=(640, 480)).image.save(
            buffer, format="JPEG", quality=92
        )
        out[f"{name}.jpg"] = buffer.getvalue()
    return out


def seed(seaweed: LocalS3State, root: Path) -> dict[str, str]:
    """Buckets, a DAGSTER_HOME and shop-a/b1 and b2 materialised; shop-b/b9 registered
    only."""
    import boto3

    from orchestration.instance import ensure_dagster_home
    from resources.s3 import client_config

    suffix = uuid.uuid4().hex[:10]
    env = {
        **seaweed.env(),
        "UPLOADS_BUCKET": f"review-uploads-{suffix}",
        "PIPELINE_BUCKET": f"review-pipeline-{suffix}",
        "DAGSTER_HOME": str(root / "dagster_home"),
    }
    client = boto3.client(
        "s3", endpoint_url=seaweed.endpoint_url, aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key, region_name="us-east-1", config=client_config(),
    )  # fmt: skip
    for bucket in (env["UPLOADS_BUCKET"], env["PIPELINE_BUCKET"]):
        client.create_bucket(Bucket=bucket)
    upload(client, env["UPLOADS_BUCKET"], TENANT, BATCH,
           {**photo_batch(PHOTOS), PHONE_PHOTO: phone_photo(), **REJECTED})  # fmt: skip
    upload(client, env["UPLOADS_BUCKET"], TENANT, UNDECIDED_BATCH, undecided_batch())
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        ensure_dagster_home()
        with dg.DagsterInstance.get() as instance:
            # What the review app reads (Accept publishes the rest itself).
            for batch in (BATCH, UNDECIDED_BATCH):
                result = materialise(instance, f"{TENANT}/{batch}",
                                     assets=("product_groups", "product_images"))  # fmt: skip
                assert result.success
            instance.add_dynamic_partitions("upload_batches", [f"{OTHER_TENANT}/{OTHER_BATCH}"])
    return env


def start_app(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "orchestration", "review", "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    from review.server import wait_until_up

    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, child, timeout=120)
    return child, url


@pytest.fixture(scope="session")
def review_stack(seaweed, tmp_path_factory) -> Iterator[ReviewStack]:
    root = tmp_path_factory.mktemp("review")
    env = seed(seaweed, root)
    token, other = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    child_env = {**os.environ, **env,
                 "REVIEW_TOKENS": f"{TENANT}:{token},{OTHER_TENANT}:{other}"}  # fmt: skip
    child, url = start_app(child_env, root / "review.log")
    accepted = sorted([*photo_batch(PHOTOS), PHONE_PHOTO])
    try:
        yield ReviewStack(url, child_env, token, other, accepted)
    finally:
        child.terminate()
        try:
            child.wait(90)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
