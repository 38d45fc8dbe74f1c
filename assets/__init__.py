"""The image pipeline, per upload batch:

raw_images -> image_features  ---\\
          \\-> image_embeddings --> image_clusters
"""

from assets.image_clusters import image_clusters
from assets.image_embeddings import image_embeddings
from assets.image_features import image_features
from assets.raw_images import raw_images

ALL_ASSETS = [raw_images, image_features, image_embeddings, image_clusters]
