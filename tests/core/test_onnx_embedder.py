"""photogroup.onnx_embedder on tiny ONNX encoders built here with onnx.helper."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from photogroup.embed import Embedder  # noqa: E402
from photogroup.onnx_embedder import OnnxEmbedder, OnnxModelError, Preprocessing  # noqa: E402

SIZE = 32
FEATURES = 16


def build_model(
    path: Path,
    *,
    batch: int | str = "N",
    seed: int = 0,
    layout: str = "NCHW",
    pooled: bool = True,
) -> Path:
    """Conv 3x3 (fixed random weights) -> Relu -> [GlobalAveragePool -> Flatten] -> N x 16.

    ``layout="NHWC"`` prepends a Transpose so the same network takes channels-last input;
    ``pooled=False`` returns the N x 16 x 32 x 32 feature map itself.
    """
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((FEATURES, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(FEATURES).astype(np.float32) * 0.1
    in_shape = [batch, 3, SIZE, SIZE] if layout == "NCHW" else [batch, SIZE, SIZE, 3]
    nodes = []
    conv_in = "pixels"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2]))
        conv_in = "nchw"
    nodes += [
        helper.make_node("Conv", [conv_in, "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu" if pooled else "features"]),
    ]
    if pooled:
        nodes += [
            helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
            helper.make_node("Flatten", ["gap"], ["features"], axis=1),
        ]
    out_shape = [batch, FEATURES] if pooled else [batch, FEATURES, SIZE, SIZE]
    graph = helper.make_graph(
        nodes,
        "tiny_encoder",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    # An old opset and IR version that every supported onnxruntime loads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Colourful images of several sizes and aspect ratios, with distinct R and B channels."""
    rng = np.random.default_rng(42)
    out = []
    for i, (w, h) in enumerate([(40, 40), (64, 48), (31, 57), (100, 80), (32, 32), (50, 70)]):
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.stack(
            [
                (xx * (3 + i)) % 256,
                (yy * 5 + 40 * i) % 256,
                rng.integers(0, 256, (h, w)),
            ],
            axis=-1,
        ).astype(np.uint8)
        out.append(Image.fromarray(pixels, "RGB"))
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx_models")


@pytest.fixture(scope="module")
def dynamic_model(model_dir: Path) -> Path:
    return build_model(model_dir / "dynamic.onnx")


@pytest.fixture(scope="module")
def fixed_model(model_dir: Path) -> Path:
    return build_model(model_dir / "fixed1.onnx", batch=1)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


@pytest.mark.parametrize("which", ["dynamic", "fixed"])
def test_batch_equals_singles_and_rows_are_unit(which, dynamic_model, fixed_model, images):
    path = dynamic_model if which == "dynamic" else fixed_model
    embedder = OnnxEmbedder(path, batch_size=4)
    assert isinstance(embedder, Embedder)
    assert embedder.dim == FEATURES
    assert embedder.fixed_batch == (None if which == "dynamic" else 1)

    batch = embedder.embed(images)  # 6 images: chunks of 4 + 2 on the dynamic model
    singles = np.concatenate([embedder.embed([img]) for img in images])

    assert batch.shape == (len(images), FEATURES)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert cosines(batch, singles).min() > 0.999
    assert embedder.embed([]).shape == (0, FEATURES)


def test_dynamic_and_fixed_batch_models_agree(dynamic_model, fixed_model, images):
    a = OnnxEmbedder(dynamic_model).embed(images)
    b = OnnxEmbedder(fixed_model).embed(images)
    assert cosines(a, b).min() > 0.999


def test_fixed_batch_larger_than_one_pads_the_last_chunk(model_dir, dynamic_model, images):
    fixed4 = OnnxEmbedder(build_model(model_dir / "fixed4.onnx", batch=4))
    assert fixed4.batch_size == 4
    rows = fixed4.embed(images[:5])  # a full chunk of 4, then 1 padded to 4
    expected = OnnxEmbedder(dynamic_model).embed(images[:5])
    assert rows.shape == (5, FEATURES)
    assert cosines(rows, expected).min() > 0.999


