"""The VGG16 convolutional backbone: weights, input conventions and device choice.

Weights are chosen by one string (config key ``weights``):

* ``keras-imagenet`` - the paper's weights (Keras VGG16 ImageNet, Caffe-style input). Looked up in
  the cache folder; if absent, the Keras release file is downloaded once, its md5 checked and
  converted to a torch state dict.
* a path - a ``.pth`` state dict in torchvision layout (a ``.json`` sidecar names its input
  convention) or a Keras ``.h5`` file.
* ``torchvision-imagenet`` - torchvision's IMAGENET1K_V1 through its weights API.
* ``random`` - seeded random init, for tests only; stamped as such in every output.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torchvision

from . import WEIGHTS_CACHE, ActionableError
from .features import CONV_INDEX

log = logging.getLogger(__name__)

KERAS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_MD5 = "6d6bbae143d832006294945121d1f1fc"
KERAS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + KERAS_FILE)
CONVERTED_FILE = "vgg16_keras_imagenet.pth"



class WeightsError(ActionableError, RuntimeError):
    """The requested weights cannot be found or read; the message says what to put where."""


@dataclass(frozen=True)
class Preprocess:
    """How a grey uint8 image becomes the network input: (x * scale - mean[c]) / std[c] per channel."""

    name: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def apply(self, grey: torch.Tensor) -> torch.Tensor:
        """(B, H, W) uint8 -> (B, 3, H, W) float32; grey is repeated to the three channels."""
        x = grey.to(torch.float32).unsqueeze(1) * self.scale
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


# Keras/Caffe: BGR order, 0-255, mean subtraction only. For grey input the channel order only
# decides which mean goes to which input channel of the first convolution.
CAFFE = Preprocess("caffe-bgr-0-255", 1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0))
TORCHVISION = Preprocess("torchvision-rgb-0-1", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Weights:
    name: str
    state_dict: dict
    preprocess: Preprocess
    sha256: str  # of the conv tensors' float32 bytes in layer order: same weights, same hash

    @property
    def is_random(self) -> bool:
        return self.name == "random"

    def describe(self) -> dict:
        return {"weights": self.name, "weights_sha256": self.sha256, "weights_random": self.is_random,
                "preprocess": json.dumps(asdict(self.preprocess))}


def tensor_sha256(state_dict: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(state_dict, key=lambda k: (k.split(".")[0], int(k.split(".")[1]), k)):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().to(torch.float32).cpu().numpy().tobytes())
    return digest.hexdigest()


def file_md5(path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- Keras h5
def convert_keras_h5(path) -> dict:
    """Keras VGG16 h5 (layer order from ``layer_names``/``weight_names``) -> torchvision state dict.

    Keras stores conv kernels as (H, W, in, out); torch wants (out, in, H, W). Both frameworks
    compute cross-correlation, so no kernel flip is needed.
    """
    state = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for raw_name in root.attrs["layer_names"]:
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            group = root[name]
            weight_names = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs["weight_names"]]
            if not weight_names or name not in CONV_INDEX:
                continue
            kernel = next(group[w][()] for w in weight_names if "kernel" in w or "_W" in w)
            bias = next(group[w][()] for w in weight_names if "bias" in w or "_b" in w)
            idx = CONV_INDEX[name]
            state[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
            state[f"features.{idx}.bias"] = torch.from_numpy(np.asarray(bias))
    missing = [n for n, i in CONV_INDEX.items() if f"features.{i}.weight" not in state]
    if missing:
        raise WeightsError(f"{path}: no weights for layers {missing}; is it a Keras VGG16 weights file?")
    return state


# ----------------------------------------------------------------------------- loading
def _read_sidecar(path: Path) -> Preprocess:
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        log.warning("%s has no .json sidecar; assuming torchvision's input convention", path)
        return TORCHVISION
    spec = json.loads(sidecar.read_text())["preprocess"]
    top = spec.get("input_range", [0, 255])[1]
    mean, std = tuple(spec["mean"]), tuple(spec.get("std", [1, 1, 1]))
    if spec.get("channel_order", "RGB").upper() == "BGR" and top > 1:
        return Preprocess("caffe-bgr-0-255", 1.0, mean, std)
    return Preprocess(f"{spec.get('channel_order', 'RGB').lower()}-0-{top}", top / 255.0, mean, std)


def _download_keras(cache: Path) -> Path:
    target = cache / KERAS_FILE
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    log.info("downloading %s", KERAS_URL)
    try:
        with urllib.request.urlopen(KERAS_URL, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WeightsError(
            f"the VGG16 ImageNet weights are not in {cache} and could not be downloaded ({exc}).\n"
            f"Put {KERAS_FILE} (md5 {KERAS_MD5}) or a converted {CONVERTED_FILE} into {cache}/, "
            "or point the config at a weights file: --config weights=PATH/TO/vgg16.pth") from exc
    if file_md5(tmp) != KERAS_MD5:
        tmp.unlink()
        raise WeightsError(f"downloaded {KERAS_FILE} has the wrong md5 (expected {KERAS_MD5}); try again")
    os.replace(tmp, target)
    return target


def _keras_imagenet(cache: Path) -> dict:
    converted = cache / CONVERTED_FILE
    if converted.exists():
        return torch.load(converted, map_location="cpu", weights_only=True)
    h5 = cache / KERAS_FILE
    if not h5.exists():
        h5 = _download_keras(cache)
    elif file_md5(h5) != KERAS_MD5:
        raise WeightsError(f"{h5} has md5 {file_md5(h5)}, expected {KERAS_MD5}; delete it and rerun")
    state = convert_keras_h5(h5)
    tmp = converted.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, converted)
    return state


def load_weights(spec: str, cache_dir: str | os.PathLike = WEIGHTS_CACHE) -> Weights:
    """Resolve a ``weights`` config value to conv weights and their input convention."""
    cache = Path(os.path.expanduser(str(cache_dir)))
    if spec == "keras-imagenet":
        state, pre, name = _keras_imagenet(cache), CAFFE, spec
    elif spec == "torchvision-imagenet":
        try:
            full = torchvision.models.VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except OSError as exc:
            raise WeightsError(f"torchvision could not fetch its VGG16 weights ({exc}); place them in "
                               f"torch's hub cache ({torch.hub.get_dir()}) or use weights=PATH") from exc
        state, pre, name = full, TORCHVISION, spec
    elif spec == "random":
        torch.manual_seed(0)
        full = torchvision.models.vgg16(weights=None).state_dict()
        state, pre, name = {k: v for k, v in full.items() if k.startswith("features.")}, CAFFE, spec
    else:
        path = Path(os.path.expanduser(spec))
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist; give keras-imagenet, "
                               "torchvision-imagenet, random or the path of a .pth/.h5 file")
        if path.suffix == ".h5":
            state, pre = convert_keras_h5(path), CAFFE
        else:
            state, pre = torch.load(path, map_location="cpu", weights_only=True), _read_sidecar(path)
        name = str(path)
    conv = {k: v for k, v in state.items() if k.startswith("features.")}
    head = {k: v for k, v in state.items() if k.startswith("classifier.")}
    return Weights(name, {**conv, **head}, pre, tensor_sha256(conv))


# ----------------------------------------------------------------------------- device
def resolve_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} requested but CUDA is not available; use device: auto or cpu")
    return torch.device(spec)


def cpu_has_bf16() -> bool:
    """Native bf16 matrix units (AVX512-BF16 or AMX): only then is bf16 autocast faster on CPU."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build_vgg16(weights: Weights, device: torch.device) -> torch.nn.Module:
    """torchvision VGG16 with the given weights, eval mode, channels_last, on `device`."""
    # Built on the meta device and given the weights' own tensors: a random initialisation of VGG16's
    # 138 M parameters (~2 s on a CPU, for every job that loads the network) would be thrown away.
    with torch.device("meta"):
        model = torchvision.models.vgg16(weights=None)
    has_head = any(k.startswith("classifier.") for k in weights.state_dict)
    missing, unexpected = model.load_state_dict(weights.state_dict, strict=False, assign=True)
    missing = [m for m in missing if m.startswith("features.") or (has_head and m.startswith("classifier."))]
    if missing or unexpected:
        raise WeightsError(f"weights {weights.name} do not fit VGG16: missing {missing}, unexpected {unexpected}")
    if not has_head:
        model.classifier = None  # conv weights only: the baseline uses pooled pool5 features
    model.eval().requires_grad_(False)
    return model.to(device=device, memory_format=torch.channels_last)
