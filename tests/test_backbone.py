import json

import h5py
import numpy as np
import pytest
import torch

from cntem import backbone
from cntem.backbone import (CAFFE, TORCHVISION, WeightsError, build_vgg16, convert_keras_h5,
                            load_weights, tensor_sha256)
from cntem.features import CONV_INDEX


def write_keras_h5(state_dict: dict, path) -> None:
    """The inverse of :func:`convert_keras_h5` (Keras 2 layout): a Keras weights file to test the converter on."""
    with h5py.File(path, "w") as f:
        names = ["input_1"]
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S")
        for name, idx in CONV_INDEX.items():
            group = f.create_group(name)
            w = state_dict[f"features.{idx}.weight"].numpy().transpose(2, 3, 1, 0)
            group.attrs["weight_names"] = np.array([f"{name}_W_1:0".encode(), f"{name}_b_1:0".encode()])
            group.create_dataset(f"{name}_W_1:0", data=w)
            group.create_dataset(f"{name}_b_1:0", data=state_dict[f"features.{idx}.bias"].numpy())
            names.append(name)
            if name.endswith("conv3") or name in ("block1_conv2", "block2_conv2"):
                pool = name.split("_")[0] + "_pool"
                f.create_group(pool).attrs["weight_names"] = np.array([], dtype="S")
                names.append(pool)
        f.attrs["layer_names"] = np.array([n.encode() for n in names])


def test_caffe_preprocessing_of_a_known_pixel():
    x = CAFFE.apply(torch.full((1, 2, 2), 100, dtype=torch.uint8))
    assert x.shape == (1, 3, 2, 2)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([100 - 103.939, 100 - 116.779, 100 - 123.68]))


def test_torchvision_preprocessing_of_a_known_pixel():
    x = TORCHVISION.apply(torch.full((1, 1, 1), 255, dtype=torch.uint8))
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x[0, :, 0, 0], expected)


def test_keras_h5_round_trip(weights, tmp_path):
    conv = {k: v for k, v in weights.state_dict.items() if k.startswith("features.")}
    h5 = tmp_path / "vgg16_notop.h5"
    write_keras_h5(conv, h5)
    back = convert_keras_h5(h5)
    assert set(back) == set(conv)
    for key in conv:
        assert torch.equal(back[key], conv[key]), key
    assert back["features.0.weight"].shape == (64, 3, 3, 3)
    assert tensor_sha256(back) == weights.sha256
    loaded = load_weights(str(h5))
    assert loaded.preprocess == CAFFE and loaded.sha256 == weights.sha256


def test_pth_with_sidecar_keeps_its_input_convention(weights, tmp_path):
    path = tmp_path / "w.pth"
    torch.save({k: v for k, v in weights.state_dict.items() if k.startswith("features.")}, path)
    path.with_suffix(".json").write_text(json.dumps({"preprocess": {
        "channel_order": "BGR", "input_range": [0, 255], "mean": [103.939, 116.779, 123.68], "std": [1, 1, 1]}}))
    assert load_weights(str(path)).preprocess == CAFFE


def test_offline_without_weights_says_what_to_put_where(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(backbone.urllib.request, "urlopen", offline)
    with pytest.raises(WeightsError) as err:
        load_weights("keras-imagenet", tmp_path / "cache")
    message = str(err.value)
    assert backbone.KERAS_FILE in message and backbone.KERAS_MD5 in message
    assert str(tmp_path / "cache") in message and "weights=PATH" in message
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(str(tmp_path / "missing.pth"))


def test_cached_keras_file_with_wrong_md5_is_refused(weights, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    write_keras_h5({k: v for k, v in weights.state_dict.items() if k.startswith("features.")},
                   cache / backbone.KERAS_FILE)
    with pytest.raises(WeightsError, match="md5"):  # a file that is not the release is refused
        load_weights("keras-imagenet", cache)


def test_random_weights_are_stamped_and_the_network_builds():
    w = load_weights("random")
    assert w.is_random and w.describe()["weights_random"] is True
    assert w.sha256 == load_weights("random").sha256  # seeded
    model = build_vgg16(w, torch.device("cpu"))
    assert model.classifier is None
