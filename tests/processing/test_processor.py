"""DFineImageProcessor against PIL arithmetic and against transformers' RT-DETR processors (test oracle only)."""

from __future__ import annotations

import json
import re
import types

import numpy as np
import pytest
import torch
from PIL import Image

from dfine.errors import ConfigError, DFineError, InputFileError
from dfine.processing.batch_feature import BatchFeature
from dfine.processing.detections import to_coco_results
from dfine.processing.processor import DFineImageProcessor

transformers = pytest.importorskip("transformers")
from transformers import RTDetrImageProcessor  # noqa: E402

try:  # transformers 5 ships a PIL backend next to the torchvision one
    from transformers.models.rt_detr.image_processing_pil_rt_detr import RTDetrImageProcessorPil
except ImportError:  # pragma: no cover - older transformers
    RTDetrImageProcessorPil = None

ONE_LEVEL = 1 / 255 + 1e-6  # one 8-bit step, plus float32 slack
HUB_CONFIG = {  # the checkpoints' preprocessor_config.json (as on the hub, e.g. ustc-community/dfine-small-coco)
    "do_normalize": False,
    "do_pad": False,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "image_processor_type": "RTDetrImageProcessor",
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 640, "width": 640},
}


def _hf_processors(**kwargs):
    found = {"torchvision": RTDetrImageProcessor(do_normalize=False, **kwargs)}
    if RTDetrImageProcessorPil is not None:
        found["pil"] = RTDetrImageProcessorPil(do_normalize=False, **kwargs)
    return found


def _hf(processor, image) -> torch.Tensor:
    return torch.as_tensor(processor(image, return_tensors="pt")["pixel_values"])


def _pil_reference(image: Image.Image, size=(640, 640)) -> torch.Tensor:
    """PIL resize, then /255 in float32: what the checkpoints were validated with. (3, H, W)."""
    resized = np.asarray(image.convert("RGB").resize(size, Image.BILINEAR)).astype(np.float32) / 255
    return torch.from_numpy(resized).permute(2, 0, 1)


def _random_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


@pytest.fixture(scope="module")
def processor() -> DFineImageProcessor:
    return DFineImageProcessor()


@pytest.mark.parametrize("height,width", [(333, 517), (517, 333), (1, 1), (17, 1201), (640, 640), (700, 901)])
def test_pil_input_equals_pil_resize_divided_by_255_exactly(processor, height, width):
    image = Image.fromarray(_random_image(height, width, seed=height))
    pixels = processor(image).pixel_values
    assert pixels.shape == (1, 3, 640, 640) and pixels.dtype == torch.float32
    assert torch.equal(pixels[0], _pil_reference(image))


def test_rescale_table_is_exactly_numpy_division():
    values = torch.arange(256, dtype=torch.uint8).reshape(16, 16).expand(3, 16, 16).contiguous()
    pixels = DFineImageProcessor(do_resize=False)(values).pixel_values[0]
    assert torch.equal(pixels, torch.from_numpy(values.numpy().astype(np.float32) / 255))


def test_rgb_inputs_match_transformers_backends(processor):
    array = _random_image(333, 517)
    inputs = {
        "pil": Image.fromarray(array),
        "numpy_hwc": array,
        "tensor_chw_uint8": torch.from_numpy(array).permute(2, 0, 1).contiguous(),
    }
    reference = _pil_reference(inputs["pil"])
    for input_name, image in inputs.items():
        ours = processor(image).pixel_values[0]
        assert torch.equal(ours, reference), input_name  # every integer input takes the exact PIL path
        for backend, hf in _hf_processors().items():
            theirs = _hf(hf, image)[0]
            limit = 0.0 if backend == "pil" else ONE_LEVEL  # torchvision resizes tensors: rounding may differ
            assert (ours - theirs).abs().max().item() <= limit, (input_name, backend)


