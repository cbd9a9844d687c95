"""Source labels, the class schemes of the paper and its class tree.

A *source label* is what the data says about an image (a NIOSH file-name prefix, a sub-folder
name, or a row of a labels CSV). A *scheme* maps source labels to the classes one experiment
learns; a label the scheme maps to ``None`` is excluded from that experiment (and counted).
The *class tree* gives each class a parent, CNT or NC: the stages of the hierarchical classifier.
"""
from __future__ import annotations

from collections import Counter

# Canonical source labels: the paper's abbreviations.
SOURCE_LABELS = ("Cl", "Fi", "Ma", "MS", "NC", "GS", "SP", "HDP", "PR", "O")

# Spellings accepted for each canonical label (compared case-insensitively, ignoring - _ and spaces).
_ALIASES = {
    "Cl": ["cluster", "clusters", "cntcluster", "cl"],
    "Fi": ["fiber", "fibre", "fibers", "cntfiber", "fi"],
    "Ma": ["matrix", "cntmatrix", "ma"],
    "MS": ["matrixsurface", "cntmatrixsurface", "ms"],
    "NC": ["noncnt", "nc"],
    "GS": ["graphenesheets", "graphenesheet", "graphene", "gs"],
    "SP": ["soot", "sootparticles", "sootparticle", "sp"],
    "HDP": ["highdensityparticles", "highdensityparticle", "hdp"],
    "PR": ["polymerresidue", "polymerresidues", "polymerresiduals", "pr"],
    "O": ["others", "other", "o"],
}
_ALIAS_TO_LABEL = {alias: label for label, aliases in _ALIASES.items() for alias in aliases}

CLASS_NAMES = {
    "Cl": "Cluster", "Fi": "Fiber", "Ma": "Matrix", "MS": "Matrix-Surface", "NC": "Non-CNT",
    "GS": "Graphene Sheets", "SP": "Soot", "HDP": "High-Density Particles", "PR": "Polymer Residue",
    "O": "Others",
}

# The sub-classes of Non-CNT (NC): only a labels CSV can give them (NIOSH names say "NonCNT").
NC_SUBCLASSES = ("GS", "SP", "HDP", "PR", "O")

# The paper's class tree: each canonical label's parent, CNT structures or non-CNT material.
PARENTS = {**{label: "CNT" for label in ("Cl", "Fi", "Ma", "MS")}, **{label: "NC" for label in ("NC", *NC_SUBCLASSES)}}

BUILTIN_SCHEMES: dict[str, dict[str, str | None]] = {
    # The 4 CNT classes; every non-CNT image is left out.
    "4class": {"Cl": "Cl", "Fi": "Fi", "Ma": "Ma", "MS": "MS",
               "NC": None, **{s: None for s in NC_SUBCLASSES}},
    # The 5 major classes: NC sub-classes fold back into NC.
    "5class": {"Cl": "Cl", "Fi": "Fi", "Ma": "Ma", "MS": "MS",
               "NC": "NC", **{s: "NC" for s in NC_SUBCLASSES}},
    # The paper's 8 classes: NC images need a sub-class from a labels file; "Others" is left out
    # as in the paper, and so is an NC image that no labels file gave a sub-class.
    "8class": {"Cl": "Cl", "Fi": "Fi", "Ma": "Ma", "MS": "MS", "GS": "GS", "SP": "SP",
               "HDP": "HDP", "PR": "PR", "NC": None, "O": None},
}


def canonical_label(raw: str) -> str:
    """The canonical form of a source label; labels that are not known aliases pass through."""
    key = "".join(ch for ch in str(raw).lower() if ch not in "-_ ")
    return _ALIAS_TO_LABEL.get(key, str(raw).strip())


def resolve_scheme(name: str, custom: dict | None = None) -> dict[str, str | None]:
    """Label -> class mapping for a built-in scheme name or a custom scheme from the config."""
    custom = custom or {}
    if name in custom:
        return {canonical_label(k): v for k, v in custom[name].items()}
    if name in BUILTIN_SCHEMES:
        return dict(BUILTIN_SCHEMES[name])
    known = sorted(BUILTIN_SCHEMES) + sorted(custom)
    raise ValueError(f"unknown class scheme {name!r}; use one of {known} or define it under custom_schemes")


def ordered_classes(labels) -> list[str]:
    """The distinct class labels in a stable order: the paper's order first, then any others sorted."""
    return scheme_classes({label: label for label in labels})


def scheme_classes(mapping: dict[str, str | None]) -> list[str]:
    """Classes of a scheme in a stable order: the paper's order first, then any others sorted."""
    classes = {c for c in mapping.values() if c is not None}
    ordered = [c for c in SOURCE_LABELS if c in classes]
    return ordered + sorted(classes - set(ordered))


def class_parents(classes) -> dict[str, str]:
    """Each class's parent in the paper's tree (CNT or NC), classes named by any alias of a canonical label.

    Raises ValueError naming the classes without a known parent, and the fix.
    """
    unknown = [c for c in classes if canonical_label(c) not in PARENTS]
    if unknown:
        raise ValueError(f"classes {unknown} have no parent in the class tree (CNT: Cl, Fi, Ma, MS; NC: NC, "
                         f"{', '.join(NC_SUBCLASSES)}): name the scheme's classes by these labels, or use a flat "
                         f"classifier")
    return {c: PARENTS[canonical_label(c)] for c in classes}


def class_tree(classes) -> dict[str, str] | None:
    """Each class's parent when `classes` form a tree worth two stages, else None.

    A tree: every class has a known parent, there are at least 2 parents and one of them holds at least
    2 classes (8class; 5class, whose NC is a parent of one; not 4class, all CNT).
    """
    try:
        parent_of = class_parents(classes)
    except ValueError:
        return None
    sizes = list(Counter(parent_of.values()).values())
    return parent_of if len(sizes) >= 2 and max(sizes) >= 2 else None
