"""The image pipeline, per upload batch:

raw_images -> image_features  ---\\          (one step: image_analysis)
          \\-> image_embeddings --> image_clusters --> catalog_index --> catalog_matches
          \\                                      \\-> product_groups <-- grouping_edits
           \\-> product_images                              \\-> catalog <-- product_images
                  \\------------------------------------------> product_cutouts <-- product_groups

raw_images and product_images are one step (raw_images): one decode of each upload.
"""

import warnings

import dagster as dg

from assets.catalog_export import catalog
from assets.catalog_index import catalog_index
from assets.catalog_matches import catalog_matches
from assets.image_analysis import image_analysis
from assets.image_clusters import image_clusters
from assets.product_cutouts import product_cutouts
from assets.product_groups import grouping_edits, product_groups
from assets.raw_images import raw_images

ALL_ASSETS = [
    raw_images,  # raw_images and product_images, from one decode of each upload
    image_analysis,  # image_features and image_embeddings, from one decode
    image_clusters,
    catalog_index,
    catalog_matches,
    grouping_edits,
    product_groups,
    catalog,
    product_cutouts,
]

# Data versions from content are deliberate (an unchanged upstream leaves downstream
# fresh); Dagster marks Output(data_version=...) beta and would warn on every step.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*data_version.*")
