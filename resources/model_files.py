"""Model files named by a local path or an ``s3://bucket/key`` URI, made local for loading.

An S3 object is cached as ``<cache_dir>/<sha256 of bucket/key/ETag><suffix of key>``: one
HEAD per resolve tells whether the cached copy is current, so an unchanged object is never
fetched twice and a replaced one (new ETag) is fetched again. The GET is pinned to that
ETag (``IfMatch``), so bytes written between the HEAD and the GET are never cached under
the old name. Downloads land in a temporary file in ``cache_dir`` and are renamed into
place, so a concurrent reader, or a crash midway, never sees a partial model.

Entries for superseded ETags are left behind; clear ``cache_dir`` to reclaim the space.
"""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import botocore.exceptions

_CHUNK = 1 << 20
_ETAG_ATTEMPTS = 3  # the object may be replaced between our HEAD and GET


def resolve_model_file(uri: str, s3_client: Any, cache_dir: Path) -> Path:
    """A local path for ``uri``: the path itself, or the cached copy of the S3 object.

    Raises FileNotFoundError for a missing file, key or bucket, PermissionError when S3
    refuses access, and ValueError for a malformed URI.
    """
    if not uri or not uri.strip():
        raise ValueError("model file URI is empty")
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        return _resolve_s3(bucket, key, s3_client, Path(cache_dir))
    if "://" in uri:
        raise ValueError(f"unsupported model URI {uri!r}: use a local path or s3://bucket/key")
    path = Path(uri).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path.resolve()}")
    if not path.is_file():
        raise FileNotFoundError(f"model path is not a file: {path.resolve()}")
    return path


def parse_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key or key.endswith("/"):
        raise ValueError(f"invalid S3 model URI {uri!r}: expected s3://bucket/key/of/model.onnx")
    return bucket, key


def cache_name(bucket: str, key: str, etag: str) -> str:
    """File name of one version of an object in the cache."""
    digest = hashlib.sha256(f"{bucket}/{key}/{etag}".encode()).hexdigest()
    # The key's extension only helps a person browsing the cache.
    suffix = PurePosixPath(key).suffix
    return digest + (suffix if suffix.isascii() and len(suffix) <= 16 else "")


def _resolve_s3(bucket: str, key: str, client: Any, cache_dir: Path) -> Path:
    uri = f"s3://{bucket}/{key}"
    for _ in range(_ETAG_ATTEMPTS):
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise _client_error(exc, client, bucket, key) from exc
        etag = head["ETag"].strip('"')
        target = cache_dir / cache_name(bucket, key, etag)
        if target.is_file() and target.stat().st_size == head["ContentLength"]:
            return target
        cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            _download(client, bucket, key, head["ETag"], head["ContentLength"], target)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412"):
                continue  # replaced since the HEAD: look again
            raise _client_error(exc, client, bucket, key) from exc
        return target
    raise RuntimeError(f"{uri} kept changing while it was downloaded; try again")


def _download(client: Any, bucket: str, key: str, etag: str, size: int, target: Path) -> None:
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            body = client.get_object(Bucket=bucket, Key=key, IfMatch=etag)["Body"]
            with body:
                shutil.copyfileobj(body, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        got = temp.stat().st_size
        if got != size:
            raise OSError(f"s3://{bucket}/{key}: downloaded {got} bytes, expected {size}")
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _client_error(
    exc: botocore.exceptions.ClientError, client: Any, bucket: str, key: str
) -> Exception:
    """A specific error for a failed request on ``s3://bucket/key``."""
    uri = f"s3://{bucket}/{key}"
    code = _code(exc)
    if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
        # A HEAD has no body, so S3 answers a bare 404 for a missing key and bucket alike.
        if code == "NoSuchBucket" or (code != "NoSuchKey" and not _bucket_exists(client, bucket)):
            return FileNotFoundError(f"model bucket does not exist (NoSuchBucket): {uri}")
        return FileNotFoundError(f"model object not found (NoSuchKey): {uri}")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if status == 403 or code in ("403", "AccessDenied", "Forbidden"):
        return PermissionError(
            f"access denied (403) to {uri}: the credentials need s3:GetObject on it (without "
            f"s3:ListBucket on the bucket, S3 also answers 403 for a missing key) [{code}]"
        )
    message = exc.response.get("Error", {}).get("Message", "")
    return RuntimeError(f"cannot fetch model {uri}: {code} {message}".rstrip())


def _bucket_exists(client: Any, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        return _code(exc) not in ("404", "NoSuchBucket", "NotFound")
    return True