def test_grayscale_input_matches_transformers(processor):
    gray = Image.fromarray(_random_image(333, 517, seed=1)[:, :, 0])
    ours = processor(gray).pixel_values[0]
    assert torch.equal(ours, _pil_reference(gray))
    for backend, hf in _hf_processors().items():
        theirs = _hf(hf, gray)[0]  # transformers keeps one channel; we replicate it
        assert theirs.shape[0] == 1
        assert (ours - theirs.expand(3, -1, -1)).abs().max().item() <= ONE_LEVEL, backend
    for array in (np.asarray(gray), np.asarray(gray)[:, :, None]):  # HW and HW1 arrays
        assert torch.equal(processor(array).pixel_values[0], ours)


def test_rgba_input_drops_alpha(processor):
    rgba = Image.fromarray(_random_image(333, 517, channels=4, seed=2))
    ours = processor(rgba).pixel_values[0]
    assert torch.equal(ours, _pil_reference(rgba.convert("RGB")))
    assert torch.equal(processor(np.asarray(rgba)).pixel_values[0], ours)
    hf = _hf_processors()
    # The torchvision backend resizes the four channels independently: its RGB part is ours.
    assert (ours - _hf(hf["torchvision"], rgba)[0, :3]).abs().max().item() <= ONE_LEVEL
    if "pil" in hf:
        # PIL resizes RGBA with premultiplied alpha, so only an opaque image is comparable.
        opaque = rgba.copy()
        opaque.putalpha(255)
        assert torch.equal(processor(opaque).pixel_values[0], _hf(hf["pil"], opaque)[0, :3])


def test_other_modes_and_paths(processor, tmp_path):
    rgb = Image.fromarray(_random_image(40, 60, seed=3))
    for mode in ("P", "CMYK", "LA", "1"):
        converted = rgb.convert(mode)
        assert torch.equal(processor(converted).pixel_values[0], _pil_reference(converted.convert("RGB"))), mode
    path = tmp_path / "image.png"
    rgb.save(path)
    assert torch.equal(processor(str(path)).pixel_values[0], _pil_reference(rgb))
    sixteen = Image.fromarray((np.arange(40 * 60, dtype=np.uint16).reshape(40, 60)  * 27))
    assert processor(sixteen).pixel_values.max() > 0.9  # scaled to 8 bits, not clipped to white


def test_float_and_wide_integer_inputs(processor):
    array = _random_image(333, 517, seed=4)
    uint8_result = processor(array).pixel_values
    chw = torch.from_numpy(array).permute(2, 0, 1)
    assert torch.equal(processor(chw.long()).pixel_values, uint8_result)
    for floating in (chw.float() / 255, chw.double() / 255, array.astype(np.float32) / 255):
        difference = (processor(floating).pixel_values - uint8_result).abs().max().item()
        assert difference <= ONE_LEVEL
    same_size = chw.float()[:, :50, :60] / 255
    assert torch.equal(processor(same_size, size=(50, 60)).pixel_values[0], same_size)
    with pytest.raises(DFineError, match=r"\[0, 1\]"):
        processor(chw.float())
    with pytest.raises(DFineError, match="0..255"):
        processor(chw.long() * 2)


def test_batches_options_and_return_types(processor):
    images = [Image.fromarray(_random_image(100 + 10 * i, 120, seed=i)) for i in range(3)]
    batch = processor(images)
    assert isinstance(batch, BatchFeature) and batch.pixel_values.shape == (3, 3, 640, 640)
    for i, image in enumerate(images):
        assert torch.equal(batch["pixel_values"][i], _pil_reference(image))
    stacked = torch.stack([torch.from_numpy(_random_image(50, 70, seed=i)).permute(2, 0, 1) for i in range(2)])
    assert processor(stacked).pixel_values.shape == (2, 3, 640, 640)
    assert isinstance(processor(images[0], return_tensors="np").pixel_values, np.ndarray)
    assert batch.to(torch.float16).pixel_values.dtype == torch.float16
    small = processor(images[0], size={"height": 320, "width": 480}).pixel_values
    assert small.shape == (1, 3, 320, 480)
    for backend, hf in _hf_processors(size={"height": 320, "width": 480}).items():
        assert (small - _hf(hf, images[0])).abs().max().item() <= (0.0 if backend == "pil" else ONE_LEVEL)
    with pytest.raises(DFineError, match="different sizes"):
        processor(images, do_resize=False)
    with pytest.raises(TypeError, match="do_magic"):
        processor(images[0], do_magic=True)


