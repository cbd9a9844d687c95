"""The workflow's configuration: short, actionable validation messages and the checks that span keys.

Snakemake's own validator fills in the schema's defaults; this module runs first, so a bad key is
named in one line (not with the whole schema printed), and a setting that would only fail after
hours of extraction (K above the dictionary sample, a PCA wider than the hypercolumns) fails now.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

import yaml

from .schemes import class_parents, resolve_scheme, scheme_classes
from .features import CONV_CHANNELS, VIEW_ALIGN, VIEW_MODES

# K-means' fewest training vectors per centroid (FAISS's own minimum, below which it warns that the centroids
# are poorly estimated): dictionary.sample_size must give every K this many.
MIN_POINTS_PER_CENTROID = 39


def schema_problems(config: dict, schema: dict) -> list[str]:
    """Every way `config` breaks `schema`, one line each: where, what, and what is allowed."""
    import jsonschema

    problems = []
    errors = jsonschema.Draft202012Validator(schema).iter_errors(config)
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in error.absolute_path) or "top level"
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            unknown = sorted(set(error.instance) - set(allowed))
            problems.append(f"{where}: unknown key {', '.join(map(repr, unknown))}; known keys: {', '.join(allowed)}")
        else:
            problems.append(f"{where}: {error.message}")
    return problems


def consistency_problems(config: dict) -> list[str]:
    """Checks across keys of a schema-valid config with its defaults filled in."""
    problems = []
    for name in config["schemes"]:
        try:
            resolve_scheme(name, config["custom_schemes"])
        except ValueError as exc:
            problems.append(f"schemes: {exc}")
    model_scheme = config["model"]["scheme"]
    if model_scheme is not None and model_scheme not in config["schemes"]:
        problems.append(f"model.scheme: {model_scheme!r} is not one of schemes {config['schemes']}")
    problems += hierarchical_problems(config)
    averaged = config["evaluation"]["rotation_averaging"]
    unknown = sorted(set(averaged) - set(config["balance"]["strategies"])) if isinstance(averaged, list) else []
    if unknown:
        problems.append(f"evaluation.rotation_averaging: {unknown} not in balance.strategies "
                        f"{config['balance']['strategies']}; list strategies that run, or give true for all")
    demo = config["demo"]
    if demo["enabled"]:
        low, high = demo["size_range"]
        if low > high:
            problems.append("demo.size_range: the first value must not exceed the second")
        if not demo.get("counts"):
            problems.append("demo.counts: give the number of images per class when demo.enabled is true")
    hc, dictionary, vlad = config["hypercolumns"], config["dictionary"], config["vlad"]
    if int(hc["density"] * hc["image_size"] ** 2) < 1:
        problems.append(f"hypercolumns.density: {hc['density']} of {hc['image_size']}^2 pixels samples no pixel; "
                        "raise density or image_size")
    if hc["input_mode"] in VIEW_MODES and hc["image_size"] % VIEW_ALIGN:
        problems.append(f"hypercolumns.image_size: {hc['image_size']} must be a multiple of {VIEW_ALIGN} for input_mode "
                        f"{hc['input_mode']} (views are cut at VGG16's block-5 stride); use e.g. 224")
    if hc["input_mode"] in VIEW_MODES and hc["max_side"] < hc["image_size"]:
        problems.append(f"hypercolumns.max_side: {hc['max_side']} is below one view ({hc['image_size']} px); raise it")
    largest_k = max([config["k"], *config["k_values"]])
    if dictionary["sample_size"] < MIN_POINTS_PER_CENTROID * largest_k:
        problems.append(f"dictionary.sample_size: {dictionary['sample_size']} vectors are too few for K = {largest_k} "
                        f"centroids (k / k_values): K-means needs at least {MIN_POINTS_PER_CENTROID} per centroid; "
                        f"raise sample_size to {MIN_POINTS_PER_CENTROID * largest_k} or more, or lower K")
    width = sum(CONV_CHANNELS[t] for t in hc["taps"])
    if vlad["pca_dim"] is not None and vlad["pca_dim"] > min(width, dictionary["sample_size"]):
        problems.append(f"vlad.pca_dim: {vlad['pca_dim']} exceeds the {width} hypercolumn features of the taps "
                        f"(or dictionary.sample_size {dictionary['sample_size']}); lower it or set it to null")
    return problems


def hierarchical_problems(config: dict) -> list[str]:
    """The hierarchical classifier's settings and class tree, when some run or the model uses it: a scheme whose
    classes have no known parent fails now, not after extraction."""
    from .classify import settings_for

    fusions = set().union(*(named_classifiers(name) for name in config["fusion"]["methods"]))
    if "hierarchical" in config["classifiers"] or "hierarchical" in fusions:
        schemes = config["schemes"]
    elif "hierarchical" in named_classifiers(config["model"]["method"]):
        schemes = [config["model"]["scheme"] or config["schemes"][0]]
    else:
        return []
    problems = []
    try:
        settings_for("hierarchical", config["hierarchical"])
    except ValueError as exc:
        problems.append(f"hierarchical.base_settings: {exc}")
    for name in (s for s in schemes if s in config["custom_schemes"]):  # every built-in scheme's class has a parent
        try:
            class_parents(scheme_classes(config["custom_schemes"][name]))
        except ValueError as exc:
            problems.append(f"hierarchical on scheme {name!r}: {exc}")
    return problems


def named_classifiers(name: str | None) -> set[str]:
    """The classifiers a method name (e.g. model.method, a fusion) fits, its members' included: none for auto or a name
    that is no method (MethodSpace says why); the paper's XGBoost for null."""
    from .runs import Method

    if name is None:
        return {"xgboost"}  # the paper's method
    try:
        return {single.classifier for single in Method.parse(name).fused_singles}
    except ValueError:
        return set()


