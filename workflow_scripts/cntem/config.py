"""The workflow's configuration: short, actionable validation messages and the checks that span keys.

Snakemake's own validator fills in the schema's defaults; this module runs first, so a bad key is
named in one line (not with the whole schema printed), and a setting that would only fail after
hours of extraction (K above the dictionary sample, a PCA wider than the hypercolumns) fails now.
"""
from __future__ import annotations

import hashlib

import yaml

from .schemes import resolve_scheme
from .vgg16_layers import CONV_CHANNELS


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
    largest_k = max([config["k"], *config["k_values"]])
    if largest_k > dictionary["sample_size"]:
        problems.append(f"dictionary.sample_size: {dictionary['sample_size']} vectors cannot fit K = {largest_k} "
                        f"centroids (k / k_values); raise sample_size (FAISS wants about 40 per centroid, "
                        f"{40 * largest_k}) or lower K")
    width = sum(CONV_CHANNELS[t] for t in hc["taps"])
    if vlad["pca_dim"] is not None and vlad["pca_dim"] > min(width, dictionary["sample_size"]):
        problems.append(f"vlad.pca_dim: {vlad['pca_dim']} exceeds the {width} hypercolumn features of the taps "
                        f"(or dictionary.sample_size {dictionary['sample_size']}); lower it or set it to null")
    return problems


def config_digest(config: dict) -> str:
    """A short fingerprint of the effective config, written beside every metrics row and in config.yaml."""
    text = yaml.safe_dump(config, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
