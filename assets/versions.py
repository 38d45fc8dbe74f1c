"""Code versions of each stage. Bump one when its output would change for the same input:
Dagster then marks the asset and everything downstream stale, and the memo namespace
changes, so every entry of that stage is recomputed (old entries are simply not read)."""

RAW_IMAGES_VERSION = "1"  # decode rules, rejection reasons, working copy
FEATURES_VERSION = "1"
EMBEDDINGS_VERSION = "1"  # plus the embedder's model id, which is in the memo namespace
CLUSTERS_VERSION = "1"
