"""``python -m orchestration``: the command-line contract of ../shared/README.md."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestration.errors import UserError
from orchestration.partitions import BatchKey

CliError = UserError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _batch(args) -> BatchKey:
    try:
        return BatchKey(args.tenant, args.batch)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def cmd_s3(args) -> int:
    from orchestration import local_s3

    server = local_s3.configured()
    if args.action == "start":
        from orchestration.environment import ensure_environment

        os.environ.pop("S3_ENDPOINT_URL", None)  # `s3 start` always means the embedded one
        ensure_environment()
        print(f"local S3 running at {server.status().endpoint_url} (data: {server.dir})")
    elif args.action == "stop":
        print("local S3 stopped" if server.stop() else "local S3 was not running")
    else:
        state = server.status()
        print(f"running at {state.endpoint_url}, pid {state.pid}" if state else "not running")
        return 0 if state else 3
    return 0


def cmd_ingest(args) -> int:
    from tqdm import tqdm

    from orchestration.environment import ensure_environment, uploads_from_env
    from resources.uploads import SEAL_MARKER

    batch = _batch(args)
    folder = Path(args.dir)
    if not folder.is_dir():
        raise CliError(f"{folder} is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SEAL_MARKER)
    if not files:
        raise CliError(f"{folder} holds no files")
    ensure_environment()
    uploads = uploads_from_env()
    client, prefix = uploads.s3.get_client(), uploads.batch_prefix(batch.tenant, batch.batch)

    def put(path: Path) -> str:
        name = path.relative_to(folder).as_posix()
        client.put_object(Bucket=uploads.bucket, Key=prefix + name, Body=path.read_bytes())
        return name

    with ThreadPoolExecutor(max_workers=8) as pool:
        names = list(tqdm(pool.map(put, files), total=len(files), desc="upload", unit="file"))
    seal = {"files": names, "bytes": sum(p.stat().st_size for p in files)}
    client.put_object(Bucket=uploads.bucket, Key=prefix + SEAL_MARKER, Body=json.dumps(seal))
    print(f"uploaded {len(names)} files to s3://{uploads.bucket}/{prefix} and sealed the batch")
    return 0


def cmd_run(args) -> int:
    import dagster as dg

    from orchestration.environment import ensure_environment, uploads_from_env
    from orchestration.instance import ensure_dagster_home
    from orchestration.runner import run_batch

    batch = _batch(args)
    ensure_dagster_home()
    ensure_environment()
    uploads = uploads_from_env()
    if not uploads.list_batch(batch.tenant, batch.batch):
        where = f"s3://{uploads.bucket}/{uploads.batch_prefix(batch.tenant, batch.batch)}"
        raise CliError(f"no uploads under {where}; run `ingest` first")
    with dg.DagsterInstance.get() as instance:
        ok, summary = run_batch(batch, instance)
    print(json.dumps(summary))
    return 0 if ok else 1


def cmd_groups(args) -> int:
    from photogroup.evidence import batch_listing, evidence_line

    if not (args.tenant and args.batch):
        raise CliError("groups needs --tenant and --batch")
    from orchestration.editing import load_groups, read_rejections
    from orchestration.environment import ensure_environment

    batch = _batch(args)
    ensure_environment()
    loaded = load_groups(batch)
    listing = batch_listing(loaded.clusters, loaded.groups)
    stale = [o.__dict__ for o in loaded.outcomes if o.status == "not_applicable"]
    # Uploads in no group, and why: nothing a shop sent disappears from the listing.
    rejected = read_rejections(batch)
    if args.json:
        print(json.dumps({**listing, "rejected": rejected, "edits_not_applicable": stale}))
    else:
        for g in listing["groups"]:
            name = f"  {g['name']!r}" if g["name"] else ""
            print(f"{g['group_id']}  {g['product_id']}{name}  {', '.join(g['members'])}")
            print(f"    why: {evidence_line(g)}")
        for r in rejected:
            print(f"rejected  {r['file']}: {r['reason']}")
        for o in stale:
            print(f"edit {o['index']} ({o['op']}) no longer applies: {o['reason']}",
                  file=sys.stderr)  # fmt: skip
    return 0


def cmd_groups_edit(args) -> int:
    """Validate one edit against the current groups and append it to the batch's log."""
    import getpass

    from orchestration.editing import EditRequest, record_edit
    from orchestration.environment import edit_log_from_env, ensure_environment

    batch = _batch(args)
    ensure_environment()
    request = EditRequest(
        op=args.op,
        who=args.who or os.environ.get("USER") or getpass.getuser(),
        why=args.why or "",
        group=getattr(args, "group", None),
        name=getattr(args, "name", None),
        files=tuple(getattr(args, "files", None) or ()),
        groups=tuple(getattr(args, "groups", None) or ()),
        file=getattr(args, "file", None),
        to=getattr(args, "to", None),
    )
    recorded = record_edit(batch, request)
    if args.json:
        print(json.dumps(recorded, sort_keys=True))
    else:
        log = edit_log_from_env()
        where = f"s3://{log.bucket}/{log.key(batch.partition_key)}"
        print(
            f"recorded {args.op} in {where}; `publish --tenant ... --batch ...` (or the "
            "review page's Accept) re-materialises product_groups, catalog and cutouts"
        )
    return 0


