"""The page of one predicted sample (``<name>.html``, pictures in ``<name>_files/``): its class shares with
intervals, the review queue, per-class galleries sorted by confidence, the model's identity and its validation.

Self-contained HTML (no scripts from elsewhere); every number is the string its CSV holds, so the page and the CSVs
cannot disagree. A small script counts, once the page has loaded, the pictures that did and did not decode
(``data-images-loaded`` / ``data-images-broken`` on <body>): what the browser test reads.
"""
from __future__ import annotations

import html
import os
import shutil
from pathlib import Path

from .io import read_grey
from .quantify import ESTIMATOR_NAMES

THUMBNAIL_SIDE = 160
VALIDATION_FIGURES = ("reliability.png", "share_validation.png")
CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesBroken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
});
</script>"""
STYLE = """<style>
body{font-family:sans-serif;margin:1.5em;max-width:75em} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%} th{background:#eee}
tr.default td{font-weight:bold} figure{display:inline-block;margin:3px;text-align:center;font-size:75%}
figure img{display:block;max-width:160px;max-height:160px} img.figure{max-width:100%}
</style>"""


def _e(value) -> str:
    return html.escape(str(value))


def _table(rows: list[dict], columns: list[str], table_id: str, row_class=None) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(f'<tr class="{row_class(r) if row_class else ""}">'
                   + "".join(f'<td data-column="{_e(c)}">{_e(r.get(c, ""))}</td>' for c in columns) + "</tr>"
                   for r in rows)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def _thumbnails(rows: list[dict], folder: Path) -> dict[str, str]:
    """A small PNG of every classified micrograph (browsers show no TIFF), by file: its path relative to the page."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, r in enumerate(rows):
        image = Image.fromarray(read_grey(r["file"]))
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        path = folder / f"{i:05d}.png"
        image.save(path)
        paths[r["file"]] = path
    return paths


def write_page(paths: dict, rows: list[dict], shares: list[dict], queue: list[dict], unreadable: list[dict], model,
               title: str) -> None:
    page, files = Path(paths["page"]), Path(paths["page_files"])
    if files.exists():
        shutil.rmtree(files)
    thumbs = _thumbnails(rows, files / "thumbnails")
    figures = []
    for name in VALIDATION_FIGURES:  # the bundle's own validation figures, copied: the page travels with its files
        if model.folder_ and (model.folder_ / name).is_file():
            shutil.copy2(model.folder_ / name, files / name)
            figures.append(files / name)
    rel = lambda p: Path(os.path.relpath(p, page.parent)).as_posix()  # noqa: E731
    u = model.uncertainty
    validation, run = u.validation_, u.run_
    identity = [
        ("run deployed", f"{run.get('scheme', '')} / {run.get('balance', '')} / {run.get('method', '')}"),
        ("classes", ", ".join(model.classes)),
        ("trained on", f"{model.trained_on_.get('images', '')} images ({model.trained_on_.get('entries', '')} entries)"),
        ("weights", f"{model.weights_.get('name', '')} (sha256 {str(model.weights_.get('sha256', ''))[:12]}...)"),
        ("model.json sha256", str(run.get("model_sha256", ""))[:16] + "..."),
        ("calibration", f"temperature {u.calibrator_.temperature:.3f}; held-out ECE "
                        f"{validation.get('calibration', {}).get('ece_before', float('nan')):.3f} -> "
                        f"{validation.get('calibration', {}).get('ece_after', float('nan')):.3f}"),
        ("prediction sets", f"coverage {u.settings.coverage:.0%}"
                            f"{' per class' if u.settings.class_conditional else ''}; held-out coverage "
                            f"{validation.get('coverage', [{}])[0].get('coverage', float('nan')):.3f}"),
        ("review flag", f"a set of other than one class, or top probability below {u.settings.review_threshold}"),
        ("default share estimator", f"{ESTIMATOR_NAMES[u.default_estimator]} (lowest validation error among those "
                                    f"whose {u.settings.interval_level:.0%} intervals held the truth at least "
                                    f"{u.settings.required_interval_coverage:.0%} of the time)"),
    ]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>{STYLE}</head><body>",
             f"<h1>{_e(title)}</h1>",
             f"<p id='summary'>{len(rows)} micrographs classified, {len(queue)} flagged for review, "
             f"{len(unreadable)} unreadable.</p>",
             "<h2>Class shares</h2><p>Every estimator, the default first (bold), with its "
             f"{u.settings.interval_level:.0%} interval.</p>",
             _table(shares, ["estimator", "class", "share", "lower", "upper", "default", "images"], "shares",
                    lambda r: "default" if r["default"] == "yes" else ""),
             f"<img class='figure' src='{_e(rel(paths['shares_figure']))}' alt='class shares'>",
             "<h2>Review queue</h2><p>Most doubtful first.</p>",
             _table(queue, ["file", "class", "probability", "set", "doubt", "note"], "review"),
             f"<img class='figure' src='{_e(rel(paths['review_figure']))}' alt='flagged micrographs'>",
             "<h2>Micrographs by predicted class</h2>"]
    for c in model.classes:
        members = sorted((r for r in rows if r["class"] == c), key=lambda r: (-float(r["probability"]), r["file"]))
        parts.append(f"<h3>{_e(c)}: {len(members)}</h3><div class='gallery' data-class='{_e(c)}'>")
        parts += [f"<figure><img src='{_e(rel(thumbs[r['file']]))}' alt='{_e(Path(r['file']).name)}'>"
                  f"<figcaption>{_e(Path(r['file']).name)}<br>{_e(r['probability'])}"
                  f"{' &#9873;' if r['review'] == 'yes' else ''}</figcaption></figure>" for r in members]
        parts.append("</div>")
    if unreadable:
        parts += ["<h2>Unreadable files</h2>", _table(unreadable, ["file", "reason"], "unreadable")]
    parts += ["<h2>The model</h2>", _table([{"what": k, "value": v} for k, v in identity], ["what", "value"], "model")]
    parts += ["<h2>Its validation on held-out folds</h2>"]
    parts += [f"<img class='figure' src='{_e(rel(f))}' alt='{_e(f.stem)}'>" for f in figures]
    parts += [CHECK_IMAGES, "</body></html>"]
    page.write_text("\n".join(parts))
