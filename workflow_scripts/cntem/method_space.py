"""Which runs a config asks for: the cross-validated runs, the figures' panels, the selection's candidates and the
deployed method, as values of the grammar (:mod:`cntem.runs`). The workflow's rules only turn these into paths.

What runs, per scheme (the paper's protocol first, then what the config adds beyond it):

- every balance strategy: the paper's method (VLAD at ``k`` with XGBoost) and its baseline (the top layer with the
  linear softmax), in the main input mode (``hypercolumns.input_mode``);
- at the main balance strategy (``rotate`` when it runs): the K study (every classifier at every K of ``k_values``)
  and, with ``representations.pooled``, every classifier on the pooled hypercolumns;
- in each further input mode (``representations.input_modes``), at the main balance strategy: every classifier on
  VLAD at ``k`` and on the pooled hypercolumns (when on), and the baseline;
- fusion (``fusion.methods``), at the main balance strategy: each early or late fusion named, and the single methods
  it fuses (a late fusion's members, an early fusion's representations each with its classifier);
- test-time averaging (``evaluation.rotation_averaging``): every run above at a balance strategy it names is
  evaluated a second time with its probabilities averaged over ``evaluation.averaging_group`` (the four rotations,
  rot4, or with their mirror images, d8), from the same fold jobs (a late fusion: of its members' averaged
  probabilities).

The classifiers of a scheme are ``classifiers`` less ``hierarchical`` where the scheme's classes form no tree.
"""
from __future__ import annotations

from .runs import BASELINE_CLASSIFIER, Method, Run
from .schemes import class_tree, resolve_scheme, scheme_classes


