"""The `python -m orchestration` contract, through real subprocesses."""

import json
import subprocess
import sys

import boto3
import botocore.exceptions
import pytest

from orchestration.local_s3 import _free_port
from tests.helpers import photo_batch

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_ingest_run_groups_on_a_folder(tmp_path, subprocess_env):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, body in photo_batch({"chelsea": ["flipped", "resized"], "rocket": []}).items():
        (folder / name).write_bytes(body)
    (folder / "sub" / "readme.jpg").write_text("not an image")

    cli("ingest", str(folder), "--tenant", "t1", "--batch", "b1", env=subprocess_env)
    run = cli("run", "--tenant", "t1", "--batch", "b1", env=subprocess_env)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    for key in ("images", "accepted", "rejected", "groups", "memo_hits", "memo_misses",
                "hit_rate", "seconds"):  # fmt: skip
        assert key in summary, key
    assert (summary["images"], summary["accepted"], summary["rejected"]) == (5, 4, 1)
    assert 0 <= summary["hit_rate"] <= 1 and summary["seconds"] > 0

    out = json.loads(cli("groups", "--tenant", "t1", "--batch", "b1", "--json",
                         env=subprocess_env).stdout)  # fmt: skip
    members = [m for g in out["groups"] for m in g["members"]]
    assert sorted(members) == ["chelsea-flipped.jpg", "chelsea-resized.jpg", "chelsea.jpg",
                               "rocket.jpg"]  # fmt: skip
    by_member = {m: g for g in out["groups"] for m in g["members"]}
    assert by_member["chelsea-flipped.jpg"] is by_member["chelsea.jpg"]
    assert by_member["rocket.jpg"]["group_id"] != by_member["chelsea.jpg"]["group_id"]
    assert all(g["product_id"].startswith("p-") for g in out["groups"])
    # The rejected upload is listed with its reason, in JSON and in the text listing.
    assert [r["file"] for r in out["rejected"]] == ["sub/readme.jpg"]
    assert out["rejected"][0]["reason"].startswith("not_an_image"), out["rejected"]
    text = cli("groups", "--tenant", "t1", "--batch", "b1", env=subprocess_env).stdout
    assert "rejected  sub/readme.jpg: not_an_image" in text, text

    again = json.loads(cli("run", "--tenant", "t1", "--batch", "b1",
                           env=subprocess_env).stdout.strip().splitlines()[-1])  # fmt: skip
    assert again["hit_rate"] == 1.0 and again["groups"] == summary["groups"]


def test_groups_json_says_why_images_were_grouped(tmp_path, subprocess_env):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, body in photo_batch({"coffee": ["cropped", "resized"], "rocket": []}).items():
        (folder / name).write_bytes(body)
    batch = ["--tenant", "t2", "--batch", "b1"]
    cli("ingest", str(folder), *batch, env=subprocess_env)
    cli("run", *batch, env=subprocess_env)

    out = json.loads(cli("groups", *batch, "--json", env=subprocess_env).stdout)
    by_member = {m: g for g in out["groups"] for m in g["members"]}
    coffee = by_member["coffee.jpg"]
    assert set(coffee["members"]) == {"coffee.jpg", "coffee-cropped.jpg", "coffee-resized.jpg"}
    photo = [e for e in coffee["evidence"] if e["rule"] == "same_photo"]
    assert photo, coffee["evidence"]
    for link in photo:
        assert {link["a"], link["b"]} <= set(coffee["members"]) and link["a"] != link["b"]
        assert link["method"] in ("keypoints", "hash")
        assert link["overlap"] >= 0.5 and link["agreement"] >= 0.75 and link["blocks"] >= 6
        assert isinstance(link["inliers"], int) and isinstance(link["hash_distance"], int)
    # the three images are held together: at least two links, touching all three files
    assert len({f for e in coffee["evidence"] for f in (e["a"], e["b"])}) == 3
    assert by_member["rocket.jpg"]["evidence"] == []

    products = {p["product_id"]: p for p in out["products"]}
    assert set(products) == {g["product_id"] for g in out["groups"]}
    for product in products.values():
        assert product["groups"] and {"evidence", "closest_other"} <= set(product)
    text = cli("groups", *batch, env=subprocess_env).stdout
    assert "why: " in text and "same photo" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--tenant", "t1", "--batch", "nothing-here"], "no uploads under"),
        (["run", "--tenant", "../etc", "--batch", "b"], "invalid tenant"),
        (["groups", "--tenant", "t1", "--batch", "never-run", "--json"], "no groups for"),
        (["ingest", "/definitely/not/here", "--tenant", "t", "--batch", "b"], "not a directory"),
    ],
)
def test_bad_arguments_give_a_clear_error_and_non_zero_exit(args, message, subprocess_env):
    proc = cli(*args, env=subprocess_env, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_command_exits_non_zero(subprocess_env):
    assert cli("frobnicate", env=subprocess_env, check=False).returncode != 0


def test_embedded_s3_lifecycle_and_credentials(tmp_path, subprocess_env):
    env = {k: v for k, v in subprocess_env.items() if k != "S3_ENDPOINT_URL"}
    env["LOCAL_S3_DIR"] = str(tmp_path / "s3")
    env["LOCAL_S3_PORT"] = str(_free_port())  # not 8333: other tests may start one at once
    assert cli("s3", "status", env=env, check=False).returncode == 3
    try:
        first = cli("s3", "start", env=env).stdout
        again = cli("s3", "start", env=env).stdout
        assert first == again  # reused, not a second server
        status = cli("s3", "status", env=env)
        assert "running at http://127.0.0.1:" in status.stdout
        endpoint = status.stdout.split()[2].rstrip(",")
        wrong = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="nobody",
                             aws_secret_access_key="wrong", region_name="us-east-1")  # fmt: skip
        with pytest.raises(botocore.exceptions.ClientError):
            wrong.list_buckets()
        identities = json.loads((tmp_path / "s3" / "identities.json").read_text())
        cred = identities["identities"][0]["credentials"][0]
        right = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=cred["accessKey"],
            aws_secret_access_key=cred["secretKey"],
            region_name="us-east-1",
        )
        buckets = {b["Name"] for b in right.list_buckets()["Buckets"]}
        assert {env["UPLOADS_BUCKET"], env["PIPELINE_BUCKET"]} <= buckets
    finally:
        stop = cli("s3", "stop", env=env)
    assert "stopped" in stop.stdout
    assert cli("s3", "status", env=env, check=False).returncode == 3
