"""Prediction on new images: unreadable files, the bundle's input convention, tiny images, exit codes.

One small model bundle is fitted per module through the library (12 synthetic 64 px images,
K = 4, XGBoost), with the weights of the `weights` fixture, so every test runs the real predict path.
"""
import csv
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cntem.backbone import load_weights
from cntem.classify import Classifier, LinearSoftmaxSettings, LogisticSettings, XGBoostSettings
from cntem.cli import main as cntem_main
from cntem.dictionary import VisualDictionary
from cntem.features import ExtractionSettings
from cntem.hypercolumns import extract_shard
from cntem import ActionableError
from cntem.model import Model, ModelMismatchError
from cntem.pooled import PooledHypercolumnEncoder
from cntem.predict import predict_images, prediction_columns
from cntem.shards import HypercolumnStore
from cntem.synthetic import NIOSH_PREFIX, generate_dataset
from cntem.tta import GROUPS, orient
from cntem.uncertainty import Uncertainty, UncertaintySettings
from cntem.vlad import VladEncoder

from conftest import SHARED_WEIGHTS

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
CLASSES = ["Cl", "Fi", "Ma"]
IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory, weights):
    """(model folder, folder of the 12 training images): a model fitted like rule train_model does."""
    root = tmp_path_factory.mktemp("predict")
    images = root / "images"
    generate_dataset(images, {c: 4 for c in CLASSES}, seed=5, size_range=(IMAGE_SIZE, IMAGE_SIZE))
    files = sorted(images.glob("*.tif"))
    entries = [{"id": f.name, "rotation": 0, "path": str(f)} for f in files]
    settings = ExtractionSettings(image_size=IMAGE_SIZE, batch_size=8)
    extract_shard(entries, root / "shard-000.h5", weights, settings, CPU, workers=0, progress=False)
    pairs = [(e["id"], 0) for e in entries]
    class_of_prefix = {NIOSH_PREFIX[c]: c for c in CLASSES}
    y = [class_of_prefix[f.stem.rsplit("-", 1)[0]] for f in files]
    model = Model(VladEncoder(VisualDictionary(4, sample_size=2000, niter=10, seed=0, device="cpu")),
                  Classifier(XGBoostSettings(n_estimators=30, max_depth=2, learning_rate=0.3, colsample_bynode=1.0,
                                             subsample=1.0, early_stopping_rounds=None), CLASSES))
    with HypercolumnStore([root / "shard-000.h5"]) as store:
        model.fit(store, pairs, y, [f.name for f in files])
        proba = model.predict_proba(model.encoder.transform_store(store, pairs))
    # The bundle's uncertainty, here from the model's own training images (the workflow uses out-of-fold ones)
    model.uncertainty = Uncertainty(CLASSES, UncertaintySettings(bootstrap=20)).fit(
        proba, np.array([CLASSES.index(c) for c in y]), [f.name for f in files])
    model.save(root / "model" / "model.json")
    return root / "model", images