def test_normalize_matches_transformers():
    image = Image.fromarray(_random_image(333, 517, seed=5))
    ours = DFineImageProcessor(do_normalize=True)(image).pixel_values
    assert abs(ours.mean().item()) < 5  # values now around zero, not in [0, 1]
    if RTDetrImageProcessorPil is not None:
        theirs = _hf(RTDetrImageProcessorPil(do_normalize=True), image)
        assert (ours - theirs).abs().max().item() <= 1e-5
    theirs = _hf(RTDetrImageProcessor(do_normalize=True), image)
    assert (ours - theirs).abs().max().item() <= ONE_LEVEL / 0.224 + 1e-5


# ------------------------------------------------------------------------------------------ post-processing
def _random_outputs(batch=2, queries=300, classes=80, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, queries, classes, generator=generator) * 3 - 2
    boxes = torch.rand(batch, queries, 4, generator=generator) * torch.tensor([1.0, 1.0, 0.5, 0.5])
    return types.SimpleNamespace(logits=logits, pred_boxes=boxes)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("sizes", ["none", "list", "tensor"])
def test_post_process_matches_transformers(processor, threshold, sizes):
    outputs = _random_outputs(seed=int(threshold * 10))
    target_sizes = {"none": None, "list": [(480, 640), (333, 517)], "tensor": torch.tensor([[480, 640], [333, 517]])}
    ours = processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=target_sizes[sizes])
    theirs = RTDetrImageProcessor().post_process_object_detection(
        outputs, threshold=threshold, target_sizes=target_sizes[sizes]
    )
    assert len(ours) == len(theirs) == 2
    for mine, reference in zip(ours, theirs):
        assert torch.equal(mine["labels"], reference["labels"])
        assert mine["labels"].dtype == torch.int64
        assert torch.allclose(mine["scores"], reference["scores"], atol=1e-6, rtol=0)
        assert torch.allclose(mine["boxes"], reference["boxes"], atol=1e-6, rtol=1e-6)
        assert (mine["scores"] > threshold).all()
        assert torch.all(mine["scores"][:-1] >= mine["scores"][1:])
    if threshold == 0.0:
        assert all(len(r["scores"]) == 300 for r in ours)  # k = Q candidates by default


def test_post_process_dict_input_top_k_and_errors(processor):
    outputs = _random_outputs(batch=1, queries=10, classes=3, seed=7)
    from_dict = processor.post_process_object_detection(vars(outputs), threshold=0.0)
    from_object = processor.post_process_object_detection(outputs, threshold=0.0)
    assert torch.equal(from_dict[0]["scores"], from_object[0]["scores"])
    top3 = processor.post_process_object_detection(outputs, threshold=0.0, top_k=3)[0]
    assert len(top3["scores"]) == 3 and torch.equal(top3["scores"], from_dict[0]["scores"][:3])
    everything = processor.post_process_object_detection(outputs, threshold=0.0, top_k=1000)[0]
    assert len(everything["scores"]) == 30  # clamped to Q·C
    with pytest.raises(ValueError, match="target_sizes"):
        processor.post_process_object_detection(outputs, target_sizes=[(1, 1), (2, 2)])


def test_to_coco_results(processor):
    outputs = types.SimpleNamespace(
        logits=torch.tensor([[[5.0, -5.0], [-5.0, 4.0]]]),
        pred_boxes=torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.25, 0.5, 0.5]]]),
    )
    results = processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=[(100, 200)])
    coco = to_coco_results(results, image_ids=[42], label_to_category={0: 1, 1: 3})
    assert [d["category_id"] for d in coco] == [1, 3]
    assert coco[0]["image_id"] == 42 and isinstance(coco[0]["score"], float)
    assert coco[0]["bbox"] == pytest.approx([80.0, 30.0, 40.0, 40.0])
    assert coco[1]["bbox"] == pytest.approx([0.0, 0.0, 100.0, 50.0])
    assert [d["category_id"] for d in to_coco_results(results, [42])] == [0, 1]
    with pytest.raises(ValueError, match="label 1"):
        to_coco_results(results, [42], label_to_category=[7])
    json.dumps(coco)  # plain Python numbers only


