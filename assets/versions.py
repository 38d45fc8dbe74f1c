"""Code versions of each stage. Bump one when its output would change for the same input:
Dagster then marks the asset and everything downstream stale, and the memo namespace
changes, so every entry of that stage is recomputed (old entries are simply not read)."""

RAW_IMAGES_VERSION = "3"  # decode rules and rejection reasons; 2: HEIC decoded (it was
# rejected as unsupported_format), JPEG XL named; 3: a DNG is rejected (it was accepted as
# its small TIFF preview)
WORK_VERSION = "4"  # how the working copy is made (normalisation, size): features and
# embeddings are computed from it, so it is part of their memo namespaces too;
# 3: ICC profiles converted to sRGB, colour keys that hide photo pixels dropped;
# 4: one decoder (photogroup.decode.decode_upload) for working copies and renditions: a copy
# made beside renditions comes from a larger JPEG draft (same photo within resampling noise)
FEATURES_VERSION = "7"  # 2: ORB keypoints; 3: hashes from thumbnails, keypoint sizes;
# 4: grey thumbnail and SIFT surface keypoints with colours (compressed keypoints field);
# 5: chromaticity thumbnail of the content box (keypoints format 4); 6: surface keypoints
# also of the content box squeezed horizontally (affine simulation); 7: the content box
# leaves padding and letterbox bars out (photogroup.verify.padding_frame)
EMBEDDINGS_VERSION = "1"  # plus the embedder's model id, which is in the memo namespace
CLUSTERS_VERSION = "29"  # 2: sub-quadratic candidates, verification, centre check;
# 3: same-photo alignment + block comparison, product links by surface verification;
# 4: "one patch differs" copies, ORB-descriptor candidates, hue turn over matched surfaces;
# 5: palettes around the product-level matches; 6: changed print of near-angle shots;
# 7: surface matches count each location once (a point and its simulated copies);
# 8: a dark print turned lit is a changed print;
# 9: same_look links between views that share no surface (photogroup.looks);
# 10: a copy-like pair whose print changed off one exact plane is a variant's twin, not a
# copy; strict defaults min_rest_agreement 0.95, max_copy_residual 0.0005;
# 11: near-angle blocks that disagree mean another design only where the print changed;
# 12: a copy resampled as a whole (one tight plane, print unchanged) is a copy;
# 13: a copy edited in place (many matches on one plane to a tenth of a pixel) is a copy;
# 14: a copy shown smaller is also compared at its own resolution;
# 15: a variant kept apart makes a look ambiguous only if it carries the look's colours
# (a look near a colour variant only attaches a lone strict group);
# 16: a copy-like pair on one exact plane whose print was recoloured over more than 3 % is
# a variant shot from its base's camera position, not a copy;
# 17: twins whose print turned its hue never share a strict group (links joined closest first);
# 18: a copy blurred or noisy at one scale is also compared at one sharpness;
# 19: two angles of one surface whose print, laid by their matches, changed are variants;
# 20: the surface print change is the smaller of its two ways;
# 21: two angles' colours at their matches may differ by 15 (was 10);
# 22: a copy-like pair whose print turned its hue over 3 % was a variant's twin (reverted);
# 23: as 21; 24: a copy whose colours collapsed onto one tone was not judged by its hue
# turn (reverted); 25: as 21; 26: a pair the copy test misses one way round is judged
# the other way round too (from the image with less detail); 27: and by the patch tests;
# 28: the product level counts a region whose grey level changed as a changed print;
# 29: the shown-smaller comparison counts the detail each thumbnail holds (downscaled uploads)
CATALOG_VERSION = "1"  # catalogue segments and cross-batch matches
PRODUCT_GROUPS_VERSION = "1"  # edits applied, names, covers
RENDITIONS_VERSION = "2"  # how renditions are decoded and encoded (settings: their digest);
# 2: the working copy's colour pipeline (ICC on images with alpha, colour keys)
CATALOG_EXPORT_VERSION = "1"  # the per-batch catalogue export
CUTOUTS_VERSION = "1"  # how cut-outs are stored (the provider's model id is in the namespace)
