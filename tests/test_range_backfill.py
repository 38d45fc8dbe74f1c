"""Single-run backfills over several upload batches on a real local S3: the IO manager's
dict store/load, and product_groups + catalog re-materialised for three batches in one run
(after a grouping edit), planned by Dagster's own backfill-policy planner."""

import dagster as dg
import pandas as pd
import pytest

# The function the asset backfill daemon calls to turn requested partitions into runs; no
# public API exposes it, and running the daemon in-process needs a code server.
from dagster._core.definitions.automation_tick_evaluation_context import (
    build_run_requests_with_backfill_policies,
)
from dagster._core.definitions.events import AssetKeyPartitionKey

from assets import ALL_ASSETS
from orchestration.cli import main
from orchestration.definitions import defs
from orchestration.environment import tables_from_env
from orchestration.partitions import upload_batch_partitions
from resources.parquet_io_manager import MissingPartitionError, range_data_version
from tests.helpers import materialise, photo_batch, read_table, upload

pytestmark = pytest.mark.integration

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
TABLE = dg.AssetKey("some_table")


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"key": [f"k{i}" for i in range(n)], "value": list(range(n))})


def range_contexts(instance: dg.DagsterInstance, start: str, end: str):
    key_range = dg.PartitionKeyRange(start, end)
    common = {"asset_key": TABLE, "asset_partitions_def": upload_batch_partitions}
    out = dg.build_output_context(**common, asset_partition_key_range=key_range, instance=instance)
    into = dg.build_input_context(**common, asset_partition_key_range=key_range, instance=instance)
    return out, into


def test_io_manager_stores_and_loads_a_partition_range(s3_env, s3_client):
    keys = ["t1/a", "t1/b", "t2/c"]
    tables = {key: frame(n) for key, n in zip(keys, (1, 2, 3), strict=True)}
    manager = tables_from_env()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(upload_batch_partitions.name, [*keys, "t3/never"])
        out, into = range_contexts(instance, "t1/a", "t2/c")
        manager.handle_output(out, tables)
        meta = {k: v.value for k, v in out.get_logged_metadata().items()}
        assert meta["run_partitions"] == 3 and meta["run_parquet_bytes"] > 0
        # One object per partition, the same layout single-partition runs write.
        for key, table in tables.items():
            pd.testing.assert_frame_equal(
                read_table(s3_client, manager.bucket, TABLE.path[0], key), table
            )
        loaded = manager.load_input(into)
        assert list(loaded) == keys
        for key, table in tables.items():
            pd.testing.assert_frame_equal(loaded[key], table)

        # A range of one partition (a single-run backfill of one batch has no run partition
        # key) is a plain DataFrame in the partition's own object, not __unpartitioned__.
        one_out, one_in = range_contexts(instance, "t1/b", "t1/b")
        manager.handle_output(one_out, frame(5))
        pd.testing.assert_frame_equal(manager.load_input(one_in), frame(5))
        assert len(read_table(s3_client, manager.bucket, TABLE.path[0], "t1/b")) == 5

        # Loading a range with a partition never written names it.
        _, gap = range_contexts(instance, "t2/c", "t3/never")
        with pytest.raises(MissingPartitionError, match=r"1 of 2 partitions: 't3/never'"):
            manager.load_input(gap)
        # A DataFrame, or a dict missing a partition, for a range is refused before writing.
        with pytest.raises(TypeError, match="covers 3 partitions"):
            manager.handle_output(range_contexts(instance, "t1/a", "t2/c")[0], frame(1))
        partial = {k: tables[k] for k in keys[:2]}
        with pytest.raises(ValueError, match="missing 't2/c'"):
            manager.handle_output(range_contexts(instance, "t1/a", "t2/c")[0], partial)


PHOTOS = {"coffee": ["resized"], "chelsea": []}
BATCHES = ["shop/r1", "shop/r2", "shop/r3"]
EDITED = "shop/r2"
RANGE_ASSETS = ("product_groups", "catalog")


