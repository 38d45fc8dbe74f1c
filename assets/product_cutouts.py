import base64
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import dagster as dg
import pandas as pd
from PIL import Image
from pydantic import Field

from assets.engine import MemoRun
from assets.preset import BATCH
from assets.tables import content_version, preview
from assets.versions import CUTOUTS_VERSION
from orchestration.partitions import BatchKey
from photogroup.chunks import Failed
from photogroup.contact_sheet import tile_sheet
from photogroup.cutout import apply_mask, checkerboard_preview, encode_png, foreground_fraction
from resources.cutouts import CutoutResource
from resources.memo import MemoStore
from resources.s3 import put_objects

COLUMNS = ["key", "file", "sha256", "provider", "model_id", "status", "reason", "seconds",
           "foreground_fraction", "cutout_key", "mask_key"]  # fmt: skip
PREVIEW_COLUMNS = ["file", "status", "foreground_fraction", "seconds", "reason"]
#: Images per call of an in-process provider (u2netp, onnx, local): about a second of
#: model time on two cores, long enough to hide the previous slice's PNG encoding.
LOCAL_SLICE = 16


class CutoutsConfig(dg.Config):
    scope: Literal["all", "covers"] = Field(
        default="all", description="Every accepted image, or each product group's cover only."
    )
    source_size: int = Field(
        default=1024, description="Send the rendition with this long side (or the largest)."
    )
    chunk: int = Field(
        default=256,
        description="Images per provider call: remote providers create a whole chunk's "
        "predictions before polling; bounds the images held in memory.",
    )
    previews: int = Field(default=8, description="Cut-outs shown on a checkerboard.")


@dg.asset(
    **BATCH,
    code_version=CUTOUTS_VERSION,
    check_specs=[dg.AssetCheckSpec("every_image_cut_out", asset="product_cutouts")],
)
def product_cutouts(
    context: dg.AssetExecutionContext,
    config: CutoutsConfig,
    product_images: pd.DataFrame,
    product_groups: pd.DataFrame,
    cutouts: CutoutResource,
    memo: MemoStore,
):
    """A PNG cut-out (alpha = product) and its mask for every accepted image (or every
    group's cover), from the configured provider. Memoised on the image's bytes and the
    provider's model and parameters: an unchanged image is never sent again. Provider
    failures are recorded per image (and retried next run), never failing the batch."""
    tenant = BatchKey.parse(context.partition_key).tenant
    provider = cutouts.get_provider(tenant)
    sources = _sources(product_images, product_groups, config)
    namespace = f"cutouts/{CUTOUTS_VERSION}/{provider.model_id}"
    run = MemoRun(memo, {"product_cutouts": namespace}, sources.index,
                  pack=context.partition_key, log=context.log, label="cut-outs")  # fmt: skip
    missing, started = run.missing("product_cutouts"), time.perf_counter()
    # In-process providers gain nothing from large calls, and small ones let the PNGs of
    # one slice be written during the next; remote ones create a whole chunk, then poll.
    step = LOCAL_SLICE if cutouts.in_process else config.chunk
    for start in range(0, len(missing), config.chunk):
        shas = missing[start : start + config.chunk]
        done = _cut_chunk(shas, sources, provider, namespace, memo, step)
        run.record("product_cutouts", done, lambda sha: f"cut-out of {sources.file[sha]}")
        context.log.info(f"cut-outs: {start + len(shas)}/{len(missing)} sent")
    run.finish()
    seconds, failures = time.perf_counter() - started, run.failures["product_cutouts"]
    name = cutouts.settings().provider
    table = _manifest(sources, run.entries["product_cutouts"], failures, name, provider.model_id)
    meta = _metadata(table, run, name, provider, seconds)
    yield dg.Output(table, data_version=content_version(table, ["key", "cutout_key", "status"]),
                    metadata={**meta, **_preview_image(table, memo, config.previews)})  # fmt: skip
    yield _cut_out_check(sources, failures)


def _cut_out_check(sources: pd.DataFrame, failures: dict[str, str]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name="every_image_cut_out",
        passed=not failures,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "failed": dg.MetadataValue.json({sources.file[s]: r for s, r in failures.items()})
        },
    )


def _metadata(table, run: MemoRun, provider_name: str, provider, seconds: float) -> dict:
    return {
        "images": len(run.keys),
        "cut_out": int((table.status == "ok").sum()),
        "failed": len(run.failures["product_cutouts"]),
        "memo_hits": run.hits["product_cutouts"],
        "memo_misses": run.misses["product_cutouts"],
        "provider": provider_name,
        "model_id": provider.model_id,
        "provider_seconds": round(seconds, 3),
        **_stats(provider.stats()),
        "mean_foreground_fraction": round(float(table.foreground_fraction.mean()), 4)
        if len(table)
        else 0.0,
        "preview": preview(table, PREVIEW_COLUMNS, 15),
    }


def _stats(stats: dict) -> dict:
    """Provider statistics as metadata; limiter and provider counters keep their names."""
    return {k if k.startswith(("limiter", "provider")) else f"provider_{k}": v
            for k, v in stats.items()}  # fmt: skip