@pytest.fixture
def cntem(monkeypatch, capsys):
    """Run ``cntem predict ...`` in this process -> (exit code, stdout, stderr).

    The command points the root logger (and Python warnings) at stderr; that set-up is undone
    after the test, so later tests log as usual.
    """
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)

    def run(*args):
        code = cntem_main(["predict", *map(str, args)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def copy_images(source: Path, names, target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(source / name, target / name)) for name in names]


def damage(folder: Path, like: Path) -> dict[str, Path]:
    """Two unreadable files in `folder`: a TIFF cut short and a PNG that is only a header."""
    truncated = folder / "b_truncated.tif"
    truncated.write_bytes(like.read_bytes()[:300])
    garbage = folder / "d_garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    return {"truncated": truncated, "garbage": garbage}


# ----------------------------------------------------------------------------- point 8
def test_unreadable_files_are_skipped_and_the_others_keep_their_predictions(trained, weights, tmp_path):
    model, images = trained
    bundle = Model.load(model)
    names = sorted(p.name for p in images.glob("*.tif"))[:3]
    good = copy_images(images, names, tmp_path / "batch")
    bad = damage(tmp_path / "batch", like=good[0])
    # Bad files interleaved with good ones inside batches of two: a skipped file must not shift
    # any other file's prediction.
    files = [good[0], bad["truncated"], good[1], bad["garbage"], good[2]]
    rows, unreadable = predict_images(bundle, files, weights, CPU, batch_size=2)
    alone, none_unreadable = predict_images(bundle, good, weights, CPU, batch_size=2)
    assert none_unreadable == []
    assert [r["file"] for r in rows] == [str(f) for f in good]
    assert rows == alone
    assert [u["file"] for u in unreadable] == [str(bad["truncated"]), str(bad["garbage"])]
    assert all(u["reason"] for u in unreadable)


def test_console_lists_unreadable_files_and_counts_only_classified_ones(trained, cntem, tmp_path):
    model, images = trained
    names = sorted(p.name for p in images.glob("*.tif"))[:3]
    good = copy_images(images, names, tmp_path / "batch")
    bad = damage(tmp_path / "batch", like=good[0])
    out = tmp_path / "out" / "predictions.csv"
    code, stdout, stderr = cntem("--model", model, "--out", out, tmp_path / "batch")
    assert code == 0, stderr
    rows = read_csv(out)
    assert [Path(r["file"]).name for r in rows] == names
    assert list(rows[0]) == prediction_columns(CLASSES)
    unreadable = read_csv(out.with_name("predictions_unreadable.csv"))
    assert [Path(u["file"]).name for u in unreadable] == [bad["truncated"].name, bad["garbage"].name]
    assert all(u["reason"] for u in unreadable)
    for path in bad.values():
        assert str(path) in stderr
    assert "3 images classified" in stdout and "2 unreadable" in stdout
    shares = read_csv(out.with_name("predictions_shares.csv"))
    assert sum(int(s["images"]) for s in shares if s["default"] == "yes") == 3


def test_exit_codes(trained, cntem, tmp_path):
    model, images = trained
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    bad = damage(only_bad, like=next(images.glob("*.tif")))
    out = tmp_path / "p.csv"
    code, _, stderr = cntem("--model", model, "--out", out, only_bad)
    assert code == 1
    assert read_csv(out) == [] and len(read_csv(tmp_path / "p_unreadable.csv")) == len(bad)
    assert "no image could be classified" in stderr
    code, _, stderr = cntem("--model", model, "--out", out, tmp_path / "missing")
    assert code == 2 and "missing: no such image or folder" in stderr
    code, _, stderr = cntem("--model", model, "--out", out, next(images.glob("*.tif")))
    assert code == 0 and read_csv(tmp_path / "p_unreadable.csv") == []


def test_a_model_of_pooled_hypercolumns_round_trips_and_sees_what_the_shard_holds(trained, weights, tmp_path):
    """Fitted on the shard's pooled hypercolumns, saved (no dictionary), loaded: its representation is restored,
    and the pooled hypercolumns it computes from the image files are those extraction stored."""
    model_dir, images = trained
    files = sorted(images.glob("*.tif"))
    pairs = [(f.name, 0) for f in files]
    class_of_prefix = {NIOSH_PREFIX[c]: c for c in CLASSES}
    y = [class_of_prefix[f.stem.rsplit("-", 1)[0]] for f in files]
    taps = ExtractionSettings().taps
    model = Model(PooledHypercolumnEncoder(taps), Classifier(LogisticSettings(C_grid=(0.1, 1.0), inner_folds=2),
                                                             CLASSES))
    with HypercolumnStore([model_dir.parent / "shard-000.h5"]) as store:
        with pytest.raises(ValueError, match="taps"):
            PooledHypercolumnEncoder(taps[:2]).fit(store, pairs)
        model.fit(store, pairs, y, [f.name for f in files])
        stored = store.pooled_hypercolumns(pairs)
    model.uncertainty = Model.load(model_dir).uncertainty
    model.save(tmp_path / "pooled" / "model.json")
    assert sorted(p.name for p in (tmp_path / "pooled").iterdir()) == ["classifier.joblib", "model.json",
                                                                      "uncertainty.json"]
    loaded = Model.load(tmp_path / "pooled")
    assert isinstance(loaded.encoder, PooledHypercolumnEncoder) and loaded.encoder.taps == taps
    assert loaded.encoder.dim == stored.shape[1] == 2 * 1472 and loaded.extraction_ == model.extraction_
    np.testing.assert_array_equal(loaded.predict_proba(stored), model.predict_proba(stored))
    x = loaded.encode_images([{"id": f.name, "rotation": 0, "path": str(f)} for f in files], weights, CPU,
                             batch_size=5)  # other batches than the extraction's 8
    np.testing.assert_allclose(x, stored, rtol=1e-5, atol=0)
    rows, _ = predict_images(loaded, files, weights, CPU)
    assert [r["class"] for r in rows] == [CLASSES[i] for i in model.predict_proba(stored).argmax(1)]


def probabilities(rows) -> np.ndarray:
    return np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])


