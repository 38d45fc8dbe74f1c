"""The review app over HTTP (a real server, real S3): sign-in, tenancy, bad requests and
CSRF refused with a clear 4xx and nothing written, stale edits refused."""

from __future__ import annotations

import http.cookiejar
import io
import re
import urllib.error
import urllib.parse
import urllib.request

import boto3
import pytest
from PIL import Image

from photogroup.samples import load_photo
from tests.helpers import photo_batch
from tests.review_stack import (
    BATCH,
    OTHER_BATCH,
    OTHER_TENANT,
    PHONE_PHOTO,
    PHOTOS,
    TENANT,
    ReviewStack,
)

pytestmark = pytest.mark.integration


class Client:
    """A browser-like session: cookies kept, redirects followed, errors returned."""

    def __init__(self, stack: ReviewStack) -> None:
        self.base = stack.url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def request(self, path: str, data: dict | None = None, headers: dict | None = None):
        body = urllib.parse.urlencode(data, doseq=True).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def sign_in(self, token: str) -> Client:
        status, _, body = self.request("/login", {"token": token, "who": "tester", "next": "/"})
        assert status == 200, body
        return self

    def csrf_and_version(self, path: str) -> tuple[str, str]:
        _, _, body = self.request(path)
        text = body.decode()
        csrf = re.search(r'name="csrf" value="([^"]+)"', text).group(1)
        version = re.search(r'name="version" value="([^"]+)"', text).group(1)
        return csrf, version


def edit_log(stack: ReviewStack) -> bytes:
    client = boto3.client(
        "s3", endpoint_url=stack.env["S3_ENDPOINT_URL"],
        aws_access_key_id=stack.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
    )  # fmt: skip
    try:
        key = f"edits/{TENANT}/{BATCH}.jsonl"
        return client.get_object(Bucket=stack.env["PIPELINE_BUCKET"], Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return b""


def test_pages_need_a_signed_in_session(review_stack):
    anonymous = Client(review_stack)
    assert anonymous.request("/")[0] == 401
    assert anonymous.request(review_stack.batch_path + "/thumb/coffee.jpg")[0] == 401
    status, _, body = anonymous.request("/", headers={"Accept": "text/html"})
    assert status == 200 and b"Access token" in body  # redirected to the sign-in form
    status, _, body = anonymous.request("/login", {"token": "wrong-token-wrong-token"})
    assert status == 401 and b"unknown token" in body


def test_a_tenant_never_reads_another_tenants_pages_or_images(review_stack):
    own = Client(review_stack).sign_in(review_stack.token)
    other = Client(review_stack).sign_in(review_stack.other_token)
    path = review_stack.batch_path
    # Each sees its own batch list only.
    _, _, listing = own.request("/")
    assert f"/t/{TENANT}/b/{BATCH}".encode() in listing and OTHER_TENANT.encode() not in listing
    _, _, listing = other.request("/")
    assert f"/t/{OTHER_TENANT}/b/{OTHER_BATCH}".encode() in listing
    assert TENANT.encode() + b"/b/" not in listing
    # The owner reads its page, thumbnail and original; the other tenant gets 403 for each.
    status, headers, thumb = own.request(path + "/thumb/coffee.jpg")
    assert status == 200 and headers["Content-Type"] == "image/webp" and thumb[:4] == b"RIFF"
    status, headers, original = own.request(path + "/original/coffee.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert original == photo_batch(PHOTOS)["coffee.jpg"]  # the upload itself
    # A browser cannot show a HEIC: its original opens as its largest JPEG rendition,
    # upright (chelsea is smaller than any rendition size, so at its own size).
    status, headers, shown = own.request(path + f"/original/{PHONE_PHOTO}")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(shown)).size == load_photo("chelsea").size
    for url in (f"/t/{TENANT}", path, path + "/thumb/coffee.jpg", path + "/original/coffee.jpg",
                path + "/runs/0000"):  # fmt: skip
        status, _, body = other.request(url)
        assert status == 403 and b"may not read tenant" in body, url
        bearer = {"Authorization": f"Bearer {review_stack.other_token}"}
        assert other.request(url, headers=bearer)[0] == 403
    assert Client(review_stack).request(path, headers={
        "Authorization": f"Bearer {review_stack.token}"})[0] == 200  # fmt: skip


def test_bad_requests_get_a_clear_4xx_and_write_nothing(review_stack):
    own = Client(review_stack).sign_in(review_stack.token)
    path = review_stack.batch_path
    csrf, version = own.csrf_and_version(path)
    before = edit_log(review_stack)
    good = {"csrf": csrf, "version": version}
    cases = [
        (f"/t/{TENANT}/b/nosuchbatch", None, 404, "no batch"),
        (f"/t/{TENANT}/b/..bad", None, 404, "invalid batch"),
        (path + "/thumb/nope.jpg", None, 404, "no thumb of 'nope.jpg'"),
        (path + "/edit", {**good, "rename": "g-nosuchgroup", "name-g-nosuchgroup": "x"}, 400,
         "unknown group"),
        (path + "/edit", {**good, "move_to": "g-x", "files": ["nope.jpg"]}, 400,
         "no accepted image named"),
        (path + "/edit", {**good, "move_to": "g-x"}, 400, "select exactly one photo"),
        (path + "/edit", {**good, "op": "merge", "groups": ["g-x"]}, 400, "at least two"),
        (path + "/edit", {**good, "op": "explode"}, 400, "unknown action"),
        (path + "/edit", {"version": version, "op": "undo"}, 403, "form token"),
        (path + "/edit", {**good, "csrf": "forged", "op": "undo"}, 403, "form token"),
        (f"/t/{TENANT}/b/nosuchbatch/edit", {**good, "op": "undo"}, 404, "no batch"),
        (f"/t/{TENANT}/b/nosuchbatch/accept", good, 404, "no batch"),
    ]  # fmt: skip
    for url, data, status, message in cases:
        got, _, body = own.request(url, data)
        assert (got, message in body.decode()) == (status, True), (url, data, body[:300])
    # A form posted from another site is refused whatever it carries.
    got, _, body = own.request(path + "/edit", {**good, "op": "undo"},
                               headers={"Origin": "https://evil.example"})  # fmt: skip
    assert got == 403 and b"cross-site" in body
    assert edit_log(review_stack) == before


def test_an_edit_made_on_an_old_version_is_refused_and_shows_the_current_groups(review_stack):
    own = Client(review_stack).sign_in(review_stack.token)
    path = review_stack.batch_path
    csrf, version = own.csrf_and_version(path)
    before = edit_log(review_stack)
    status, _, body = own.request(path + "/edit", {"csrf": csrf, "version": "0" * 24,
                                                   "op": "undo"})  # fmt: skip
    assert status == 409 and b"someone else changed the groups" in body
    assert f'name="version" value="{version}"'.encode() in body  # the current state, to redo
    assert edit_log(review_stack) == before