# ------------------------------------------------------------------ config sections -> library objects
# The one place where config key names meet the library's explicit arguments.
def make_extraction(section: dict, batch_size: int | None = None):
    """ExtractionSettings from (the part of) the `hypercolumns` section that changes what is extracted."""
    from .features import ExtractionSettings

    settings = ExtractionSettings(tuple(section["taps"]), section["density"], section["image_size"],
                                  section["input_mode"], section["max_side"], section["seed"])
    return settings if batch_size is None else replace(settings, batch_size=batch_size)


def make_dictionary(k: int, dictionary: dict, pca: dict, device: str = "auto"):
    """A VisualDictionary from the `dictionary` section and `vlad.pca_dim` / `vlad.pca_whiten`."""
    from .dictionary import VisualDictionary

    return VisualDictionary(k, sample_size=dictionary["sample_size"], niter=dictionary["niter"],
                            nredo=dictionary["nredo"], max_points_per_centroid=dictionary["max_points_per_centroid"],
                            seed=dictionary["seed"], pca_dim=pca["pca_dim"], pca_whiten=pca["pca_whiten"],
                            device=device)


def make_encoder(representation, settings: dict, taps, device: str = "auto"):
    """The encoder of a model's `representation` (cntem.runs.Representation): the pooled hypercolumn of `taps`, or
    VLAD at its K over a dictionary yet to fit, from `settings` {"dictionary": the `dictionary` section, "vlad":
    the `vlad` section}."""
    if representation.kind == "pooled":
        from .pooled import PooledHypercolumnEncoder

        return PooledHypercolumnEncoder(taps)
    if representation.kind != "vlad":
        raise ValueError(f"{representation.name}: a model encodes VLAD or pooled hypercolumns")
    from .backbone import resolve_device
    from .vlad import VladEncoder

    vlad = settings["vlad"]
    return VladEncoder(make_dictionary(representation.k, settings["dictionary"], vlad, device), vlad["power_norm"],
                       resolve_device(device))


def make_classifier(name: str, section: dict, classes: list[str], device: str = "cpu", threads: int = 1):
    """A Classifier `name` (xgboost, random_forest, adaboost, linear_softmax, logistic, hierarchical) from its
    config section."""
    from .classify import Classifier, settings_for

    return Classifier(settings_for(name, section), classes, device, threads)


def config_digest(config: dict) -> str:
    """A short fingerprint of the effective config, written beside every metrics row and in config.yaml."""
    text = yaml.safe_dump(config, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
