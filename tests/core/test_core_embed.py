"""photogroup.embed: the offline LocalEmbedder and l2_normalise."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from photogroup import Embedder, LocalEmbedder, l2_normalise
from photogroup.samples import load_photo
from photogroup.variants import EDITS

NAMES = ["astronaut", "coffee", "chelsea", "rocket", "coins"]


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: load_photo(name) for name in NAMES}


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


def cosine(embedder: LocalEmbedder, a: Image.Image, b: Image.Image) -> float:
    rows = embedder.embed([a, b])
    return float(rows[0] @ rows[1])


def test_satisfies_the_embedder_protocol(embedder):
    assert isinstance(embedder, Embedder)
    assert isinstance(embedder.model_id, str) and embedder.model_id
    assert embedder.dim == 291


def test_embed_returns_float32_unit_rows(embedder, photos):
    rows = embedder.embed([photos[n] for n in NAMES])
    assert rows.dtype == np.float32
    assert rows.shape == (len(NAMES), embedder.dim)
    assert np.all(np.isfinite(rows))
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_embed_is_deterministic_and_row_independent(embedder, photos):
    batch = [photos[n] for n in NAMES]
    first = embedder.embed(batch)
    again = LocalEmbedder().embed(batch)
    assert np.array_equal(first, again)
    single = embedder.embed([photos["coffee"]])
    np.testing.assert_allclose(single[0], first[NAMES.index("coffee")], atol=1e-6)


def test_empty_batch(embedder):
    rows = embedder.embed([])
    assert rows.shape == (0, embedder.dim)
    assert rows.dtype == np.float32


def test_accepts_grey_and_rgba_input(embedder, photos):
    rows = embedder.embed([photos["coins"].convert("L"), photos["coins"].convert("RGBA")])
    assert rows.shape == (2, embedder.dim)
    assert float(rows[0] @ rows[1]) > 0.99


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "transform",
    [
        ImageOps.mirror,
        ImageOps.flip,
        lambda im: im.transpose(Image.Transpose.ROTATE_90),
        lambda im: im.transpose(Image.Transpose.ROTATE_270),
    ],
    ids=["mirror", "flip", "rotate90", "rotate270"],
)
def test_mirrored_and_rotated_copies_embed_alike(embedder, photos, name, transform):
    assert cosine(embedder, photos[name], transform(photos[name])) > 0.99


@pytest.mark.parametrize("name", NAMES)
def test_recompressed_copy_embeds_alike(embedder, photos, name):
    assert cosine(embedder, photos[name], EDITS["recompressed"](photos[name])) > 0.9


@pytest.mark.parametrize("name", NAMES)
def test_padded_copy_embeds_alike(embedder, photos, name):
    assert cosine(embedder, photos[name], EDITS["padded"](photos[name])) > 0.95


@pytest.mark.parametrize(
    ("a", "b"),
    [("astronaut", "coins"), ("coffee", "rocket"), ("astronaut", "chelsea"), ("chelsea", "rocket")],
)
def test_different_photos_embed_apart(embedder, photos, a, b):
    assert cosine(embedder, photos[a], photos[b]) < 0.8


def test_l2_normalise_keeps_zero_rows_zero():
    out = l2_normalise(np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0], [0.0, -2.0, 0.0]]))
    assert out.dtype == np.float32
    assert not np.isnan(out).any()
    np.testing.assert_array_equal(out[0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(out[1], [0.6, 0.0, 0.8], atol=1e-7)
    np.testing.assert_allclose(out[2], [0.0, -1.0, 0.0], atol=1e-7)


def test_l2_normalise_preserves_direction_and_is_idempotent():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(20, 7)) * rng.uniform(0.01, 100, size=(20, 1))
    out = l2_normalise(rows)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out * np.linalg.norm(rows, axis=1, keepdims=True), rows, rtol=1e-5)
    np.testing.assert_allclose(l2_normalise(out), out, atol=1e-7)
