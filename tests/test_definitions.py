"""Wiring: the code location loads and its names (part of the contract) stay pinned."""

import dagster as dg

from orchestration.definitions import defs
from orchestration.partitions import BatchKey, upload_batch_partitions


def test_definitions_load_with_the_contract_asset_keys():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "raw_images", "image_features", "image_embeddings", "image_clusters",
        "catalog_index", "catalog_matches", "grouping_edits", "product_groups",
        "product_images", "catalog", "product_cutouts",
    }  # fmt: skip


def test_assets_are_partitioned_by_upload_batch_and_versioned():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.partitions_def == upload_batch_partitions
        assert node.code_version or not node.is_executable, key  # grouping_edits: external
        assert node.group_name == "image_pipeline"
    upstream = graph.get(dg.AssetKey("image_clusters")).parent_keys
    assert upstream == {dg.AssetKey("image_features"), dg.AssetKey("image_embeddings")}
    assert dg.AssetKey("image_clusters") in graph.get(dg.AssetKey("catalog_index")).parent_keys
    assert graph.get(dg.AssetKey("product_groups")).parent_keys == {
        dg.AssetKey(k) for k in ("raw_images", "image_features", "image_clusters", "grouping_edits")
    }
    assert not graph.get(dg.AssetKey("grouping_edits")).is_executable
    assert graph.get(dg.AssetKey("catalog")).parent_keys == {
        dg.AssetKey(k) for k in ("product_groups", "product_images", "image_features")
    }
    # The catalogue is read, changed and written per tenant: one writer at a time.
    for name in ("catalog_index", "catalog_matches"):
        assert graph.get(dg.AssetKey(name)).pools == {"catalog"}


def test_resources_job_and_sensor_are_registered():
    assert set(defs.resources) == {
        "s3", "uploads", "memo", "io_manager", "embedder", "catalog", "edit_log", "cutouts",
    }  # fmt: skip
    assert defs.resolve_job_def("image_pipeline_job").partitions_def == upload_batch_partitions
    assert defs.resolve_sensor_def("upload_sensor").job_name == "image_pipeline_job"


def test_secrets_are_env_vars_not_values():
    s3 = defs.resources["s3"]
    assert isinstance(s3.aws_secret_access_key, dg.EnvVar)
    assert s3.aws_secret_access_key.env_var_name == "AWS_SECRET_ACCESS_KEY"


def test_partition_key_format_round_trips_and_rejects_bad_names():
    key = BatchKey("demo-shop", "2026-11-01")
    assert key.partition_key == "demo-shop/2026-11-01"
    assert BatchKey.parse(key.partition_key) == key
    for tenant, batch in [("", "b"), ("a/b", "c"), ("t", ".."), ("t", "-x"), ("t", "a" * 64)]:
        try:
            BatchKey(tenant, batch)
        except ValueError:
            continue
        raise AssertionError(f"{tenant!r}/{batch!r} accepted")