def _sources(product_images: pd.DataFrame, groups: pd.DataFrame, config) -> pd.DataFrame:
    """One row per distinct image to cut out, by SHA-256: a file, its key and the JPEG
    rendition to send (oriented, sRGB, at most ``source_size``)."""
    ok = product_images[(product_images.status == "ok") & (product_images.format == "jpeg")]
    if config.scope == "covers":
        ok = ok[ok.sha256.isin(set(groups.cover_sha256))]
    ok = ok.assign(fits=ok["size"] <= config.source_size)
    # The largest rendition that fits, else the smallest there is.
    ok = ok.sort_values(["sha256", "fits", "size"], ascending=[True, False, True])
    best = ok.groupby("sha256").apply(
        lambda g: g[g.fits].iloc[-1] if g.fits.any() else g.iloc[0], include_groups=False
    )
    return best[["key", "file", "rendition_key"]] if len(best) else pd.DataFrame(
        columns=["key", "file", "rendition_key"]
    )  # fmt: skip


def _cut_chunk(shas, sources, provider, namespace, memo, step: int) -> dict[str, dict | Failed]:
    """An entry (the stored cut-out and mask) or Failed (with why) per image of the chunk.
    The provider gets ``step`` images at a time; each slice's PNGs are encoded and stored
    on another thread while the provider works on the next slice."""
    report = memo.fetch([sources.rendition_key[s] for s in shas])
    images, sent = [], []
    done: dict[str, dict | Failed] = {}
    for sha in shas:
        key = sources.rendition_key[sha]
        if key not in report.data:
            done[sha] = Failed(f"rendition unreadable: {report.errors.get(key, 'missing')}")
            continue
        image = Image.open(io.BytesIO(report.data[key]))
        image.load()
        images.append(image.convert("RGB"))
        sent.append(sha)
    prefix = f"cutouts/{namespace.split('/', 1)[1]}"
    with ThreadPoolExecutor(1, thread_name_prefix="cutout-png") as writer:
        stored = []
        for start in range(0, len(images), step):
            part = slice(start, start + step)
            outcomes = provider.cut_out(images[part])
            stored.append(writer.submit(_store, sent[part], images[part], outcomes, prefix, memo))
        for future in stored:
            done.update(future.result())
    return done


def _store(shas, images, outcomes, prefix: str, memo) -> dict[str, dict | Failed]:
    """Encode and PUT the cut-outs and masks of one slice; its entries (or failures)."""
    objects, done = {}, {}
    for sha, image, outcome in zip(shas, images, outcomes, strict=True):
        if outcome.mask is None:
            done[sha] = Failed(outcome.error or "no mask")
            continue
        mask = outcome.mask.convert("L")
        if mask.size != image.size:
            mask = mask.resize(image.size, Image.Resampling.BILINEAR)
        cutout_key = f"{prefix}/{sha[:2]}/{sha}.png"
        mask_key = f"{prefix}/{sha[:2]}/{sha}-mask.png"
        objects[cutout_key] = encode_png(apply_mask(image, mask, clear=True))
        objects[mask_key] = encode_png(mask)
        done[sha] = {"cutout_key": cutout_key, "mask_key": mask_key,
                     "foreground_fraction": round(foreground_fraction(mask), 4),
                     "seconds": round(float(outcome.seconds), 3)}  # fmt: skip
    if objects:
        put_objects(memo.s3.get_client(), memo.bucket, objects, "image/png")
    return done


def _manifest(sources, entries, failures, provider_name, model_id) -> pd.DataFrame:
    rows = []
    for sha, row in sources.iterrows():
        base = {"key": row.key, "file": row.file, "sha256": sha, "provider": provider_name,
                "model_id": model_id}  # fmt: skip
        if sha in entries:
            rows.append({**base, "status": "ok", "reason": "", **entries[sha]})
        else:
            rows.append({**base, "status": "failed", "reason": failures.get(sha, "not sent")})
    return pd.DataFrame(rows, columns=COLUMNS)


def _preview_image(table: pd.DataFrame, memo: MemoStore, count: int) -> dict:
    """A few stored cut-outs on a checkerboard, so transparency shows in the UI."""
    shown = table[table.status == "ok"].head(count)
    if shown.empty:
        return {}
    report = memo.fetch(list(shown.cutout_key))
    rows = [row for row in shown.itertuples() if row.cutout_key in report.data]

    def tile(row) -> tuple[str, Image.Image]:
        cutout = Image.open(io.BytesIO(report.data[row.cutout_key]))
        return row.file, checkerboard_preview(cutout, 96)

    # Decoding 1024 px cut-outs is most of it; Pillow does it with the GIL released.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        tiles = list(pool.map(tile, rows))
    buffer = io.BytesIO()
    tile_sheet(tiles).save(buffer, format="JPEG", quality=80)
    data = base64.b64encode(buffer.getvalue()).decode()
    return {"cutouts_preview": dg.MetadataValue.md(f"![cut-outs](data:image/jpeg;base64,{data})")}
