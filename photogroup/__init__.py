"""Dagster-free image logic: decode, features, embeddings, grouping, evaluation.

One import gives the API::

    from photogroup import decode_image, compute_features, LocalEmbedder, group_images
"""

from photogroup.cluster import Assignment, GroupingParams, group_images
from photogroup.decode import (
    Decoded,
    Rejection,
    decode_image,
    encode_work_image,
    open_work_image,
    sniff_content_type,
)
from photogroup.embed import Embedder, LocalEmbedder, l2_normalise
from photogroup.evaluate import pairwise_scores
from photogroup.features import ImageFeatures, compute_features, dihedral_phash

__all__ = [
    "Assignment",
    "Decoded",
    "Embedder",
    "GroupingParams",
    "ImageFeatures",
    "LocalEmbedder",
    "Rejection",
    "compute_features",
    "decode_image",
    "dihedral_phash",
    "encode_work_image",
    "group_images",
    "l2_normalise",
    "open_work_image",
    "pairwise_scores",
    "sniff_content_type",
]
