"""Console command: ``cntem predict --model DIR IMAGE_OR_FOLDER ...``."""
from __future__ import annotations

import argparse
import sys

from . import WEIGHTS_CACHE, ActionableError, __version__, log_to
from .features import ExtractionSettings
from .tta import GROUPS

EXIT_CODES = """\
Every image gets calibrated class probabilities, a prediction set (the classes the true one is among at the
bundle's coverage) and a review flag. Beside --out (default predictions.csv) it writes <name>_shares.csv (the
share of each class by every estimator, the default first, with intervals), <name>_review.csv (the flagged
images, most doubtful first), <name>_shares.png, <name>_review.png, the page <name>.html (with <name>_files/)
and <name>_unreadable.csv (file, reason). A file that cannot be decoded is listed
there and on stderr, and the others are still classified. An image far smaller than the network
input is classified with a warning on stderr and in the predictions' note column.

exit status:
  0  at least one image was classified (unreadable files, if any, are listed as above)
  1  no image could be classified: every file was unreadable (the CSV files are still written)
  2  nothing was attempted: bad arguments, no images found, missing weights, or weights or taps
     other than the model's
"""


def _predict(args) -> int:
    from .backbone import load_weights, resolve_device
    from .model import Model
    from .predict import list_images, output_paths, predict_images, require_a_classified_image, write_predictions

    model = Model.load(args.model)
    weights = load_weights(args.weights or model.weights_["name"], args.weights_cache)
    rows, unreadable = predict_images(model, list_images(args.images), weights, resolve_device(args.device),
                                      args.batch_size, progress=True, averaging=args.averaging)
    paths = output_paths(args.out)
    shares = write_predictions(rows, unreadable, model, paths, title=paths["predictions"].stem)
    require_a_classified_image(rows, unreadable, paths["unreadable"])
    print(f"{len(rows)} images classified -> {paths['predictions']} (class shares: {paths['shares']}; "
          f"page: {paths['page']})")
    for share in (s for s in shares if s["default"] == "yes"):
        print(f"  {share['class']:>4}: {share['images']:5d} images  {100 * float(share['share']):5.1f}% "
              f"({100 * float(share['lower']):.1f}-{100 * float(share['upper']):.1f}%, {share['estimator']})")
    flagged = sum(r["review"] == "yes" for r in rows)
    print(f"{flagged} images flagged for review -> {paths['review']}")
    if unreadable:
        print(f"{len(unreadable)} unreadable files not classified -> {paths['unreadable']}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cntem", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cntem {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="classify images with a trained model bundle", epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--model", required=True, help="model folder (results/model/<scheme>) or its model.json")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    p.add_argument("--weights", help="VGG16 weights (default: the model's); must match the model's sha256")
    p.add_argument("--weights-cache", default=WEIGHTS_CACHE)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=ExtractionSettings.batch_size)
    p.add_argument("--averaging", choices=sorted(GROUPS), default="",
                   help="average each image's class probabilities over the image in every orientation of a group: "
                        "rot4 its 90/180/270-degree rotations (4x the network time), d8 those and their mirror "
                        "images (8x)")
    p.add_argument("--rotation-averaging", dest="averaging", action="store_const", const="rot4",
                   help="the same as --averaging rot4")
    args = parser.parse_args(argv)
    log_to(None)
    from .predict import NothingClassifiedError  # imports torch: only now, so that --help stays instant

    try:
        return _predict(args)
    except NothingClassifiedError as exc:
        print(f"cntem: {exc}", file=sys.stderr)
        return 1
    except (ActionableError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"cntem: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