class MethodSpace:
    """The runs, candidates and deployed method of a schema-valid config (defaults filled in)."""

    def __init__(self, config: dict):
        self.config = config
        self.schemes = list(config["schemes"])
        self.strategies = list(config["balance"]["strategies"])
        self.main_balance = "rotate" if "rotate" in self.strategies else self.strategies[0]
        self.k = config["k"]
        self.k_values = sorted(set(config["k_values"]) | {self.k})
        self.pooled = config["representations"]["pooled"]
        self.main_mode = config["hypercolumns"]["input_mode"]
        self.other_modes = [m for m in config["representations"]["input_modes"] if m != self.main_mode]
        self.input_modes = [self.main_mode, *self.other_modes]
        averaging = config["evaluation"]["rotation_averaging"]
        self.averaged_balances = self.strategies if averaging is True else list(averaging or [])
        self.averaging_group = config["evaluation"]["averaging_group"]
        self.model_scheme = config["model"]["scheme"] or self.schemes[0]
        self.fusions = [Method.parse(name) for name in config["fusion"]["methods"]]

    # ------------------------------------------------------------------ methods
    def paper_method(self, input_mode: str | None = None) -> Method:
        """VLAD of hypercolumns at ``k`` with XGBoost (the paper's method)."""
        return Method.of(input_mode or self.main_mode, "vlad", "xgboost", self.k)

    def baseline(self, input_mode: str | None = None) -> Method:
        """VGG16's pooled top layer with a linear softmax (the paper's baseline)."""
        return Method.of(input_mode or self.main_mode, "top", BASELINE_CLASSIFIER)

    def has_tree(self, scheme: str) -> bool:
        """Whether a scheme's classes form a tree (the hierarchical classifier's stages)."""
        return class_tree(scheme_classes(resolve_scheme(scheme, self.config["custom_schemes"]))) is not None

    def scheme_classifiers(self, scheme: str) -> list[str]:
        """The classifiers a scheme is cross-validated with: hierarchical only where its classes form a tree (on
        4class it would be its base classifier again)."""
        return [c for c in self.config["classifiers"] if c != "hierarchical" or self.has_tree(scheme)]

    def k_study(self, scheme: str) -> list[Method]:
        """Every classifier at every K, in the main input mode (ESI Fig. S1/S2), K first."""
        return [Method.of(self.main_mode, "vlad", c, k) for k in self.k_values for c in self.scheme_classifiers(scheme)]

    def _main_balance_methods(self, scheme: str) -> list[Method]:
        """The plain methods of a scheme run at the main balance strategy only, beside the paper's pair."""
        methods = self.k_study(scheme)
        classifiers = self.scheme_classifiers(scheme)
        if self.pooled:
            methods += [Method.of(self.main_mode, "pooled", c) for c in classifiers]
        for mode in self.other_modes:
            methods += [Method.of(mode, "vlad", c, self.k) for c in classifiers]
            methods += [Method.of(mode, "pooled", c) for c in classifiers] if self.pooled else []
            methods.append(self.baseline(mode))
        fusions = self.scheme_fusions(scheme)
        return list(dict.fromkeys(methods + [m for f in fusions for m in f.fused_singles] + fusions))

    def scheme_fusions(self, scheme: str) -> list[Method]:
        """The fusions (fusion.methods) cross-validated on a scheme: those whose classifiers it has (hierarchical only
        where its classes form a tree)."""
        return [f for f in self.fusions
                if self.has_tree(scheme) or all(m.classifier != "hierarchical" for m in f.members)]

    # ------------------------------------------------------------------ runs
    def plain_runs(self, scheme: str) -> list[Run]:
        """A scheme's runs without test-time averaging: what the fold jobs fit."""
        runs = {Run(scheme, b, m) for b in self.strategies for m in (self.paper_method(), self.baseline())}
        runs |= {Run(scheme, self.main_balance, m) for m in self._main_balance_methods(scheme)}
        return sorted(runs)

    def runs(self) -> list[Run]:
        """Every cross-validated run of every scheme: the plain ones and, at each averaged balance strategy, each of
        them averaged over the averaging group."""
        runs = []
        for scheme in self.schemes:
            plain = self.plain_runs(scheme)
            runs += plain + [Run(r.scheme, r.balance, r.method.averaged(self.averaging_group))
                             for r in plain if r.balance in self.averaged_balances]
        return sorted(runs)

    def main_panels(self, scheme: str) -> list[Run]:
        """The paper's main comparison (Fig. 8, 9, 11): each balance strategy x (the baseline, the paper's method)."""
        return [Run(scheme, b, m) for b in self.strategies for m in (self.baseline(), self.paper_method())]

    # ------------------------------------------------------------------ selection and the deployed model
    def all_candidates(self, scheme: str) -> list[Method]:
        """Every plain method cross-validated on a scheme at the main balance strategy, in the order ties are broken
        by: the paper's first, then the K study's (K, then classifier), the pooled hypercolumns', those of each
        further input mode, the fusions. The baseline is no candidate: a model cannot deploy it."""
        methods = [self.paper_method(), *self._main_balance_methods(scheme)]
        return list(dict.fromkeys(m for m in methods if m.deployable))

    def candidates(self, scheme: str) -> list[Method]:
        """The candidates of a scheme's selection, in the order ties are broken by: selection.candidates (those
        cross-validated on the scheme, e.g. no hierarchical on 4class) or all_candidates."""
        wanted = self.config["selection"]["candidates"]
        available = self.all_candidates(scheme)
        return available if wanted is None else [m for m in map(Method.parse, wanted) if m in available]

    def nested_schemes(self) -> list[str]:
        """Schemes whose selection runs: every scheme with selection.nested, the model's with model.method auto."""
        if self.config["selection"]["nested"]:
            return self.schemes
        return [self.model_scheme] if self.auto_model else []

    @property
    def auto_model(self) -> bool:
        return self.config["model"]["method"] == "auto"

    def model_candidates(self) -> list[Method]:
        """The methods the model may deploy: the configured one, or with model.method auto the model scheme's
        candidates (the job picks the plain-CV winner)."""
        if self.auto_model:
            return self.candidates(self.model_scheme)
        name = self.config["model"]["method"]
        return [Method.parse(name) if name else self.paper_method()]

    def problems(self) -> list[str]:
        """selection.candidates that name no cross-validated run or leave a nested scheme none, and a model.method
        that names no deployable cross-validated method: stopped when the workflow loads, not after extraction."""
        problems = [f"fusion.methods: {f.name!r} is no fusion (early: representations joined by '+' with one "
                    "classifier; late: a combiner, e.g. squash-k50+tiles-pooled/mean-logistic)"
                    for f in self.fusions if not f.is_fused]
        for fusion in self.fusions:
            missing = [m for m in fusion.representation.input_modes if m not in self.input_modes]
            if missing:
                problems.append(f"fusion.methods: {fusion.name!r} needs input mode(s) {', '.join(missing)}, which "
                                "are not extracted; add them to representations.input_modes")
        runs = {m.name for s in self.schemes for m in self.all_candidates(s)}
        for name in self.config["selection"]["candidates"] or []:
            if name not in runs:
                problems.append(f"selection.candidates: {name!r} is not cross-validated at the main balance strategy; "
                                f"candidates: {', '.join(sorted(runs))}")
        for scheme in (s for s in self.nested_schemes() if not self.candidates(s)):
            problems.append(f"selection.candidates: none is cross-validated on scheme {scheme!r}")
        name = self.config["model"]["method"]
        if name not in (None, "auto"):
            try:
                method = Method.parse(name)
            except ValueError as exc:
                problems.append(f"model.method: {exc}")
            else:
                if method.averaging or not method.deployable:
                    problems.append(f"model.method: {name!r} cannot be deployed: a model is made of VLAD or pooled "
                                    "representations, without test-time averaging (predict.rotation_averaging "
                                    "averages at prediction time)")
                missing = [m for m in method.representation.input_modes if m not in self.input_modes]
                if missing:
                    problems.append(f"model.method: {name!r} is in input mode {', '.join(missing)}, which is not "
                                    f"extracted; set hypercolumns.input_mode or add it to representations.input_modes")
        return problems