def cmd_publish(args) -> int:
    """Materialise product_groups, catalog and product_cutouts of one batch after edits."""
    import dagster as dg

    from orchestration.environment import ensure_environment
    from orchestration.instance import ensure_dagster_home
    from orchestration.publish import publish

    batch = _batch(args)
    ensure_dagster_home()
    ensure_environment()
    with dg.DagsterInstance.get() as instance:
        try:
            result = publish(batch, instance, run_id=args.run_id, who=args.who or "")
        except ValueError as exc:
            raise CliError(str(exc)) from exc
    print(json.dumps({"run_id": result.run_id, "success": result.success}))
    return 0 if result.success else 1


def cmd_search(args) -> int:
    """The tenant's catalogue images nearest to one image file."""
    import numpy as np

    from orchestration.environment import catalog_from_env, embedder_from_env, ensure_environment
    from photogroup import Rejection, compute_features, decode_image
    from photogroup.catalog import find_matches
    from photogroup.cluster import parse_hashes

    try:
        BatchKey(args.tenant, "x")
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    path = Path(args.image)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        work = decode_image(data).image
    except Rejection as exc:
        raise CliError(f"{path}: {exc}") from exc
    ensure_environment()
    catalog = catalog_from_env().load(args.tenant)
    if catalog.vectors is None:
        raise CliError(f"tenant {args.tenant!r} has no catalogue yet: run a batch first")
    embedder = embedder_from_env()
    if embedder.model_id != catalog.model_id:
        raise CliError(
            f"the catalogue of {args.tenant!r} holds {catalog.model_id} embeddings but "
            f"EMBEDDER_PROVIDER gives {embedder.model_id}: set it to the pipeline's provider"
        )
    vector = embedder.embed([work])
    d4 = parse_hashes([compute_features(work, keypoints=False).phash_d4])
    rows = catalog.rows.set_index("id")
    sha = hashlib.sha256(data).hexdigest()  # the same bytes in the catalogue: exact_bytes
    found = find_matches(vector, d4, [sha], catalog.vectors, catalog.hashes,
                         rows.sha256.to_dict(), k=args.k)  # fmt: skip
    matches = [
        {
            "file": rows.file[m.entry],
            "batch": rows.batch[m.entry],
            "group_id": rows.group_id[m.entry],
            "product_id": rows.product_id[m.entry],
            "kind": m.kind,
            "distance": None if np.isnan(m.cosine) else round(max(0.0, 1.0 - m.cosine), 4),
            "hash_distance": m.hash_distance,
        }
        for m in found
    ]
    if args.json:
        print(json.dumps({"matches": matches}))
    else:
        for m in matches:
            print(f"{m['batch']}/{m['file']}  {m['group_id']}  {m['kind']}  {m['distance']}")
    return 0


def cmd_forget(args) -> int:
    """Delete a batch's partition and remove its rows from the tenant's catalogue."""
    import dagster as dg

    from orchestration.environment import catalog_from_env, ensure_environment
    from orchestration.instance import ensure_dagster_home
    from orchestration.partitions import upload_batch_partitions

    batch = _batch(args)
    ensure_environment()
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        if instance.has_dynamic_partition(upload_batch_partitions.name, batch.partition_key):
            instance.delete_dynamic_partition(upload_batch_partitions.name, batch.partition_key)
    store = catalog_from_env()
    catalog = store.load(batch.tenant)
    removed = catalog.remove_batch(batch.batch)
    store.save(batch.tenant, catalog)
    print(json.dumps({"batch": batch.partition_key, "catalogue_rows_removed": removed}))
    return 0


