"""Honest model selection: which method to deploy, and what choosing it is worth.

A candidate is a deployable method, named as everywhere (:mod:`cntem.runs`): ``squash-k50/xgboost`` (VLAD of
hypercolumns at K = 50), ``tiles-pooled/logistic`` (the pooled hypercolumns of the tiles). Picking the best of several
methods by their cross-validated accuracy and quoting that accuracy is optimistic: it is the largest of several
noisy estimates. Nested cross-validation estimates the whole procedure instead: in each outer split the candidates
are compared by an inner grouped cross-validation over the outer *training* rows only, and the one chosen is
scored on the outer validation fold, which the choice never saw.

The inner cross-validation reuses the outer split's encoded training rows (the ``vlad.h5`` or
``pooled_hypercolumns.h5`` its classifiers were fitted on): a VLAD dictionary (and PCA) was fitted on the outer
training entries, inner validation rows included, without their labels. That keeps the selection cheap (no
dictionary per inner fold) and leaves the outer validation fold untouched.

Fused candidates (:mod:`cntem.fusion`) are scored like the others, on the same inner folds: an early fusion's
classifier standardises on each inner fold's fitting rows; a late fusion combines its members' probabilities of
each inner validation fold (``mean``), or fits its combiner on the members' out-of-fold probabilities of the inner
fold's fitting rows, from a further grouped split of those rows (``stack``).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from .classify import inner_splitter, prediction_rows
from .config import make_classifier
from .evaluate import fold_metrics, spread
from .fusion import fit_combiner, for_blocks, load_encoded_parts, out_of_fold_probabilities
from .runs import Method
from .schemes import ordered_classes

TIE_RULE = "highest mean accuracy; ties to the higher mean macro-F1, then to the candidate listed first"


def candidate_representations(candidates: list[str]) -> list[str]:
    """The representation names the selection of the methods `candidates` reads (a late fusion: its members'), each
    once, in the order they first appear."""
    return list(dict.fromkeys(m.representation.name for c in candidates for m in Method.parse(c).members))


def training_rows(paths: dict[str, list[str]]):
    """InnerSelection.fit's `train_of` over encoded fold files ({representation name: its file, or its parts'}):
    of each file only the training split is read, so the outer validation rows cannot reach the selection. The rows
    carry ``blocks``, the width of each part (early fusion standardises per block)."""
    def train_of(representation):
        splits, blocks = load_encoded_parts(paths[representation], ("train",))
        return {**splits["train"], "blocks": blocks}

    return train_of


def best_candidate(scores: dict[str, dict], order: list[str]) -> str:
    """The best of `order` by ``scores[name]["accuracy"]`` and ``["macro_f1"]`` (means), by TIE_RULE.

    Scores are compared to 9 decimals, so that means equal on paper (the same counts of right images) tie.
    """
    return min(order, key=lambda n: (-round(scores[n]["accuracy"], 9), -round(scores[n]["macro_f1"], 9),
                                     order.index(n)))


class InnerSelection:
    """Chooses one of `candidates` by a grouped cross-validation over one outer split's training rows only.

    `settings` maps each classifier name to its config section, `stack` holds the stacking combiner's settings
    (``C``, ``inner_folds``, ``seed``: the fusion section). ``fit(train_of, group_of)``: ``train_of(representation)``
    returns the outer split's training rows in that representation (``X``, ``ids``, ``rotations``, ``y``,
    ``blocks``, as ``training_rows`` gives them); every representation must give the same rows in the same order, so
    all candidates meet the same inner folds. The inner folds never split a group (the rotated copies and twins of
    a micrograph stay together) and, like outer validation folds, are scored on original images only
    (rotation 0). Stratified by class where the groups allow (``classify.inner_splitter``, as ``logistic``
    chooses its C).

    After fit: ``scores_`` (per candidate, the accuracy and macro-F1 of each inner fold and their means),
    ``best_`` (by TIE_RULE), ``inner_folds_`` (the ids each inner fold trained on and was scored on),
    ``splitter_`` and ``used_ids_`` (every id the selection read: the leakage check's input).
    """

    def __init__(self, candidates: list[str], settings: dict[str, dict], inner_folds: int = 3, seed: int = 0,
                 device: str = "cpu", threads: int = 1, stack: dict | None = None):
        self.candidates, self.settings, self.stack = list(candidates), settings, stack
        self.inner_folds, self.seed, self.device, self.threads = inner_folds, seed, device, threads

    def fit(self, train_of, group_of: dict) -> "InnerSelection":
        methods = [Method.parse(c) for c in self.candidates]
        fitted = {m.name: m for c in methods for m in c.members}  # what is fitted on the inner folds
        stacked = {m.name for c in methods if c.combiner == "stack" for m in c.members}
        representations = candidate_representations(self.candidates)
        self.used_ids_, reference, proba, out_of_fold = set(), None, {}, {}
        for representation in representations:  # one in memory at a time: at the paper's width each is GBs
            rows = train_of(representation)
            keys = list(zip(rows["ids"], np.asarray(rows["rotations"]).tolist()))
            if reference is None:
                reference, folds = keys, self._inner_folds(rows, group_of)
                ids, y, classes = list(rows["ids"]), np.array(rows["y"]), ordered_classes(rows["y"])
            elif keys != reference:
                raise ValueError(f"{representation}: training rows differ from {representations[0]}'s; candidates "
                                 "must be encodings of the same outer split's plan")
            self.used_ids_ |= set(rows["ids"])
            for method in (m for m in fitted.values() if m.representation.name == representation):
                proba[method.name] = [self._fit_predict(method, rows, train, val, classes, group_of)
                                      for train, val in folds]
                if method.name in stacked:
                    out_of_fold[method.name] = [self._out_of_fold(method, rows, train, classes, group_of)
                                                for train, _ in folds]
        self.scores_ = {}
        for method in methods:
            accuracy, macro_f1 = [], []
            for i, (train, val) in enumerate(folds):
                members = [proba[m.name][i] for m in method.members]
                if method.combiner:
                    stacked_members = [out_of_fold[m.name][i] for m in method.members] if method.combiner == "stack" \
                        else None
                    predicted = fit_combiner(method.combiner, classes, stacked_members, y[train],
                                             self.stack).predict_proba(members)
                else:
                    (predicted,) = members
                metrics = fold_metrics(prediction_rows([ids[j] for j in val], [f"inner{i}"] * len(val), y[val],
                                                       predicted, classes), classes)
                accuracy.append(metrics["accuracy"])
                macro_f1.append(metrics["macro_f1"])
            self.scores_[method.name] = {"accuracy": accuracy, "macro_f1": macro_f1,
                                         "accuracy_mean": float(np.mean(accuracy)),
                                         "macro_f1_mean": float(np.mean(macro_f1))}
        means = {n: {"accuracy": s["accuracy_mean"], "macro_f1": s["macro_f1_mean"]} for n, s in self.scores_.items()}
        self.best_ = best_candidate(means, self.candidates)
        return self

    def _inner_folds(self, rows, group_of):
        ids, y = np.array(rows["ids"]), np.array(rows["y"])
        groups = np.array([group_of[i] for i in ids])
        splitter = inner_splitter(y, groups, self.inner_folds, self.seed)
        if splitter is None:
            raise ValueError(f"{len(set(groups))} training group(s): too few for 2 inner folds")
        original = np.asarray(rows["rotations"]) == 0
        folds = [(train, val[original[val]]) for train, val in splitter.split(np.zeros(len(y)), y, groups)]
        self.splitter_ = type(splitter).__name__
        self.inner_folds_ = [{"train_ids": sorted(set(ids[train])), "val_ids": sorted(set(ids[val]))}
                             for train, val in folds]
        return folds

    def _classifier(self, method, rows, classes):
        return for_blocks(make_classifier(method.classifier, self.settings[method.classifier], classes, self.device,
                                          self.threads), rows["blocks"])

    def _fit_predict(self, method, rows, train, val, classes, group_of) -> np.ndarray:
        """`method` fitted on an inner fold's training rows: its probabilities of the fold's validation rows."""
        classifier = self._classifier(method, rows, classes)
        classifier.fit(rows["X"][train], [rows["y"][i] for i in train], [group_of[rows["ids"][i]] for i in train])
        return classifier.predict_proba(rows["X"][val])

    def _out_of_fold(self, method, rows, train, classes, group_of) -> np.ndarray:
        """`method`'s out-of-fold probabilities of an inner fold's training rows (what stacking fits on)."""
        proba, _ = out_of_fold_probabilities(lambda: self._classifier(method, rows, classes), rows["X"][train],
                                             [rows["y"][i] for i in train], [group_of[rows["ids"][i]] for i in train],
                                             self.stack["inner_folds"], self.stack["seed"])
        return proba

    def describe(self) -> dict:
        return {"candidates": self.candidates, "chosen": self.best_, "tie_rule": TIE_RULE,
                "inner": {"splitter": self.splitter_, "folds": self.inner_folds_, "seed": self.seed},
                "inner_scores": self.scores_}


def plain_scores(comparison: list[dict], scheme: str, balance: str, candidates: list[str]) -> dict[str, dict]:
    """Each candidate's plain cross-validated scores over all images of `scheme` at `balance`, from the comparison
    table's rows (strings)."""
    by_run = {(r["scheme"], r["balance"], r["method"]): r for r in comparison}
    rows = {name: by_run[(scheme, balance, name)] for name in candidates}
    return {name: {"accuracy": float(r["accuracy_mean"]), "macro_f1": float(r["macro_f1_mean"]),
                   "accuracy_std": float(r["accuracy_std"]), "accuracy_repeat_std": float(r["accuracy_repeat_std"])}
            for name, r in rows.items()}


def nested_summary(outer: list[dict], plain: dict[str, dict], candidates: list[str], n_repeats: int) -> dict:
    """One scheme's selection: the nested estimate and the plain winner.

    `outer` holds each outer split's result (InnerSelection.describe() with ``outer``: the chosen candidate's
    accuracy and macro-F1 on the outer validation fold), in split order. ``nested`` is the honest estimate of
    "deploy the candidate with the best grouped-CV accuracy": mean and std over outer splits, std across repeats,
    the choice of every split. ``plain`` is that procedure run on all images: the candidates' plain
    cross-validated scores and the winner (TIE_RULE), which ``model.method: auto`` deploys.
    """
    nested = {name: [o["outer"][name] for o in outer] for name in ("accuracy", "macro_f1")}
    choices = [o["chosen"] for o in outer]
    return {"candidates": candidates, "tie_rule": TIE_RULE, "n_folds": len(outer) // n_repeats, "n_repeats": n_repeats,
            "nested": {**{name: {**spread(v, n_repeats), "folds": v} for name, v in nested.items()},
                       "choices": choices, "choice_counts": dict(Counter(choices))},
            "plain": {"scores": plain, "winner": best_candidate(plain, candidates)}}


NESTED_COLUMNS = ["scheme", "n_candidates", "n_folds", "n_repeats", "nested_accuracy_mean", "nested_accuracy_std",
                  "nested_accuracy_repeat_std", "nested_macro_f1_mean", "nested_macro_f1_std", "choices",
                  "plain_winner", "plain_accuracy_mean", "plain_accuracy_std"]


def nested_row(scheme: str, summary: dict) -> dict:
    """The results/nested.tsv row of one scheme's nested_summary."""
    nested, winner = summary["nested"], summary["plain"]["winner"]
    return {"scheme": scheme, "n_candidates": len(summary["candidates"]), "n_folds": summary["n_folds"],
            "n_repeats": summary["n_repeats"],
            **{f"nested_{name}_{stat}": f"{nested[name][stat]:.6f}" for name, stats in
               (("accuracy", ("mean", "std", "repeat_std")), ("macro_f1", ("mean", "std"))) for stat in stats},
            "choices": " ".join(f"{split}:{choice}" for split, choice in enumerate(nested["choices"])),
            "plain_winner": winner, "plain_accuracy_mean": f"{summary['plain']['scores'][winner]['accuracy']:.6f}",
            "plain_accuracy_std": f"{summary['plain']['scores'][winner]['accuracy_std']:.6f}"}