def test_rotation_averaging_is_the_mean_of_the_four_rotations_predictions(trained, weights, cntem, tmp_path):
    """Each file's probabilities are the mean of the model's over the file's four rotations, each through the same
    extraction; an unreadable file among them is listed once and shifts nothing. The console's flag does the same."""
    model_dir, images = trained
    model = Model.load(model_dir)
    good = copy_images(images, sorted(p.name for p in images.glob("*.tif"))[:3], tmp_path / "batch")
    bad = damage(tmp_path / "batch", like=good[0])["truncated"]
    rows, unreadable = predict_images(model, [good[0], bad, *good[1:]], weights, CPU, batch_size=3, averaging="rot4")
    assert [r["file"] for r in rows] == list(map(str, good)) and [u["file"] for u in unreadable] == [str(bad)]
    entries = [{"id": f.name, "rotation": r, "path": str(f)} for f in good for r in GROUPS["rot4"]]
    four = model.predict_proba(model.encode_images(entries, weights, CPU)).reshape(len(good), 4, len(CLASSES))
    calibrate = model.uncertainty.calibrate  # the averaged probabilities are calibrated, as every prediction's
    np.testing.assert_allclose(probabilities(rows), calibrate(four.mean(1)), atol=6e-5)  # the CSV's 4 decimals
    assert [r["class"] for r in rows] == [CLASSES[i] for i in four.mean(1).argmax(1)]
    plain, _ = predict_images(model, good, weights, CPU)
    np.testing.assert_allclose(probabilities(plain), calibrate(four[:, 0]), atol=6e-5)
    assert np.abs(probabilities(plain) - probabilities(rows)).max() > 1e-3  # averaging does change them
    expected = [{k: str(r[k]) for k in prediction_columns(CLASSES)} for r in rows]
    for n, flags in enumerate([["--rotation-averaging"], ["--averaging", "rot4"]]):  # the flag takes no image
        out = tmp_path / f"p{n}.csv"
        code, _, stderr = cntem("--model", model_dir, *flags, *good, "--out", out)
        assert code == 0, stderr
        assert read_csv(out) == expected


@pytest.fixture(scope="module")
def pooled_model(trained):
    """A model of pooled hypercolumns (no pixel sample: its features depend on the network input alone)."""
    model_dir, images = trained
    files = sorted(images.glob("*.tif"))
    class_of_prefix = {NIOSH_PREFIX[c]: c for c in CLASSES}
    model = Model(PooledHypercolumnEncoder(ExtractionSettings().taps), Classifier(LinearSoftmaxSettings(), CLASSES))
    with HypercolumnStore([model_dir.parent / "shard-000.h5"]) as store:
        model.fit(store, [(f.name, 0) for f in files], [class_of_prefix[f.stem.rsplit("-", 1)[0]] for f in files],
                  [f.name for f in files])
    return model


def shown(row) -> dict:
    """A prediction as the CSV shows it (4 decimals)."""
    return {k: row[k] for k in prediction_columns(CLASSES) if k != "file"}


@pytest.mark.parametrize("group", ["rot4", "d8"])
def test_an_image_invariant_under_the_group_gets_the_same_answer_averaged_or_not(trained, pooled_model, weights,
                                                                                 tmp_path, group):
    """An image equal to its own rotations and mirror images is one network input 4 or 8 times: its averaged
    probabilities are those of the image alone. An ordinary image's are not."""
    centre = (IMAGE_SIZE - 1) / 2  # a ring pattern centred on the middle of the pixel grid: symmetric under d8
    radius = np.hypot(*np.meshgrid(np.arange(IMAGE_SIZE) - centre, np.arange(IMAGE_SIZE) - centre))
    ring = (127.5 + 127.5 * np.cos(radius / 3)).astype(np.uint8)
    assert all((orient(ring, o) == ring).all() for o in GROUPS[group])
    Image.fromarray(ring).save(tmp_path / "ring.tif")  # at the network's input size: no resampling either
    ordinary = sorted(trained[1].glob("*.tif"))[0]
    averaged, _ = predict_images(pooled_model, [tmp_path / "ring.tif", ordinary], weights, CPU, averaging=group)
    plain, _ = predict_images(pooled_model, [tmp_path / "ring.tif", ordinary], weights, CPU)
    assert shown(averaged[0]) == shown(plain[0])
    assert shown(averaged[1]) != shown(plain[1])