def test_one_run_rematerialises_groups_and_catalog_for_every_batch(s3_env, s3_client, capsys):
    pipeline = s3_env["PIPELINE_BUCKET"]
    for key in BATCHES:
        tenant, batch = key.split("/")
        upload(s3_client, s3_env["UPLOADS_BUCKET"], tenant, batch, photo_batch(PHOTOS))
    with dg.instance_for_test() as instance:
        for key in BATCHES:
            assert materialise(instance, key, assets=RANGE_ASSETS).success
        before = {
            (asset, key): read_table(s3_client, pipeline, asset, key)
            for asset in RANGE_ASSETS
            for key in BATCHES
        }
        groups = before["product_groups", EDITED]
        (coffee,) = groups.group_id[[("coffee.jpg" in m) for m in groups.members]]
        tenant, batch = EDITED.split("/")
        edit = ["groups", "edit", "--tenant", tenant, "--batch", batch, "--who", "ana",
                "--why", "test", "rename", "--group", coffee, "--name", "Espresso cup"]  # fmt: skip
        assert main(edit) == 0, capsys.readouterr().err
        # Proof of rewriting: the range run must write every table again.
        for asset in RANGE_ASSETS:
            for key in BATCHES:
                s3_client.delete_object(Bucket=pipeline, Key=f"tables/{asset}/{key}.parquet")

        # What an asset backfill of these assets over the three batches launches.
        with dg.partition_loading_context(dynamic_partitions_store=instance):
            requests = build_run_requests_with_backfill_policies(
                [AssetKeyPartitionKey(dg.AssetKey(a), k) for a in RANGE_ASSETS for k in BATCHES],
                defs.resolve_asset_graph(),
                instance,
            )
        (request,) = requests
        assert request.partition_key is None
        assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (BATCHES[0], BATCHES[-1])
        runs_before = {r.run_id for r in instance.get_runs()}
        result = dg.materialize(
            ALL_ASSETS,
            selection=request.asset_selection,
            tags=request.tags,
            instance=instance,
            resources=defs.resources,
        )
        assert result.success
        assert {r.run_id for r in instance.get_runs()} - runs_before == {result.run_id}

        # One materialisation per batch and asset, all from that run, each with its own figures.
        for asset in RANGE_ASSETS:
            events = result.asset_materializations_for_node(asset)
            assert sorted(e.partition for e in events) == BATCHES
            for event in events:
                meta = {k: v.value for k, v in event.metadata.items()}
                table = read_table(s3_client, pipeline, asset, event.partition)
                assert meta["dagster/row_count"] == len(table)
                assert meta["run_partitions"] == len(BATCHES)
                if asset == "product_groups":
                    assert meta["groups"] == len(table)
                    assert meta["edits"] == (1 if event.partition == EDITED else 0)
                    assert meta["edit_log"].endswith(f"edits/{event.partition}.jsonl")
                    assert "covers" not in meta and meta["covers_sheet"].startswith("s3://")
                else:
                    assert meta["product_groups"] == len(table)
            # Dagster records one data version for a range: every batch gets the range's.
            own = {e.partition: dg.DataVersion(e.metadata["content_version"].value) for e in events}
            assert {e.tags["dagster/data_version"] for e in events} == {
                range_data_version(own).value
            }
            for key in BATCHES:  # the instance's latest materialisation is the range run's
                (record,) = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]),
                    limit=1,
                ).records
                assert record.run_id == result.run_id

        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert checks["every_edit_applies"].passed
        assert checks["every_edit_applies"].metadata["batches_checked"].value == 3
        assert checks["every_group_has_a_cover_rendition"].passed

        after = {
            (asset, key): read_table(s3_client, pipeline, asset, key)
            for asset in RANGE_ASSETS
            for key in BATCHES
        }
    for (asset, key), table in after.items():
        if key != EDITED:
            pd.testing.assert_frame_equal(table, before[asset, key])
    for asset in RANGE_ASSETS:  # the edited batch: the rename, and nothing else changed
        names = after[asset, EDITED].set_index("group_id").name
        assert names[coffee] == "Espresso cup"
        unchanged = before[asset, EDITED].set_index("group_id").name.drop(coffee)
        pd.testing.assert_series_equal(names.drop(coffee), unchanged)
    renamed = after["product_groups", EDITED].set_index("group_id").loc[coffee]
    assert bool(renamed.named) and not bool(renamed.edited)  # named, same members