def cmd_backfill(args) -> int:
    """Register every batch found under uploads/ and launch one asset backfill per tenant."""
    import time
    from datetime import UTC, datetime

    import dagster as dg
    from tqdm import tqdm

    from orchestration import backfill
    from orchestration.environment import ensure_environment, uploads_from_env
    from orchestration.instance import ensure_dagster_home
    from sensors.batch_discovery import list_batches

    ensure_dagster_home()
    ensure_environment()
    uploads = uploads_from_env()
    batches, stray = list_batches(uploads.s3.get_client(), uploads.bucket, uploads.prefix)
    wanted = [b for b, listing in sorted(batches.items()) if listing.files]
    if args.tenant:
        wanted = [b for b in wanted if b.tenant in set(args.tenant)]
    if args.sealed_only:
        now = datetime.now(UTC)
        wanted = [b for b in wanted if batches[b].seal_token(now, 0) is not None]
    if not wanted:
        raise CliError(f"no batches with files under s3://{uploads.bucket}/{uploads.prefix}/")
    if stray:
        print(f"ignored {len(stray)} keys outside <tenant>/<batch>/<file>", file=sys.stderr)
    with dg.DagsterInstance.get() as instance:
        added = backfill.register(instance, wanted)
        by_tenant: dict[str, list[str]] = {}
        for b in wanted:
            by_tenant.setdefault(b.tenant, []).append(b.partition_key)
        ids = {t: backfill.launch(instance, t, keys) for t, keys in by_tenant.items()}
        for tenant, backfill_id in ids.items():
            print(f"backfill {backfill_id}: {len(by_tenant[tenant])} batches of {tenant}",
                  file=sys.stderr)  # fmt: skip
        print(f"registered {len(added)} new partitions; see the UI's Overview > Backfills",
              file=sys.stderr)  # fmt: skip
        if not backfill.daemon_is_running(instance):
            print("note: no Dagster daemon is running for this instance; the backfills start "
                  "when one does (`./dev up`, `dagster dev` or `dagster-daemon run`)",
                  file=sys.stderr)  # fmt: skip
        statuses = {i: backfill.status(instance, i) for i in ids.values()}
        if args.wait:
            deadline = time.monotonic() + args.timeout
            with tqdm(total=len(ids), desc="backfills", unit="backfill") as bar:
                while not all(backfill.is_terminal(s) for s in statuses.values()):
                    if time.monotonic() > deadline:
                        raise CliError(f"backfills not finished after {args.timeout} s")
                    time.sleep(2)
                    statuses = {i: backfill.status(instance, i) for i in ids.values()}
                    bar.n = sum(backfill.is_terminal(s) for s in statuses.values())
                    bar.refresh()
    print(json.dumps({
        "partitions": [b.partition_key for b in wanted],
        "registered": added,
        "backfills": {i: s.value for i, s in statuses.items()},
    }))  # fmt: skip
    return 0 if not args.wait or all(backfill.succeeded(s) for s in statuses.values()) else 1


def cmd_seed(args) -> int:
    from orchestration.environment import ensure_environment, uploads_from_env
    from orchestration.samples import seed

    ensure_environment()
    for tenant, name in seed(uploads_from_env()):
        print(f"sample batch {tenant}/{name} sealed")
    return 0


def cmd_review(args) -> int:
    """The review web app in the foreground (REVIEW_TOKENS: who may see which tenant)."""
    from orchestration.environment import ensure_environment
    from orchestration.instance import ensure_dagster_home
    from review.auth import ConfigError
    from review.server import LOCAL_TOKEN_FILE, port_is_free, serve

    ensure_dagster_home()
    ensure_environment()
    if not port_is_free(args.host, args.port):
        raise CliError(f"port {args.port} on {args.host} is taken: pass --port")
    if not os.environ.get("REVIEW_TOKENS"):
        print(f"REVIEW_TOKENS is unset: sign in with the token in {LOCAL_TOKEN_FILE}",
              file=sys.stderr)  # fmt: skip
    try:
        serve(args.host, args.port)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    return 0