# ----------------------------------------------------------------------------------------------- config I/O
def test_save_pretrained_loads_in_transformers(tmp_path):
    ours = DFineImageProcessor(size={"height": 512, "width": 576})
    path = ours.save_pretrained(tmp_path / "out")
    saved = json.loads(path.read_text())
    assert saved["image_processor_type"] == "RTDetrImageProcessor" and saved["do_normalize"] is False
    theirs = RTDetrImageProcessor.from_pretrained(tmp_path / "out")
    assert (theirs.size.height, theirs.size.width) == (512, 576)
    assert theirs.do_normalize is False and theirs.do_rescale is True and theirs.do_pad is False
    assert theirs.rescale_factor == pytest.approx(1 / 255) and int(theirs.resample) == 2
    auto = transformers.AutoImageProcessor.from_pretrained(tmp_path / "out")
    image = Image.fromarray(_random_image(200, 300, seed=9))
    assert (_hf(auto, image) - ours(image).pixel_values).abs().max().item() <= ONE_LEVEL
    assert DFineImageProcessor.from_pretrained(tmp_path / "out").to_dict() == ours.to_dict()


def test_from_pretrained_reads_hub_config(tmp_path, processor):
    folder = tmp_path / "dfine-small-coco"
    folder.mkdir()
    hub_like = {**HUB_CONFIG, "do_convert_annotations": True, "format": "coco_detection", "unknown_key": 1}
    (folder / "preprocessor_config.json").write_text(json.dumps(hub_like))
    for source in (folder, str(folder), folder / "preprocessor_config.json"):
        loaded = DFineImageProcessor.from_pretrained(source)
        assert loaded.to_dict() == processor.to_dict()
    assert DFineImageProcessor.from_pretrained(folder, size=(320, 320)).size == {"height": 320, "width": 320}


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(InputFileError, match="preprocessor_config.json"):
        DFineImageProcessor.from_pretrained(tmp_path)
    with pytest.raises(InputFileError, match="no such file"):
        DFineImageProcessor.from_pretrained(tmp_path / "missing" / "config.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match="bad.json"):
        DFineImageProcessor.from_pretrained(bad)
    with pytest.raises(DFineError, match="not in the hub cache"):
        DFineImageProcessor.from_pretrained(
            "ustc-community/dfine-small-coco", cache_dir=tmp_path / "cache", local_files_only=True
        )



@pytest.mark.parametrize("options, problem", [
    ({"resample": "bilinear"}, "resample must be a PIL filter code"),
    ({"rescale_factor": None}, "rescale_factor must be a number"),
    ({"image_mean": 0.5}, "image_mean must be three numbers"),
    ({"size": {"height": "640", "width": "x"}}, "size must be whole numbers"),
    ({"size": {"shortest_edge": 800, "longest_edge": 1333}}, "size must give 'height' and 'width'"),
    ({"pad_size": {"height": 0, "width": 640}}, "pad_size must be positive"),
])
def test_from_pretrained_names_the_file_of_a_wrong_option(tmp_path, options, problem):
    # these were int() / float() tracebacks, or errors that did not say which file held the value
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(options))
    with pytest.raises(InputFileError) as caught:
        DFineImageProcessor.from_pretrained(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'preprocessor_config.json'}: {problem}") and "\n" not in message
    if "size" in options:  # a correct override is not blamed on the file, and a wrong one is not blamed on it
        assert DFineImageProcessor.from_pretrained(tmp_path, size=320).size == {"height": 320, "width": 320}
    (tmp_path / "preprocessor_config.json").write_text("{}")
    with pytest.raises(DFineError, match="^resample must be") as caught:
        DFineImageProcessor.from_pretrained(tmp_path, resample="bilinear")
    assert not isinstance(caught.value, InputFileError)