def test_averaging_makes_the_answer_invariant_under_its_group_only(trained, pooled_model, weights, tmp_path):
    """An image, rotated or mirrored, gets its group-averaged answer unchanged when the group holds that
    transformation (the copies' network inputs are one set): rot4 for rotations, d8 for rotations and mirror images.
    rot4 of a mirror image is another answer, as is the plain prediction of a rotated image."""
    _, images = trained
    grey = np.array(Image.open(sorted(images.glob("*.tif"))[0]))
    assert grey.shape == (IMAGE_SIZE, IMAGE_SIZE)  # no resampling: the copies are exactly the network's inputs
    files = []
    for orientation in (0, 90, 360, 630):
        files.append(tmp_path / f"copy-{orientation}.tif")
        Image.fromarray(np.ascontiguousarray(orient(grey, orientation))).save(files[-1])
    answers = {group: [shown(r) for r in predict_images(pooled_model, files, weights, CPU, averaging=group)[0]]
               for group in ("", "rot4", "d8")}
    assert answers["d8"][1:] == answers["d8"][:1] * 3
    assert answers["rot4"][1] == answers["rot4"][0] and answers["rot4"][2] != answers["rot4"][0]
    assert answers[""][1] != answers[""][0]


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cntem_main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 " in text and " 1 " in text and " 2 " in text
    assert "_unreadable.csv" in text


# Rule `predict` of rules/model.smk alone, on a model folder made beforehand. model.smk also holds
# rule train_model: the names it reads from rules/common.smk are given here, and its input is older
# than the model, so it never runs.
PREDICT_RULE_ALONE = f"""
from snakemake.utils import validate

from cntem.method_space import MethodSpace
from cntem.tta import group_setting

validate(config, "{REPO}/config/schema.yaml", set_default=True)
SPACE = MethodSpace(config)
MODEL_SCHEME = "tiny"
MAIN_STRATEGY, LEARNING_THREADS = "rotate", 1


def model_shards(wildcards):
    return {{}}


def model_params():
    return {{}}


include: "{REPO}/rules/model.smk"
"""


def run_predict_rule(work: Path, model: Path, weights, images: Path):
    if not (work / "Snakefile").exists():
        shutil.copytree(model, work / "results" / "model" / "tiny")
        (work / "results" / "tiny").mkdir()
        (work / "results" / "tiny" / "images.tsv").touch()
        os.utime(work / "results" / "tiny" / "images.tsv", (0, 0))  # older than the model
        (work / "Snakefile").write_text(PREDICT_RULE_ALONE)
    config = {"data": {"dir": str(images)}, "weights": weights.name, "predict": {"input": str(images)}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "snakemake", "results/predictions/predictions.csv", "--forcerun",
                           "predict", "--cores", "1", "--directory", str(work), "--configfile", "config.yaml"],
                          cwd=work, capture_output=True, text=True)


def test_the_predict_rule_keeps_going_past_unreadable_files(trained, weights, tmp_path):
    model, images = trained
    batch = tmp_path / "batch"
    good = copy_images(images, sorted(p.name for p in images.glob("*.tif"))[:2], batch)
    bad = damage(batch, like=good[0])
    work = tmp_path / "work"
    done = run_predict_rule(work, model, weights, batch)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = work / "results" / "predictions"
    assert len(read_csv(out / "predictions.csv")) == 2
    assert [Path(u["file"]).name for u in read_csv(out / "predictions_unreadable.csv")] == \
        [bad["truncated"].name, bad["garbage"].name]
    assert sum(int(s["images"]) for s in read_csv(out / "predictions_shares.csv") if s["default"] == "yes") == 2
    log = (work / "results" / "logs" / "predict.log").read_text()
    assert all(str(path) in log for path in bad.values())
    # With no readable image at all the job fails, and its log says why.
    for path in good:
        path.unlink()
    failed = run_predict_rule(work, model, weights, batch)
    assert failed.returncode != 0
    log = (work / "results" / "logs" / "predict.log").read_text()
    listing = re.search(r"no image could be classified: all 2 files are unreadable \(listed with their reasons in "
                        r"(\S+)\)", log)[1]
    listed = (work / listing).read_text()  # where the message says, after Snakemake removed the failed job's outputs
    assert all(f"{path}: unreadable, not classified (" in listed for path in bad.values())


