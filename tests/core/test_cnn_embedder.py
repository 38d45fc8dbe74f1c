"""photogroup.cnn_embedder: EfficientNet-Lite0 ImageNet features (needs the `cnn` extra)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from photogroup import Embedder
from photogroup.cnn_embedder import CnnEmbedder, load_model
from photogroup.features import trim_uniform_border
from photogroup.samples import load_photo

REPO = Path(__file__).resolve().parents[2]
NAMES = ["astronaut", "coffee", "chelsea", "rocket", "camera"]
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = (967, 968)  # espresso, cup


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: load_photo(name) for name in NAMES}


@pytest.fixture(scope="module")
def embedder() -> CnnEmbedder:
    load_model()  # once per process: the fixtures below share it
    return CnnEmbedder()


@pytest.fixture(scope="module")
def vectors(embedder, photos) -> np.ndarray:
    return embedder.embed([photos[n] for n in NAMES])


def half_size_jpeg(img: Image.Image, quality: int = 30) -> Image.Image:
    small = img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_satisfies_the_embedder_protocol(embedder):
    assert isinstance(embedder, Embedder)
    assert embedder.model_id == "efficientnet-lite0-imagenet-v1-o2"
    assert CnnEmbedder(orientations=8).model_id != embedder.model_id
    assert embedder.dim == 1280


def test_rows_are_float32_unit_vectors(embedder, vectors):
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(NAMES), embedder.dim)
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_batch(embedder):
    rows = embedder.embed([])
    assert rows.shape == (0, embedder.dim)
    assert rows.dtype == np.float32


def test_batch_equals_one_at_a_time(embedder, photos, vectors):
    singles = np.concatenate([embedder.embed([photos[n]]) for n in NAMES])
    assert np.min(np.sum(singles * vectors, axis=1)) > 0.999
    # Another forward-pass size gives the same vectors too.
    other = CnnEmbedder(batch_size=3).embed([photos[n] for n in NAMES])
    assert np.min(np.sum(other * vectors, axis=1)) > 0.999


def test_deterministic(embedder, photos, vectors):
    again = CnnEmbedder().embed([photos[n] for n in NAMES])
    np.testing.assert_array_equal(again, vectors)


def test_imagenet_classes_prove_the_weights_loaded(embedder, photos):
    # Random or misaligned weights would not name a cat and a cup.
    logits = embedder.imagenet_logits([photos["chelsea"], photos["coffee"]])
    assert logits.shape == (2, 1000)
    assert int(np.argmax(logits[0])) in CAT_CLASSES
    assert int(np.argmax(logits[1])) in CUP_CLASSES


def test_edited_copy_is_much_closer_to_its_original(embedder, photos, vectors):
    edited = embedder.embed([half_size_jpeg(photos[n]) for n in NAMES])
    sims = edited @ vectors.T  # row: an edit; column: an original
    same = np.diag(sims)
    others = np.where(np.eye(len(NAMES), dtype=bool), -1.0, sims).max(axis=1)
    assert np.all(same > 0.75), same  # measured 0.84-0.93
    assert np.all(same - others > 0.4), (same, others)  # other photos: at most 0.28


def test_flipped_copy_gets_the_same_vector_with_two_orientations(embedder, photos, vectors):
    flipped = embedder.embed([ImageOps.mirror(photos[n]) for n in NAMES])
    assert np.min(np.sum(flipped * vectors, axis=1)) > 0.999


def test_quarter_turns_get_the_same_vector_with_eight_orientations(photos):
    cat = photos["chelsea"]
    turned = [
        cat,
        cat.transpose(Image.Transpose.ROTATE_90),
        cat.transpose(Image.Transpose.TRANSPOSE),
    ]
    rows = CnnEmbedder(orientations=8).embed(turned)
    assert np.min(rows @ rows.T) > 0.999
    # One orientation does not see through a quarter turn: the option matters.
    single = CnnEmbedder(orientations=1).embed(turned[:2])
    assert float(single[0] @ single[1]) < 0.99


def test_padding_is_trimmed_before_embedding(embedder, photos, vectors):
    coffee = photos["coffee"]
    padded = ImageOps.expand(coffee, border=40, fill=(255, 255, 255))
    assert trim_uniform_border(padded).size == coffee.size
    row = embedder.embed([padded])[0]
    assert float(row @ vectors[NAMES.index("coffee")]) > 0.999


def test_rejects_unknown_orientations():
    with pytest.raises(ValueError, match="orientations"):
        CnnEmbedder(orientations=4)


def test_missing_torch_names_the_extra(monkeypatch, photos):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match=r"\.\[cnn\]"):
        CnnEmbedder().embed([photos["coffee"]])