def test_images_are_told_apart(dynamic_model, images):
    rows = OnnxEmbedder(dynamic_model).embed(images)
    off_diagonal = (rows @ rows.T)[~np.eye(len(images), dtype=bool)]
    assert off_diagonal.min() < 0.99  # not one constant vector


def test_channel_order_changes_output_and_model_id(dynamic_model, images):
    rgb = OnnxEmbedder(dynamic_model, Preprocessing(channel_order="RGB"))
    bgr = OnnxEmbedder(dynamic_model, Preprocessing(channel_order="BGR"))
    assert rgb.model_id != bgr.model_id
    assert cosines(rgb.embed(images), bgr.embed(images)).min() < 0.999


@pytest.mark.parametrize(
    "options",
    [
        {"resize": "center_crop"},
        {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
        {"scale": 1.0, "mean": (0.0, 0.0, 0.0), "std": (255.0, 255.0, 255.0)},
        {"trim_border": True},
        {"interpolation": "bicubic"},
    ],
    ids=lambda o: ",".join(o),
)
def test_every_preprocessing_option_is_part_of_model_id(dynamic_model, options):
    default = OnnxEmbedder(dynamic_model)
    assert OnnxEmbedder(dynamic_model, Preprocessing(**options)).model_id != default.model_id


def test_preprocessing_arrays():
    # A wide picture letterboxed in white: squash keeps all of it, center_crop its middle,
    # trim_border drops the white bands. (The tiny model pools globally, so its output
    # barely notices; check the arrays it is fed.)
    core = np.zeros((40, 120, 3), dtype=np.uint8)
    core[..., 0] = (np.arange(120) * 2).astype(np.uint8)[None, :]
    core[:, 60:, 2] = 200
    boxed = Image.new("RGB", (120, 80), "white")
    boxed.paste(Image.fromarray(core, "RGB"), (0, 20))
    plain = {"size": (SIZE, SIZE), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}

    squash = Preprocessing(**plain).to_array(boxed)
    crop = Preprocessing(**plain, resize="center_crop").to_array(boxed)
    trim = Preprocessing(**plain, trim_border=True).to_array(boxed)
    bgr = Preprocessing(**plain, channel_order="BGR").to_array(boxed)

    assert squash.shape == crop.shape == trim.shape == (SIZE, SIZE, 3)
    assert squash.dtype == np.float32
    assert squash.min() >= 0.0 and squash.max() <= 1.0  # scale 1/255, no mean/std
    assert np.allclose(squash[0], 1.0) and np.allclose(crop[0], 1.0)  # white band on top
    assert not np.allclose(trim[0], 1.0)  # trimmed away
    assert np.abs(squash - crop).max() > 0.1  # the crop loses the left and right edges
    np.testing.assert_array_equal(bgr, squash[..., ::-1])

    imagenet = Preprocessing(size=(SIZE, SIZE)).to_array(boxed)
    np.testing.assert_allclose(
        imagenet[0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], rtol=1e-5
    )


def test_model_id_follows_the_bytes_not_the_path(model_dir, dynamic_model, tmp_path):
    first = OnnxEmbedder(dynamic_model)
    assert first.model_id.startswith(f"onnx-{first.model_sha256[:12]}-")

    copy = tmp_path / "copy.onnx"
    copy.write_bytes(dynamic_model.read_bytes())
    assert OnnxEmbedder(copy).model_id == first.model_id

    build_model(copy, seed=1)  # same architecture, other weights, same path
    assert OnnxEmbedder(copy).model_id != first.model_id


def test_explicit_default_names_keep_model_id(dynamic_model):
    named = Preprocessing(input_name="pixels", output_name="features")
    assert OnnxEmbedder(dynamic_model, named).model_id == OnnxEmbedder(dynamic_model).model_id


def test_size_defaults_to_the_models_input(dynamic_model):
    assert OnnxEmbedder(dynamic_model).preprocessing.size == (SIZE, SIZE)
    assert Preprocessing().size is None


def test_nhwc_layout(model_dir, dynamic_model, images):
    nhwc = OnnxEmbedder(
        build_model(model_dir / "nhwc.onnx", layout="NHWC"), Preprocessing(layout="NHWC")
    )
    expected = OnnxEmbedder(dynamic_model).embed(images)
    assert cosines(nhwc.embed(images), expected).min() > 0.999


def test_feature_map_output_is_average_pooled(model_dir, dynamic_model, images):
    feature_map = OnnxEmbedder(build_model(model_dir / "map.onnx", pooled=False))
    assert feature_map.dim == FEATURES
    expected = OnnxEmbedder(dynamic_model).embed(images)
    assert cosines(feature_map.embed(images), expected).min() > 0.999

    flat = OnnxEmbedder(model_dir / "map.onnx", Preprocessing(pooling="flatten"))
    assert flat.dim == FEATURES * SIZE * SIZE
    assert flat.embed(images[:2]).shape == (2, FEATURES * SIZE * SIZE)


def test_dim_of_a_dynamic_output_comes_from_a_first_run(model_dir, images):
    path = build_model(model_dir / "dynamic_out.onnx")
    model = onnx.load(path)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[1].ClearField("dim_value")
    dims[1].dim_param = "D"
    onnx.save(model, path)
    embedder = OnnxEmbedder(path)
    assert embedder.dim == FEATURES
    assert embedder.embed(images[:3]).shape == (3, FEATURES)


def test_threads_are_bounded(dynamic_model):
    embedder = OnnxEmbedder(dynamic_model, intra_op_num_threads=2)
    assert embedder._session.get_session_options().intra_op_num_threads == 2
    assert OnnxEmbedder(dynamic_model)._session.get_session_options().intra_op_num_threads == 1


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ONNX model file not found: .*absent\.onnx"):
        OnnxEmbedder(tmp_path / "absent.onnx")


def test_not_an_onnx_file(tmp_path):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n this is a picture, not a model")
    with pytest.raises(OnnxModelError, match="is not a loadable ONNX model"):
        OnnxEmbedder(junk)


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(OnnxModelError, match="not a file"):
        OnnxEmbedder(tmp_path)


def test_input_size_incompatible_with_preprocessing(dynamic_model):
    with pytest.raises(OnnxModelError, match=r"width 32, but preprocessing size is 64x32"):
        OnnxEmbedder(dynamic_model, Preprocessing(size=(64, 32)))


def test_layout_incompatible_with_model(dynamic_model):
    with pytest.raises(OnnxModelError, match=r"layout NHWC means 32 channels.*is the layout NCHW"):
        OnnxEmbedder(dynamic_model, Preprocessing(layout="NHWC"))


def test_unknown_input_or_output_name(dynamic_model):
    with pytest.raises(OnnxModelError, match=r"no input named 'image'; the model has 'pixels'"):
        OnnxEmbedder(dynamic_model, Preprocessing(input_name="image"))
    with pytest.raises(OnnxModelError, match=r"no output named 'emb'; the model has 'features'"):
        OnnxEmbedder(dynamic_model, Preprocessing(output_name="emb"))


def test_invalid_preprocessing_is_refused():
    with pytest.raises(ValueError, match="resize must be one of"):
        Preprocessing(resize="stretch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="std values must be finite and non-zero"):
        Preprocessing(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="one value per channel"):
        Preprocessing(mean=(0.5, 0.5))  # type: ignore[arg-type]
    # Lists, as Dagster config delivers them, become tuples.
    assert Preprocessing(size=[32, 32], mean=[0, 0, 0]).size == (32, 32)  # type: ignore[arg-type]


def test_missing_onnxruntime_names_the_extra(dynamic_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ImportError, match=r"pip install -e '\.\[onnx\]'"):
        OnnxEmbedder(dynamic_model)