def cmd_up(args) -> int:
    """Embedded S3, sample batches materialised, then `dg dev` and the review app,
    supervised (see orchestration/stack.py): the S3 is restarted at the same endpoint if
    it dies, and a signal stops everything this command started.

    With PIPELINE_PROFILE=distributed, PostgreSQL, Redis and two Celery workers start
    first (orchestration/local_cluster.py) and stop with the rest."""
    import signal

    from orchestration import local_s3
    from orchestration.profiles import current_profile
    from orchestration.stack import Stack, dg_dev_command
    from review.server import LOCAL_TOKEN_FILE, port_is_free

    for name, port in (("--port", args.port), ("--review-port", args.review_port)):
        if not port_is_free("127.0.0.1", port):
            raise CliError(f"port {port} on 127.0.0.1 is taken: pass {name}")

    def leave(signum, _frame):  # during set-up: unwind, so `finally` stops what started
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, leave)
    # A background job of a non-interactive shell (`setsid ./dev up &`) starts with SIGINT
    # ignored, and children inherit an ignored signal: Dagster would then ignore the SIGINT
    # the stack stops it with. A handler here is reset to the default in every child.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    embedded = not os.environ.get("S3_ENDPOINT_URL")
    s3 = local_s3.configured() if embedded else None
    stack = Stack(s3=s3, owns_s3=bool(s3 and s3.status() is None))
    cluster = None
    if current_profile() == "distributed":
        from orchestration.instance import DEFAULT_DISTRIBUTED_HOME
        from orchestration.local_cluster import LocalCluster

        os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DISTRIBUTED_HOME))
        cluster = LocalCluster(local_s3.REPO_ROOT / ".local" / "cluster", workers=args.workers,
                               daemon=False, env=dict(os.environ))  # fmt: skip
    try:
        if cluster is not None:
            cluster.start()
            os.environ.update(cluster.env)
            print(f"PostgreSQL {cluster.postgres.url}, Redis {cluster.redis.url}, "
                  f"{args.workers} Celery workers (logs in {cluster.root})")  # fmt: skip
        _seed_and_materialise(samples=not args.no_samples)
        review_url = _start_review(stack, args.review_port)
        command = dg_dev_command(args.port)
        # dg compares the active virtual environment with the project's: this one.
        env = {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)}
        # SIGINT, as Ctrl-C in a terminal sends it to the whole group: dagster dev's own
        # shutdown path (on SIGTERM its webserver sometimes outlived the 20 s grace).
        dagster = stack.spawn("dg dev", command, stop_signal=signal.SIGINT, env=env,
                              cwd=local_s3.REPO_ROOT)  # fmt: skip
        token = "REVIEW_TOKENS" if os.environ.get("REVIEW_TOKENS") else str(LOCAL_TOKEN_FILE)
        print(
            f"Dagster:    http://127.0.0.1:{args.port} (dg {' '.join(command[1:])})\n"
            f"Review app: {review_url} (sign in with the token in {token}; log in "
            f".local/review.log)\nCtrl-C or SIGTERM stops them"
            f"{' and the local S3' if stack.owns_s3 else ''}",
            flush=True,
        )
        return stack.run(dagster)
    finally:
        stack.stop()
        if cluster is not None:
            cluster.stop()