# ------------------------------------------------------------------------------------- channel-axis inference
def test_hwc_tensors_are_read_like_transformers(processor):
    array = _random_image(50, 60, seed=10)
    chw = processor(torch.from_numpy(array).permute(2, 0, 1).contiguous()).pixel_values
    hwc_tensor = torch.from_numpy(array)  # (50, 60, 3): the QA report's input
    assert torch.equal(processor(hwc_tensor).pixel_values, chw)
    assert torch.equal(processor(torch.stack([hwc_tensor, hwc_tensor])).pixel_values[1], chw[0])  # (B, H, W, C)
    assert torch.equal(processor(hwc_tensor.float() / 255).pixel_values, processor(array.astype(np.float32) / 255)
                       .pixel_values)
    theirs = _hf(RTDetrImageProcessor(do_normalize=False), hwc_tensor)  # torchvision backend infers HWC too
    assert (chw - theirs).abs().max().item() <= ONE_LEVEL
    assert torch.equal(processor(torch.from_numpy(array[:, :, 0])).pixel_values, processor(array[:, :, 0]).pixel_values)


def test_input_data_format_resolves_ambiguous_shapes(processor):
    array = _random_image(3, 40, seed=11)  # (3, 40, 3): channels first by inference, as transformers assumes
    tensor = torch.from_numpy(array)
    as_hwc = processor(array).pixel_values
    assert processor(tensor).pixel_values.shape == (1, 3, 640, 640)
    assert not torch.equal(processor(tensor).pixel_values, as_hwc)
    assert torch.equal(processor(tensor, input_data_format="channels_last").pixel_values, as_hwc)
    from transformers.image_utils import ChannelDimension

    chw = np.ascontiguousarray(array.transpose(2, 0, 1))
    assert torch.equal(processor(chw, input_data_format=ChannelDimension.FIRST).pixel_values, as_hwc)
    with pytest.raises(ValueError, match="input_data_format"):
        processor(array, input_data_format="hwc")


def test_unreadable_shapes_report_the_shape_given(processor):
    for image, shape in [(torch.zeros(50, 60, 5, dtype=torch.uint8), "(50, 60, 5)"),
                         (np.zeros((50, 60, 5), np.uint8), "(50, 60, 5)"),
                         (torch.zeros(2, 50, 60, 3, 1, dtype=torch.uint8), "(2, 50, 60, 3, 1)")]:
        with pytest.raises(DFineError, match=re.escape(shape)) as caught:
            processor(image)
        assert "\n" not in str(caught.value)
    with pytest.raises(DFineError, match=re.escape("(50, 60, 3) with input_data_format='channels_first'")):
        processor(torch.zeros(50, 60, 3, dtype=torch.uint8), input_data_format="channels_first")


# ----------------------------------------------------------------------------- post-processing without focal loss
def _softmax_by_class(monkeypatch):
    """transformers' RT-DETR calls softmax without dim=, which for 3-D logits is the batch axis (a bug): give it
    the class axis its docstring means, to compare the rest of its code path."""
    original = torch.nn.functional.softmax

    def softmax(input, dim=None, *args, **kwargs):
        return original(input, -1 if dim is None else dim, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "softmax", softmax)


@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_post_process_softmax_matches_transformers(processor, monkeypatch, threshold):
    outputs = _random_outputs(batch=2, queries=50, classes=6, seed=3)
    outputs.logits = outputs.logits * 0.7 + 1  # spread the softmax scores over [0, 1]
    sizes = [(480, 640), (333, 517)]
    ours = processor.post_process_object_detection(outputs, threshold, sizes, use_focal_loss=False)
    detr = transformers.DetrImageProcessor().post_process_object_detection(outputs, threshold, sizes)
    _softmax_by_class(monkeypatch)
    rt_detr = RTDetrImageProcessor().post_process_object_detection(outputs, threshold, sizes, use_focal_loss=False)
    for reference in (detr, rt_detr):
        for mine, theirs in zip(ours, reference):
            assert torch.equal(mine["labels"], theirs["labels"]) and mine["labels"].dtype == torch.int64
            assert torch.allclose(mine["scores"], theirs["scores"], atol=1e-6, rtol=0)
            assert torch.allclose(mine["boxes"], theirs["boxes"], atol=1e-4, rtol=1e-6)
    assert (ours[0]["labels"] < 5).all()  # the last ("no object") column is never a label
    if threshold == 0.0:
        assert all(len(result["scores"]) == 50 for result in ours)  # one per query, in query order
    everything = processor.post_process_object_detection(outputs, 0.0, use_focal_loss=False)[0]
    best = processor.post_process_object_detection(outputs, 0.0, use_focal_loss=False, top_k=5)[0]
    assert torch.equal(best["scores"], everything["scores"].sort(descending=True).values[:5])  # best queries first