def test_the_predict_rule_on_an_empty_folder_says_so_without_a_traceback(trained, weights, tmp_path, cntem):
    model, _ = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    work = tmp_path / "work"
    failed = run_predict_rule(work, model, weights, empty)
    log = (work / "results" / "logs" / "predict.log").read_text()
    message = f"no images (.bmp, .jpeg, .jpg, .png, .tif, .tiff) in {empty}; put the images to classify there"
    assert failed.returncode != 0 and message in log and "Traceback" not in log and "faiss.loader" not in log
    code, _, err = cntem("--model", model, "--out", tmp_path / "p.csv", empty)  # the console command: the same
    assert code == 2 and message in err


def test_a_clean_prediction_prints_only_what_the_user_should_read(trained, tmp_path):
    model, images = trained
    done = subprocess.run([sys.executable, "-m", "cntem.cli", "predict", "--model", str(model), "--out",
                           str(tmp_path / "p.csv"), str(sorted(images.glob("*.tif"))[0])], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines()
             if any(word in line for word in ("faiss", "ModuleNotFoundError", "Warning", "not writable"))]
    assert noise == []


def test_the_advice_to_train_a_model_is_a_command_that_runs(trained, weights, tmp_path):
    """Every message that advises training a model names one command, and it plans the model (run dry)."""
    from test_workflow import TINY

    model, _ = trained
    with pytest.raises(ModelMismatchError) as mismatch:
        Model.load(model).check_compatible(weights, taps=["block1_conv2"])
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(ActionableError) as missing:
        Model.load(tmp_path / "nowhere")
    advised = {re.search(r"(snakemake [^)]*?<your config>)", str(e.value))[1] for e in (mismatch, missing)}
    assert len(advised) == 1
    command = advised.pop().replace("<your config>", "my.yaml").replace("<scheme>", "tiny")
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(TINY))
    dry = subprocess.run([sys.executable, "-m", *shlex.split(command), "-n", "-s", str(REPO / "Snakefile")],
                         cwd=tmp_path, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert "rule train_model:" in dry.stdout and "output: results/model/tiny/model.json" in dry.stdout


# ----------------------------------------------------------------------------- point 9
def test_weights_without_their_sidecar_predict_as_the_model_was_trained(trained, weights, tmp_path, caplog):
    model, images = trained
    bundle = Model.load(model)
    bare = tmp_path / "vgg16_no_sidecar.pth"
    if SHARED_WEIGHTS.exists():  # the paper's weights, copied without vgg16_imagenet_caffe.json
        shutil.copy(SHARED_WEIGHTS, bare)
    else:  # the same tensors saved with no sidecar
        torch.save(weights.state_dict, bare)
    without_sidecar = load_weights(str(bare))
    # The trap: same tensors (so the sha256 check passes) but another input convention.
    assert without_sidecar.sha256 == weights.sha256
    assert without_sidecar.preprocess != weights.preprocess
    files = sorted(images.glob("*.tif"))
    with caplog.at_level(logging.WARNING):
        rows, _ = predict_images(bundle, files, without_sidecar, CPU)
    assert rows == predict_images(bundle, files, weights, CPU)[0]
    warning = " ".join(r.getMessage() for r in caplog.records if "input convention" in r.getMessage())
    assert without_sidecar.preprocess.name in warning and weights.preprocess.name in warning


# ----------------------------------------------------------------------------- point 10
def test_images_far_smaller_than_the_network_input_are_flagged(trained, weights, cntem, tmp_path):
    model, images = trained
    batch = tmp_path / "batch"
    normal = copy_images(images, [sorted(p.name for p in images.glob("*.tif"))[0]], batch)[0]
    tiny = batch / "tiny.png"
    Image.fromarray(np.asarray(Image.open(normal).convert("L").resize((20, 20)))).save(tiny)
    out = tmp_path / "p.csv"
    code, _, stderr = cntem("--model", model, "--out", out, batch)
    assert code == 0
    notes = {Path(r["file"]).name: r["note"] for r in read_csv(out)}
    assert "20x20" in notes["tiny.png"] and notes[normal.name] == ""
    assert any("tiny.png" in line and "20x20" in line for line in stderr.splitlines())
