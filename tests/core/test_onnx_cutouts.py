"""photogroup.onnx_cutouts on tiny U²-Net-shaped models built here with onnx.helper."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from photogroup.onnx_cutouts import OnnxCutouts, SaliencyPreprocessing  # noqa: E402
from photogroup.providers import CutoutOutcome, CutoutProvider  # noqa: E402

SIZE = 64


def build_model(
    path: Path,
    *,
    batch: int | str = "N",
    size: int | str = SIZE,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    in_channels: int = 3,
    in_type: int = TensorProto.FLOAT,
    head: str = "saliency",
) -> Path:
    """Conv 1x1 (brightness: a weighted sum of the normalised channels) -> Sigmoid, as output
    ``d0`` (N x 1 x H x W), plus ``d1`` = 1 - d0, like U²-Net's several side outputs.

    ``in_type`` sets the input's element type (a Cast to float keeps the graph valid);
    ``head="rgb"`` makes ``d0`` the sigmoid of the 3-channel input, ``head="flat"`` the map
    flattened to N x H*W: outputs that are not saliency maps.
    """
    w = np.asarray(weights, dtype=np.float32)
    w = np.resize(w, in_channels).reshape(1, in_channels, 1, 1)
    nodes = []
    conv_in = "input"
    if in_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["input"], ["as_float"], to=TensorProto.FLOAT))
        conv_in = "as_float"
    nodes += [
        helper.make_node("Conv", [conv_in, "W", "B"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["map"]),
        helper.make_node("Sub", ["one", "map"], ["d1"]),
    ]
    out_shape = [batch, 1, size, size]
    if head == "rgb":
        nodes.append(helper.make_node("Sigmoid", [conv_in], ["d0"]))
        out_shape = [batch, 3, size, size]
    elif head == "flat":
        nodes.append(helper.make_node("Flatten", ["map"], ["d0"], axis=1))
        out_shape = [batch, size * size] if isinstance(size, int) else [batch, "HW"]
    else:
        nodes.append(helper.make_node("Identity", ["map"], ["d0"]))
    in_shape = [batch, in_channels, size, size]
    graph = helper.make_graph(
        nodes,
        "tiny_u2net",
        [helper.make_tensor_value_info("input", in_type, in_shape)],
        [
            helper.make_tensor_value_info("d0", TensorProto.FLOAT, out_shape),
            helper.make_tensor_value_info("d1", TensorProto.FLOAT, [batch, 1, size, size]),
        ],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.zeros(1, np.float32), "B"),
            numpy_helper.from_array(np.ones((), np.float32), "one"),
        ],
    )
    # An old opset and IR version that every supported onnxruntime loads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def product_shot(seed: int, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    """A bright object on a dark, slightly noisy backdrop, and its true foreground."""
    rng = np.random.default_rng(seed)
    w, h = size
    backdrop = rng.integers(10, 40, (h, w, 3)).astype(np.uint8)
    img = Image.fromarray(backdrop, "RGB")
    x0, y0 = int(w * rng.uniform(0.15, 0.3)), int(h * rng.uniform(0.15, 0.3))
    x1, y1 = int(w * rng.uniform(0.65, 0.85)), int(h * rng.uniform(0.65, 0.85))
    colour = tuple(int(v) for v in rng.integers(200, 256, 3))
    ImageDraw.Draw(img).ellipse([x0, y0, x1, y1], fill=colour)
    truth = np.zeros((h, w), dtype=np.uint8)
    truth_img = Image.fromarray(truth)
    ImageDraw.Draw(truth_img).ellipse([x0, y0, x1, y1], fill=255)
    return img, np.asarray(truth_img) > 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx_cutout_models")


@pytest.fixture(scope="module")
def dynamic_model(model_dir: Path) -> Path:
    return build_model(model_dir / "dynamic.onnx")


@pytest.fixture(scope="module")
def fixed_model(model_dir: Path) -> Path:
    return build_model(model_dir / "fixed1.onnx", batch=1)


@pytest.fixture(scope="module")
def shots() -> list[tuple[Image.Image, np.ndarray]]:
    sizes = [(120, 90), (64, 64), (57, 31), (200, 150), (33, 80), (96, 72)]
    return [product_shot(seed, size) for seed, size in enumerate(sizes)]


def masks_of(outcomes: list[CutoutOutcome]) -> list[np.ndarray]:
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    return [np.asarray(o.mask) for o in outcomes]


@pytest.mark.parametrize("which", ["dynamic", "fixed"])
def test_masks_fit_the_images_and_batches_equal_singles(which, dynamic_model, fixed_model, shots):
    cutouts = OnnxCutouts(dynamic_model if which == "dynamic" else fixed_model, batch_size=4)
    assert cutouts.batch_size == (4 if which == "dynamic" else 1)
    assert isinstance(cutouts, CutoutProvider)
    images = [img for img, _ in shots]

    batch = cutouts.cut_out(images)  # chunks of 4 + 2 on the dynamic model
    singles = [cutouts.cut_out([img])[0] for img in images]

    assert len(batch) == len(images)
    for outcome, img in zip(batch, images, strict=True):
        assert outcome.error is None and outcome.prediction_id is None
        assert outcome.mask.mode == "L" and outcome.mask.size == img.size
        assert outcome.seconds >= 0
    for a, b in zip(masks_of(batch), masks_of(singles), strict=True):
        np.testing.assert_array_equal(a, b)
    assert cutouts.cut_out([]) == []

    stats = cutouts.stats()
    assert stats["images"] == 12 and stats["images_failed"] == 0
    assert stats["batches"] == (2 + 6 if which == "dynamic" else 12)
    assert 0 <= stats["latency_p50_seconds"] <= stats["latency_p95_seconds"]


def test_fixed_batch_larger_than_one_pads_the_last_chunk(model_dir, dynamic_model, shots):
    fixed4 = OnnxCutouts(build_model(model_dir / "fixed4.onnx", batch=4))
    images = [img for img, _ in shots[:5]]  # a full chunk of 4, then 1 padded to 4
    expected = masks_of(OnnxCutouts(dynamic_model).cut_out(images))
    for a, b in zip(masks_of(fixed4.cut_out(images)), expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_bright_object_on_a_dark_backdrop_is_the_foreground(dynamic_model, shots):
    outcomes = OnnxCutouts(dynamic_model).cut_out([img for img, _ in shots])
    for mask, (_, truth) in zip(masks_of(outcomes), shots, strict=True):
        # Min-max normalised: the backdrop near 0, the object near 255.
        assert iou(mask >= 128, truth) > 0.9
        assert np.median(mask[truth]) > 200 and np.median(mask[~truth]) < 50


def test_the_named_output_is_used(dynamic_model, shots):
    img, truth = shots[0]
    (inverted,) = OnnxCutouts(dynamic_model, SaliencyPreprocessing(output_name="d1")).cut_out([img])
    assert iou(np.asarray(inverted.mask) >= 128, ~truth) > 0.9


def test_a_uniform_image_gives_an_empty_mask(dynamic_model):
    (outcome,) = OnnxCutouts(dynamic_model).cut_out([Image.new("RGB", (40, 30), (90, 90, 90))])
    assert outcome.ok and not np.asarray(outcome.mask).any()


def test_a_corrupt_image_fails_alone(dynamic_model, shots):
    good = [img for img, _ in shots[:3]]
    data = io.BytesIO()
    shots[3][0].save(data, format="JPEG")
    # The header parses (Image.open is lazy), the pixels do not.
    truncated = Image.open(io.BytesIO(data.getvalue()[: len(data.getvalue()) // 2]))
    cutouts = OnnxCutouts(dynamic_model, batch_size=4)
    outcomes = cutouts.cut_out([good[0], truncated, good[1], Image.new("RGB", (0, 0)), good[2]])

    assert [o.ok for o in outcomes] == [True, False, True, False, True]
    assert outcomes[1].mask is None and outcomes[1].error.startswith("image_error: OSError")
    assert outcomes[3].error.startswith("image_error: ")
    expected = masks_of(cutouts.cut_out(good))
    for a, b in zip(masks_of([outcomes[0], outcomes[2], outcomes[4]]), expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert cutouts.stats()["images_failed"] == 2


def test_a_batch_the_model_refuses_is_rerun_image_by_image(model_dir, shots):
    # Declares a dynamic batch, but a Reshape to a fixed 1 x ... makes any larger batch fail.
    path = model_dir / "batch_one_only.onnx"
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["reshaped"]),
            helper.make_node("ReduceMean", ["reshaped"], ["d0"], axes=[1], keepdims=1),
        ],
        "batch_one_only",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("d0", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        initializer=[
            numpy_helper.from_array(np.array([1, 3, SIZE, SIZE], np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)

    cutouts = OnnxCutouts(path, batch_size=3)
    outcomes = cutouts.cut_out([img for img, _ in shots[:3]])
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert cutouts.stats()["batches_rerun_singly"] == 1


def test_model_id_follows_the_bytes_and_the_options(model_dir, dynamic_model):
    base = OnnxCutouts(dynamic_model)
    assert base.model_id.startswith(f"onnx-cutout-{base.model_sha256[:12]}-")
    assert base.preprocessing.size == (SIZE, SIZE)  # taken from the model's fixed input

    copy = model_dir / "copy_elsewhere.onnx"
    shutil.copyfile(dynamic_model, copy)
    assert OnnxCutouts(copy).model_id == base.model_id  # a copy at another path
    named = SaliencyPreprocessing(input_name="input", output_name="d0")
    assert OnnxCutouts(dynamic_model, named).model_id == base.model_id  # the defaults, named
    # Threads and batch size do not change the masks, so not the id either.
    assert OnnxCutouts(dynamic_model, batch_size=1, intra_op_num_threads=2).model_id == (
        base.model_id
    )

    other_weights = build_model(model_dir / "other.onnx", weights=(1.0, 2.0, 1.0))
    variants = [
        OnnxCutouts(other_weights),
        OnnxCutouts(dynamic_model, SaliencyPreprocessing(output_name="d1")),
        OnnxCutouts(dynamic_model, SaliencyPreprocessing(scale="max")),
        OnnxCutouts(dynamic_model, SaliencyPreprocessing(mean=(0.5, 0.5, 0.5))),
        OnnxCutouts(dynamic_model, SaliencyPreprocessing(std=(0.5, 0.5, 0.5))),
        OnnxCutouts(dynamic_model, SaliencyPreprocessing(interpolation="bicubic")),
    ]
    ids = {base.model_id, *(v.model_id for v in variants)}
    assert len(ids) == 1 + len(variants)


def test_dynamic_spatial_dims_default_to_320_or_take_the_configured_size(model_dir, shots):
    path = build_model(model_dir / "any_size.onnx", size="S")
    default = OnnxCutouts(path)
    sized = OnnxCutouts(path, SaliencyPreprocessing(size=[48, 32]))
    assert default.preprocessing.size == (320, 320)
    assert sized.preprocessing.size == (48, 32)
    assert default.model_id != sized.model_id
    img, truth = shots[0]
    for cutouts in (default, sized):
        (outcome,) = cutouts.cut_out([img])
        assert outcome.mask.size == img.size
        assert iou(np.asarray(outcome.mask) >= 128, truth) > 0.85


def test_a_wrong_size_for_a_fixed_input_is_refused(dynamic_model):
    with pytest.raises(ValueError, match=r"width 64, but the preprocessing size is 320x320"):
        OnnxCutouts(dynamic_model, SaliencyPreprocessing(size=(320, 320)))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("grey_input", r"1 channels; expected N x 3 x H x W"),
        ("int_input", r"only float image tensors"),
        ("three_channel_output", r"a saliency map is N x 1 x H x W"),
        ("flat_output", r"a saliency map is N x 1 x H x W"),
        ("unknown_output", r"no output named 'mask'"),
    ],
)
def test_a_model_whose_io_does_not_fit_gives_a_clear_error(model_dir, kind, message):
    path = model_dir / f"{kind}.onnx"
    pre = None
    if kind == "grey_input":
        build_model(path, in_channels=1)
    elif kind == "int_input":
        build_model(path, in_type=TensorProto.UINT8)
    elif kind == "three_channel_output":
        build_model(path, head="rgb")
    elif kind == "flat_output":
        build_model(path, head="flat")
    else:
        build_model(path)
        pre = SaliencyPreprocessing(output_name="mask")
    with pytest.raises(ValueError, match=message):
        OnnxCutouts(path, pre)


def test_a_dynamic_output_that_is_not_a_map_is_caught_by_the_probe(model_dir):
    # A Reshape to a computed shape: neither ONNX nor onnxruntime can tell the output's dims
    # before a run, which then returns the 3-channel input itself.
    path = model_dir / "computed_reshape.onnx"
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["input"], ["in_shape"]),
            helper.make_node("Mul", ["in_shape", "ones"], ["target"]),
            helper.make_node("Reshape", ["input", "target"], ["d0"]),
        ],
        "computed_reshape",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("d0", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ones(4, np.int64), "ones")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    with pytest.raises(ValueError, match=r"has shape \[1, 3, 64, 64\]; expected \[1, 1, H, W\]"):
        OnnxCutouts(path)


def test_not_a_model_and_bad_settings_are_refused(tmp_path, dynamic_model):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxCutouts(junk)
    with pytest.raises(FileNotFoundError):
        OnnxCutouts(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="intra_op_num_threads"):
        OnnxCutouts(dynamic_model, intra_op_num_threads=0)
    with pytest.raises(ValueError, match="std values"):
        SaliencyPreprocessing(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="scale must be"):
        SaliencyPreprocessing(scale="1")
