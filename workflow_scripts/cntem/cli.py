"""Console command: ``cntem predict --model DIR IMAGE_OR_FOLDER ...``."""
from __future__ import annotations

import argparse
import sys

from . import __version__, log_to


def _predict(args) -> int:
    from .backbone import load_weights, resolve_device
    from .predict import Bundle, list_images, predict_images, write_predictions

    bundle = Bundle(args.model)
    weights = load_weights(args.weights or bundle.meta["weights"], args.weights_cache)
    rows = predict_images(bundle, list_images(args.images), weights, resolve_device(args.device),
                          args.batch_size, progress=True)
    shares = write_predictions(rows, bundle.meta["classes"], args.out)
    print(f"{len(rows)} images classified -> {args.out} (class shares: {shares})")
    for line in open(shares).read().splitlines()[1:]:
        cls, n, share = line.split(",")
        print(f"  {cls:>4}: {int(n):5d} images  {100 * float(share):5.1f}%")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cntem", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cntem {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="classify images with a trained model bundle")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--model", required=True, help="model folder (results/model/<scheme>) or its model.json")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    p.add_argument("--weights", help="VGG16 weights (default: the model's); must match the model's sha256")
    p.add_argument("--weights-cache", default="~/.cache/cntem")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    log_to(None)
    try:
        return _predict(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"cntem: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