def _start_review(stack, port: int) -> str:
    """The review app as one of the stack's children; its URL once it answers."""
    import subprocess

    from orchestration.local_s3 import REPO_ROOT
    from review.server import wait_until_up

    (REPO_ROOT / ".local").mkdir(exist_ok=True)
    with open(REPO_ROOT / ".local" / "review.log", "ab") as log:
        child = stack.spawn(
            "review app",
            [sys.executable, "-m", "orchestration", "review", "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, child.process)
    return url


def _seed_and_materialise(samples: bool = True) -> None:
    import dagster as dg

    from orchestration.environment import ensure_environment, uploads_from_env
    from orchestration.instance import ensure_dagster_home
    from orchestration.runner import run_batch
    from orchestration.samples import seed

    ensure_dagster_home()
    ensure_environment()
    if not samples:
        return
    with dg.DagsterInstance.get() as instance:
        for tenant, name in seed(uploads_from_env()):
            batch = BatchKey(tenant, name)
            if instance.has_dynamic_partition("upload_batches", batch.partition_key):
                continue
            _, summary = run_batch(batch, instance)
            print(f"{batch.partition_key}: {json.dumps(summary)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orchestration", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    s3 = sub.add_parser("s3", help="manage the embedded local S3 (SeaweedFS)")
    s3.add_argument("action", choices=["start", "stop", "status"])
    s3.set_defaults(handler=cmd_s3)

    def batch_args(p, required: bool = True):
        p.add_argument("--tenant", required=required, help="shop id, e.g. demo-shop")
        p.add_argument("--batch", required=required, help="upload batch id, e.g. 2026-11-01")

    ingest = sub.add_parser("ingest", help="upload every file of DIR as one batch and seal it")
    ingest.add_argument("dir")
    batch_args(ingest)
    ingest.set_defaults(handler=cmd_ingest)

    run = sub.add_parser("run", help="materialise every asset of one batch, in-process")
    batch_args(run)
    run.set_defaults(handler=cmd_run)

    groups = sub.add_parser(
        "groups", help="print a batch's groups (edits applied); `groups edit` corrects them"
    )
    batch_args(groups, required=False)  # required by cmd_groups: `groups edit` has its own
    groups.add_argument("--json", action="store_true", help="print JSON (the contract)")
    groups.set_defaults(handler=cmd_groups)
    groups_sub = groups.add_subparsers(dest="groups_command")
    edit = groups_sub.add_parser(
        "edit",
        help="append a validated edit to the batch's edit log",
        description="Record a correction of a batch's groups. Edits are kept in "
        "s3://<pipeline-bucket>/edits/<tenant>/<batch>.jsonl and re-applied by image content "
        "whenever clustering re-runs. Group ids are those `groups` prints; files are upload "
        "file names (identical files move together).",
    )
    batch_args(edit)
    edit.add_argument("--who", help="who makes the edit (default: $USER)")
    edit.add_argument("--why", help="why, kept in the log")
    edit.add_argument("--json", action="store_true", help="print the recorded edit as JSON")
    ops = edit.add_subparsers(dest="op", required=True)
    rename = ops.add_parser("rename", help="name a group")
    rename.add_argument("--group", required=True)
    rename.add_argument("--name", required=True)
    split = ops.add_parser("split", help="move FILES out of GROUP into a new group and product")
    split.add_argument("--group", required=True)
    split.add_argument("--files", nargs="+", required=True)
    merge = ops.add_parser("merge", help="merge GROUPS into the first one")
    merge.add_argument("--groups", nargs="+", required=True)
    move = ops.add_parser("move", help="move one image to another group")
    move.add_argument("--file", required=True)
    move.add_argument("--to", required=True, help="target group id")
    ops.add_parser("undo", help="take back the latest edit still in force (kept in the log)")
    edit.set_defaults(handler=cmd_groups_edit)

    publish = sub.add_parser(
        "publish",
        help="materialise product_groups, catalog and product_cutouts of a batch (after edits)",
    )
    batch_args(publish)
    publish.add_argument("--run-id", help="the Dagster run id to use (default: a new one)")
    publish.add_argument("--who", help="who accepted the groups (a run tag)")
    publish.set_defaults(handler=cmd_publish)

    back = sub.add_parser(
        "backfill",
        help="register every batch under uploads/ and launch a Dagster backfill over them",
    )
    back.add_argument("--tenant", action="append", help="only this tenant (repeatable)")
    back.add_argument("--sealed-only", action="store_true", help="skip batches without _SUCCESS")
    back.add_argument("--wait", action="store_true", help="wait until the backfills finish")
    back.add_argument("--timeout", type=float, default=1800, help="seconds to --wait at most")
    back.set_defaults(handler=cmd_backfill)

    search = sub.add_parser("search", help="the tenant's catalogue images nearest to IMAGE")
    search.add_argument("--tenant", required=True, help="shop id: only its images are searched")
    search.add_argument("image", help="an image file")
    search.add_argument("--k", type=int, default=10, help="matches to print at most")
    search.add_argument("--json", action="store_true", help="print JSON (the contract)")
    search.set_defaults(handler=cmd_search)

    forget = sub.add_parser(
        "forget", help="delete a batch's partition and remove it from the tenant's catalogue"
    )
    batch_args(forget)
    forget.set_defaults(handler=cmd_forget)

    seed_cmd = sub.add_parser("seed", help="upload and seal the sample batches")
    seed_cmd.set_defaults(handler=cmd_seed)

    review = sub.add_parser("review", help="the review web app: check and correct groups")
    review.add_argument("--host", default="127.0.0.1", help="address to bind (default local)")
    review.add_argument("--port", type=int, default=3001, help="port (default 3001)")
    review.set_defaults(handler=cmd_review)

    up = sub.add_parser("up", help="local S3, samples, `dg dev`, review app, supervised")
    up.add_argument("--port", type=int, default=3000, help="webserver port")
    up.add_argument("--review-port", type=int, default=3001, help="review app port")
    up.add_argument("--no-samples", action="store_true",
                    help="skip seeding and materialising the sample batches")  # fmt: skip
    up.add_argument("--workers", type=int, default=2,
                    help="Celery workers (PIPELINE_PROFILE=distributed only)")  # fmt: skip
    up.set_defaults(handler=cmd_up)
    return parser