def test_post_process_focal_flag_and_top_k_validation(processor):
    outputs = _random_outputs(batch=1, queries=10, classes=3, seed=8)
    default = processor.post_process_object_detection(outputs, threshold=0.0)[0]
    explicit = processor.post_process_object_detection(outputs, 0.0, None, True)[0]  # transformers' positions
    theirs = RTDetrImageProcessor().post_process_object_detection(outputs, 0.0, None, True)[0]
    assert torch.equal(default["scores"], explicit["scores"]) and torch.equal(default["labels"], theirs["labels"])
    for bad in (-5, 0, 2.5, True):
        with pytest.raises(ValueError, match="top_k") as caught:
            processor.post_process_object_detection(outputs, top_k=bad)
        assert "\n" not in str(caught.value)
    assert len(processor.post_process_object_detection(outputs, 0.0, top_k=np.int64(4))[0]["scores"]) == 4
    with pytest.raises(ValueError, match="no object"):
        processor.post_process_object_detection(
            types.SimpleNamespace(logits=torch.zeros(1, 4, 1), pred_boxes=torch.rand(1, 4, 4)), use_focal_loss=False
        )


def test_empty_images_are_refused_not_resized(processor):
    # a 0-pixel image was resized into a blank one, and post-processing then scaled boxes to a 0x0 image
    for image, shape in [(np.zeros((0, 0, 3), np.uint8), "(0, 0, 3)"), (np.zeros((5, 0), np.uint8), "(5, 0)"),
                         (torch.zeros(3, 0, 7), "(3, 0, 7)")]:
        with pytest.raises(DFineError, match=re.escape(f"of shape {shape}")):
            processor(image)
    with pytest.raises(DFineError, match="cannot read an image of 0x0 pixels: it is empty"):
        processor(Image.new("RGB", (0, 0)))


@pytest.mark.parametrize("options, message", [
    ({"do_resize": "no"}, "do_resize must be true or false, got 'no'"),
    ({"do_pad": None}, "do_pad must be true or false, got None"),
    ({"rescale_factor": 0}, "rescale_factor must be a positive number"),
    ({"rescale_factor": float("nan")}, "rescale_factor must be a positive number"),
    ({"image_std": [0.2, float("inf"), 0.2]}, "image_mean and image_std need three values each"),
])
def test_option_values_that_would_silently_misbehave_are_refused(options, message) -> None:
    # "no" is truthy and a zero rescale blanks every image: both used to be taken as given
    with pytest.raises(ConfigError, match=re.escape(message)):
        DFineImageProcessor(**options)
    assert DFineImageProcessor(do_resize=0, do_pad=1).do_pad is True  # 0/1 from hand-written JSON still read


def test_an_unknown_option_is_one_line_with_the_closest_name(tmp_path) -> None:
    DFineImageProcessor().save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown processor option\(s\): do_rezise \(did you mean do_resize\?\)"):
        DFineImageProcessor.from_pretrained(tmp_path, do_rezise=False)
    with pytest.raises(ConfigError, match="unknown processor option"):
        DFineImageProcessor.from_dict({}, colour="red")


def test_the_processor_of_a_model_file_is_the_one_beside_it(tmp_path) -> None:
    """DFineImageProcessor.from_pretrained takes what the model's from_pretrained takes, a run's last.pt included."""
    DFineImageProcessor(size={"height": 160, "width": 160}).save_pretrained(tmp_path)
    (tmp_path / "last.pt").write_bytes(b"weights")
    assert DFineImageProcessor.from_pretrained(tmp_path / "last.pt").size == {"height": 160, "width": 160}
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "model.pth").write_bytes(b"weights")
    with pytest.raises(InputFileError, match="is a model file, and its folder has no preprocessor_config.json"):
        DFineImageProcessor.from_pretrained(tmp_path / "alone" / "model.pth")
