"""Shared fixtures: small synthetic images and the VGG16 weights used by the tests."""
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_WEIGHTS = REPO.parent / "shared" / "weights" / "vgg16_imagenet_caffe.pth"


def write_image(path: Path, seed: int, size=(48, 40), depth: int = 8, fmt: str | None = None) -> Path:
    """A random grey image; 8-bit or 16-bit, TIFF unless another suffix is given."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint8 if depth == 8 else np.uint16
    top = 255 if depth == 8 else 60000
    data = rng.integers(0, top, size=(size[1], size[0]), dtype=dtype)
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, data)
    else:
        Image.fromarray(data).save(path, format=fmt)
    return path


@pytest.fixture
def folder_dataset(tmp_path):
    """Class sub-folders: Cl, Fi, Ma with 6 images each (TIFF 8/16-bit, PNG, JPEG, BMP)."""
    root = tmp_path / "data"
    formats = [".tif", ".png", ".jpg", ".bmp", ".tif", ".tif"]
    for c, cls in enumerate(["Cl", "Fi", "Ma"]):
        for i, suffix in enumerate(formats):
            write_image(root / cls / f"img{i}{suffix}", seed=100 * c + i, depth=16 if i == 5 else 8)
    return root


@pytest.fixture(scope="session")
def weights():
    """The paper's weights when ../shared is present (CI, developers), else a seeded random init."""
    from cntem.backbone import load_weights

    return load_weights(str(SHARED_WEIGHTS) if SHARED_WEIGHTS.exists() else "random")


def copy_checkout(dest: Path) -> Path:
    """The workflow's files as a user's checkout has them, so commands run from its root as the README says."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "rules", "config", "workflow_scripts", "report", "envs", "profiles"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, dest / name)
    (dest / "results").mkdir(exist_ok=True)
    return dest


@pytest.fixture
def checkout(tmp_path):
    return copy_checkout(tmp_path / "checkout")
