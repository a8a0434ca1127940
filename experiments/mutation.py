"""Record the mutation score of the pure-logic modules from a finished ``mutmut run``.

    nice -n 10 mutmut run --max-children 2          # [tool.mutmut] in pyproject.toml: modules and fast tests
    python -m experiments.mutation                  # writes experiments/results/mutation_<date>.json

mutmut (3.x) keeps each mutant's verdict in ``mutants/<path>.meta``; this module reads those files (mutmut has no
export of per-mutant verdicts with their diffs), groups them by module, and lists every surviving mutant with its
diff and, where one is known, the reason it is equivalent (no test can tell it from the original). A survivor
without a reason is a gap in the tests, and is listed as such.

Score = (killed + timeout) / mutants: a mutant that makes the tests hang is detected too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from experiments._common import header, write_result

GROUPS: dict[str, tuple[str, ...]] = {
    "ensembles/select.py": ("ensembles/select.py",),
    "ensembles/combine.py": ("ensembles/combine.py",),
    "hpo/analysis/guards.py": ("hpo/analysis/guards.py",),
    "hpo/space": ("hpo/space/points.py", "hpo/space/overrides.py", "hpo/space/fit_params.py", "hpo/space/model.py",
                  "hpo/space/discovery.py"),
    "hpo/config": ("hpo/config/checks.py", "hpo/config/schema.py", "hpo/config/loading.py"),
}

_DTYPE_FREE = "the array is float64 already (the function casts its inputs or computes in float64)"
_CLIP_TOP = "a mean of probabilities never exceeds 1, so clipping it at 1 (or 2, or not at all) changes nothing"
_AXIS_2D = "the array is always 2-d here ((candidates, n)), so axis +1 is axis -1"
_RESHAPE = "numpy reads any negative size in reshape as 'the rest', so -2 is -1"
_SHORTCUT = ("the true-class shortcut is an optimisation with the same result (tests check the two agree); "
             "switching it off only costs time")
_SEED = "which fixed seed a bootstrap uses: any seed gives an equally valid, reproducible interval"
_RANGE = "a SearchSpace never holds an empty range (validate_param refuses min == max), so hi > lo always"
_KT_CONDITIONS = "every KerasTuner hyperparameter has a conditions attribute: the getattr default is never used"
_KT_STEP = ("KerasTuner gives a linear Int step 1 when none is given, so this branch (step None for a linear int) "
            "never runs on a real hyperparameter")
_PRESET_ORDER = "a preset's keys are distinct, so sorting its items compares keys only, with or without key="
_KT_EXISTS = ("KerasTuner's _exists(name, conditions=None) reads the current scope's conditions, which are the "
              "declaration's own (hp.conditions)")
_MAX_AGAIN = ("validate_param checks max again, naming the same field with the same message ('must be a finite "
              "number, got ...')")
_FIT_DEFAULT = ("the declared default 1 or none: an override's default is then its own, its first value or the "
                "range's minimum, and 1 is the minimum of the declaration")
_EDGE = "'<=' and '<' differ only for a value exactly 1e-12 outside a bound, which no sampler or config produces"
_LOWER = "scipy lower-cases the method name: 'PERCENTILE' is 'percentile'"
_FLOATS = "the values are floats (or nan): the array is float64 with or without dtype=float"
_VECTORIZED = "scipy gives the same resamples and result whether np.mean is called vectorised or per resample"

# Survivors that no test can kill, by mutant name, with the reason. Names are mutmut's and are stable while the
# function's source is unchanged; each entry is checked against the mutant's diff when recorded.
EQUIVALENT: dict[str, str] = {
    "ensembles.select.x__finish__mutmut_7": _CLIP_TOP,
    "ensembles.select.x__finish__mutmut_12": _CLIP_TOP,
    "ensembles.select.x__loss__mutmut_7": _AXIS_2D,
    "ensembles.select.x__loss__mutmut_16": _AXIS_2D,
    "ensembles.select.xǁ_Scorerǁ__init____mutmut_17": _SHORTCUT,
    "ensembles.select.xǁ_Scorerǁ__init____mutmut_18": _SHORTCUT,
    "ensembles.select.xǁ_Scorerǁ__init____mutmut_20": _SHORTCUT,
    "ensembles.select.xǁ_Scorerǁ__init____mutmut_21": _SHORTCUT,
    "ensembles.select.xǁ_Scorerǁ_head_loss__mutmut_23": _AXIS_2D,
    "ensembles.select.xǁ_Scorerǁ_head_loss__mutmut_35": _AXIS_2D,
    "ensembles.select.xǁ_Scorerǁ_head_loss__mutmut_52": _RESHAPE,
    "ensembles.select.xǁ_Scorerǁ_head_loss__mutmut_56": "y reshaped (n, d) broadcasts against (m, n, d) as (1, n, d) does",
    "ensembles.select.xǁ_Scorerǁ_head_loss__mutmut_61": _RESHAPE,
    "ensembles.select.xǁ_Scorerǁloss_adding_each__mutmut_16": "with k == 0 the counts are all zero: counts @ t is the "
                                                               "zeros the else branch gives",
    "ensembles.select.xǁ_Scorerǁloss_adding_each__mutmut_17": "k >= 0 always holds; with k == 0, counts @ t is zeros "
                                                               "anyway",
    "ensembles.select.xǁ_Scorerǁloss_adding_each__mutmut_33": _CLIP_TOP,
    "ensembles.select.xǁ_Scorerǁloss_adding_each__mutmut_38": _CLIP_TOP,
    "ensembles.select.xǁ_Scorerǁloss_adding_each__mutmut_39": _AXIS_2D,
    "ensembles.select.xǁ_Scorerǁloss_adding_each__mutmut_45": "with k == 0 the counts are all zero: the tensordot is "
                                                               "the zeros the else branch gives",
    "ensembles.select.xǁ_Scorerǁloss_adding_each__mutmut_53": "k >= 0 always holds; with k == 0 the tensordot is "
                                                               "zeros anyway",
    "ensembles.select.x_top_k__mutmut_5": "ranked indices are distinct, so each count goes from 0 to 1 either way",
    "ensembles.select.x_greedy__mutmut_21": "allowed is only used as a mask (flatnonzero, truth of allowed[i]): "
                                            "float ones select the same members as bool ones",
    "ensembles.select.x_greedy__mutmut_23": "allowed is only used as a mask (flatnonzero, truth of allowed[i]): "
                                            "float ones select the same members as bool ones",
    "ensembles.select.x_greedy__mutmut_73": "g >= floor + 1e-12 and g > floor + 1e-12 differ only when a guard loss "
                                            "is exactly floor + 1e-12, which a mean of log-probabilities or error "
                                            "counts does not hit",
    "ensembles.select.x_greedy__mutmut_80": "c <= current - 1e-12 and c < current - 1e-12 differ only when a loss is "
                                            "exactly current - 1e-12",
    "ensembles.combine.x_pooled_log_probs__mutmut_10": _RESHAPE,
    "ensembles.combine.x_pooled_log_probs__mutmut_19": _CLIP_TOP,
    "ensembles.combine.x_pooled_log_probs__mutmut_28": _CLIP_TOP,
    "ensembles.combine.x_combine_regression__mutmut_19": _RESHAPE,
    "ensembles.combine.x_combine_regression__mutmut_3": "the weights are float64, so the weighted sum is float64 and "
                                                        "exact whatever the predictions' dtype",
    "ensembles.combine.x_combine_regression__mutmut_5": "the weights are float64, so the weighted sum is float64 and "
                                                        "exact whatever the predictions' dtype",
    "ensembles.combine.x_fit_temperature__mutmut_14": "scipy's minimize_scalar uses the bounded method whenever bounds "
                                                      "are given and method is None",
    "ensembles.combine.x_fit_temperature__mutmut_17": "scipy's minimize_scalar uses the bounded method whenever bounds "
                                                      "are given and no method is named",
    "ensembles.combine.x_fit_temperature__mutmut_23": "scipy lower-cases the method name: 'BOUNDED' is 'bounded'",
    "hpo.space.model.xǁParamǁdeclare_on__mutmut_52": "KerasTuner lower-cases sampling: 'LOG' is 'log'",
    "hpo.space.model.xǁParamǁdeclare_on__mutmut_54": "KerasTuner lower-cases sampling: 'LINEAR' is 'linear'",
    "hpo.space.model.xǁParamǁfrom_kerastuner__mutmut_10": _KT_CONDITIONS,
    "hpo.space.model.xǁParamǁfrom_kerastuner__mutmut_13": _KT_CONDITIONS,
    "hpo.space.model.xǁParamǁfrom_kerastuner__mutmut_73": _KT_STEP,
    "hpo.space.model.xǁParamǁfrom_kerastuner__mutmut_74": _KT_STEP,
    "hpo.space.model.xǁParamǁfrom_kerastuner__mutmut_75": _KT_STEP,
    "hpo.space.model.xǁParamǁfrom_kerastuner__mutmut_77": _KT_STEP,
    "hpo.space.model.xǁParamǁfrom_kerastuner__mutmut_78": _KT_STEP,
    "hpo.space.model.xǁParamǁfrom_kerastuner__mutmut_81": "KerasTuner sets an Int's or Float's default to its minimum "
                                                            "when none is given, so hp.default is never None here",
    "hpo.space.model.xǁParamǁsnap__mutmut_8": "the assertion never fails for a validated numeric parameter (both "
                                               "bounds set), so 'and' and 'or' pass alike",
    "hpo.space.discovery.x_discover__mutmut_17": _PRESET_ORDER,
    "hpo.space.discovery.x_discover__mutmut_19": _PRESET_ORDER,
    "hpo.space.discovery.x_discover__mutmut_43": "clear_session's free_memory only decides whether gc.collect() runs",
    "hpo.space.discovery.x_discover__mutmut_44": "clear_session's free_memory only decides whether gc.collect() runs",
    "hpo.space.discovery.xǁ_DiscoveryHPǁ_retrieve__mutmut_2": _KT_EXISTS,
    "hpo.space.discovery.xǁ_DiscoveryHPǁ_retrieve__mutmut_4": _KT_EXISTS,
    "hpo.space.discovery.xǁ_DiscoveryHPǁ_retrieve__mutmut_8": "_exists(name, conditions) is true only when a declaration "
                                                              "with those conditions exists, so next() always finds one",
    "hpo.space.overrides.x__range__mutmut_12": _MAX_AGAIN,
    "hpo.space.overrides.x__range__mutmut_13": _MAX_AGAIN,
    "hpo.config.schema.x_build_section__mutmut_24": "only the closest match (close[0]) is shown, however many are found",
    "hpo.config.schema.x_build_section__mutmut_26": "only the closest match (close[0]) is shown, however many are found",
    "hpo.space.overrides.x_accepted__mutmut_49": "a value equal to the lower bound is on the grid (every grid starts "
                                                 "there), so it is accepted before this branch",
    "hpo.space.overrides.x_apply_overrides__mutmut_19": "only the closest match (close[0]) is shown, however many are "
                                                        "found",
    "hpo.space.overrides.x_apply_overrides__mutmut_20": "only the closest match (close[0]) is shown, however many are "
                                                        "found",
    "hpo.space.fit_params.x_fit_param__mutmut_10": _FIT_DEFAULT,
    "hpo.space.fit_params.x_fit_param__mutmut_16": _FIT_DEFAULT,
    "hpo.space.model.xǁParamǁcontains__mutmut_28": "the assertion never fails for a validated numeric parameter (both "
                                                   "bounds set), so 'and' and 'or' pass alike",
    "hpo.space.model.xǁParamǁcontains__mutmut_34": _EDGE,
    "hpo.space.model.xǁParamǁcontains__mutmut_35": _EDGE,
    "hpo.space.model.xǁParamǁcontains__mutmut_49": "math.isclose's default rel_tol is 1e-9, the value given",
    "hpo.config.checks.x__one_of__mutmut_8": "only the closest match (close[0]) is shown, however many are found",
    "hpo.config.checks.x__one_of__mutmut_9": "only the closest match (close[0]) is shown, however many are found",
    # hpo/analysis/guards.py
    "hpo.analysis.guards.x_bootstrap_mean__mutmut_15": _VECTORIZED,
    "hpo.analysis.guards.x_bootstrap_mean__mutmut_22": _VECTORIZED,
    "hpo.analysis.guards.x_bootstrap_mean__mutmut_26": _VECTORIZED,
    "hpo.analysis.guards.x_bootstrap_mean__mutmut_25": _LOWER,
    "hpo.analysis.guards.x_paired_tie__mutmut_16": _VECTORIZED,
    "hpo.analysis.guards.x_paired_tie__mutmut_23": _VECTORIZED,
    "hpo.analysis.guards.x_paired_tie__mutmut_27": _VECTORIZED,
    "hpo.analysis.guards.x_paired_tie__mutmut_26": _LOWER,
    "hpo.analysis.guards.x_check_study__mutmut_43": _FLOATS,
    "hpo.analysis.guards.x_check_study__mutmut_45": _FLOATS,
    "hpo.analysis.guards.x_check_study__mutmut_50": _FLOATS,
    "hpo.analysis.guards.x_check_study__mutmut_52": _FLOATS,
    "hpo.analysis.guards.x_check_study__mutmut_54": "np.array(..., dtype=float) turns None into nan, the default given",
    "hpo.analysis.guards.x_check_study__mutmut_56": "np.array(..., dtype=float) turns None into nan, the default given",
    "hpo.analysis.guards.x_check_study__mutmut_207": _SEED,
    "hpo.analysis.guards.x_check_study__mutmut_221": _SEED,
    "hpo.analysis.guards.x_check_study__mutmut_223": _SEED,
    "hpo.analysis.guards.x_per_example__mutmut_24": _RESHAPE,
    "hpo.analysis.guards.x_per_example__mutmut_30": _RESHAPE,
    "hpo.analysis.guards.x_per_example__mutmut_54": "one-hot labels are (n, C): axis +1 is axis -1",
    "hpo.analysis.guards.x_per_example__mutmut_70": "astype(None) is astype(float64)",
    "hpo.analysis.guards.x_per_example__mutmut_72": "class logits are (n, C): axis +1 is axis -1",
    "hpo.analysis.guards.x_encode__mutmut_43": _RANGE,
    "hpo.analysis.guards.x_encode__mutmut_47": _RANGE,
    "hpo.analysis.guards.x_encode__mutmut_48": _RANGE,
    "hpo.analysis.guards.x_encode__mutmut_50": "the list holds Python floats: the array is float64 either way",
    "hpo.analysis.guards.x_encode__mutmut_52": "the list holds Python floats: the array is float64 either way",
    "hpo.analysis.guards.x_regret_bound__mutmut_18": "sign * array is float whatever the array's dtype",
    "hpo.analysis.guards.x_regret_bound__mutmut_20": "sign * array is float whatever the array's dtype",
    "hpo.analysis.guards.x_regret_bound__mutmut_57": "the upper clip never binds: int(n * top_ratio) <= n for "
                                                     "top_ratio <= 1, and min(min_top, n) <= n",
    "hpo.analysis.guards.x__ensemble_check__mutmut_50": "predict_members' probabilities come from combine, which clips "
                                                        "them at 1e-12 already",
    "hpo.analysis.guards.x__ensemble_check__mutmut_51": _CLIP_TOP,
    "hpo.analysis.guards.x__ensemble_check__mutmut_56": _CLIP_TOP,
    "hpo.analysis.guards.x__ensemble_check__mutmut_93": _SEED,
    "hpo.analysis.guards.x_regret_bound__mutmut_112": "normalize_y=False is scikit-learn's default",
    "hpo.analysis.guards.x_regret_bound__mutmut_115": "the targets are standardised just above (mean 0, sd 1), so "
                                                      "normalize_y=True divides by 1 and subtracts 0",
    "hpo.analysis.guards.x_statistical_error__mutmut_53": "only the standard error is returned, and it does not depend "
                                                          "on the confidence level",
}


# Survivors a test could kill but that are left, by mutant name, with the reason (they count against the score).
_UNUSED_DEFAULT = "a default the study never uses: it always passes this argument (guards.n_bootstrap, study.seed)"
_STREAM = ("which random stream the tie test draws: only a borderline pair of trials tells, and then by chance; "
           "the study always passes a seed")
_GP_SAME = ("the GP fit reaches the same hyperparameters (another start, restart count, candidate count or a bound "
            "it does not touch) on the pinned history, so the pinned bound does not move; a history that pushes the "
            "fit against that bound would tell")
_RESTARTS = ("an unseeded GP: its optimizer restarts from random points, which reach the same optimum on the tested "
             "histories; only a history with several optima tells, and then by chance")
LEFT: dict[str, str] = {
    "hpo.config.loading.x_from_dict__mutmut_4": "the top level's name, '' or None: the same paths and messages; only "
                                               "a config that is not a mapping, given to from_dict, tells",
    "hpo.space.discovery.x_discover__mutmut_23": "break instead of continue on a preset already tried: no builder in "
                                                 "the tests queues one preset twice",
    "hpo.space.discovery.x_discover__mutmut_24": "presets already tried are not remembered: no builder in the tests "
                                                 "queues one preset twice",
    "hpo.analysis.guards.x_check_study__mutmut_1": _UNUSED_DEFAULT,
    "hpo.analysis.guards.x_check_study__mutmut_3": _UNUSED_DEFAULT,
    "hpo.analysis.guards.x_statistical_error__mutmut_2": _UNUSED_DEFAULT,
    "hpo.analysis.guards.x_check_study__mutmut_4": "51 instead of 50 tie candidates: only a study of 52+ trials with a "
                                                  "tie at rank 51 tells",
    "hpo.analysis.guards.x_statistical_error__mutmut_1": "1001 instead of 1000 resamples moves the standard error in "
                                                        "its third digit: only a pinned value tells",
    "hpo.analysis.guards.x_check_study__mutmut_220": "a third instead of half the resamples for a tie test: only a "
                                                     "borderline pair of trials tells",
    "hpo.analysis.guards.x_paired_tie__mutmut_17": _STREAM,
    "hpo.analysis.guards.x_paired_tie__mutmut_24": _STREAM,
    "hpo.analysis.guards.x_paired_tie__mutmut_28": _STREAM,
    "hpo.analysis.guards.x_paired_tie__mutmut_20": "scipy's default 9999 resamples instead of the ones asked for: only a "
                                                   "borderline pair of trials tells",
    "hpo.analysis.guards.x_paired_tie__mutmut_22": "BCa instead of percentile intervals: only a borderline pair of "
                                                   "trials tells",
    "hpo.analysis.guards.x_regret_bound__mutmut_2": _GP_SAME,
    "hpo.analysis.guards.x_regret_bound__mutmut_4": "min_top 21 instead of 20: the pinned history has 12 trials, "
                                                    "all of them top trials either way",
    "hpo.analysis.guards.x_regret_bound__mutmut_86": _GP_SAME,
    "hpo.analysis.guards.x_regret_bound__mutmut_87": _GP_SAME,
    "hpo.analysis.guards.x_regret_bound__mutmut_93": _GP_SAME,
    "hpo.analysis.guards.x_regret_bound__mutmut_96": _GP_SAME,
    "hpo.analysis.guards.x_regret_bound__mutmut_97": _GP_SAME,
    "hpo.analysis.guards.x_regret_bound__mutmut_103": _GP_SAME,
    "hpo.analysis.guards.x_regret_bound__mutmut_105": _GP_SAME,
    "hpo.analysis.guards.x_regret_bound__mutmut_114": _GP_SAME,
    "hpo.analysis.guards.x_regret_bound__mutmut_116": _GP_SAME,
    "hpo.analysis.guards.x_regret_bound__mutmut_109": _RESTARTS,
    "hpo.analysis.guards.x_regret_bound__mutmut_113": _RESTARTS,
    "hpo.analysis.guards.x_regret_bound__mutmut_73": "with identical values there are no objective units to scale by: "
                                                     "any scale is as right as 1",
}


def _diff(name: str, path: str) -> list[str]:
    """The mutant's changed lines (``-`` original, ``+`` mutant)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    try:
        text = get_diff_for_mutant(name, path=path)
    except Exception as exc:  # an index that no longer matches the source: say so rather than guess
        return [f"(diff unavailable: {exc!r})"]
    return [line for line in text.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def collect(root: Path) -> dict[str, Any]:
    """Per module group: counts, score, and the survivors with their diffs and reasons."""
    from mutmut.stats import status_by_exit_code

    out: dict[str, Any] = {}
    for group, paths in GROUPS.items():
        counts = {"mutants": 0, "killed": 0, "timeout": 0, "survived": 0, "no_tests": 0, "not_checked": 0, "other": 0}
        survivors = []
        for path in paths:
            meta = json.loads((root / "mutants" / f"{path}.meta").read_text())
            for name, code in sorted(meta["exit_code_by_key"].items()):
                status = status_by_exit_code[code]
                counts["mutants"] += 1
                key = {"killed": "killed", "timeout": "timeout", "survived": "survived", "no tests": "no_tests",
                       "not checked": "not_checked"}.get(status, "other")
                counts[key] += 1
                if key in ("survived", "no_tests"):
                    survivors.append({"mutant": name, "status": status, "diff": _diff(name, path),
                                      "equivalent": EQUIVALENT.get(name), "left_because": LEFT.get(name)})
        detected = counts["killed"] + counts["timeout"]
        equivalent = sum(1 for s in survivors if s["equivalent"])
        out[group] = {**counts, "files": list(paths), "score": detected / counts["mutants"],
                      "equivalent": equivalent,
                      "score_without_equivalent": detected / max(counts["mutants"] - equivalent, 1),
                      "survivors": survivors}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--wall-min", type=float, default=None, help="wall minutes the mutmut runs took (recorded)")
    args = ap.parse_args(argv)
    import mutmut
    import tomllib

    cfg = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["mutmut"]
    modules = collect(Path("."))
    total = {k: sum(m[k] for m in modules.values()) for k in ("mutants", "killed", "timeout", "survived", "no_tests",
                                                                "not_checked", "equivalent")}
    total["score"] = (total["killed"] + total["timeout"]) / total["mutants"]
    result = {
        **header("experiments.mutation", argv),
        "settings": {"tool": f"mutmut {mutmut.__version__}", "run": "nice -n 10 mutmut run --max-children 2",
                     "tests": cfg["pytest_add_cli_args_test_selection"], "mutated": cfg["only_mutate"],
                     "wall_min": args.wall_min, "target_score": 0.85},
        "modules": modules, "total": total,
    }
    path = write_result(args.out, f"mutation_{time.strftime('%Y-%m-%d')}", result)
    for group, m in modules.items():
        print(f"{group:24s} {m['mutants']:5d} mutants  score {m['score']:.1%}  survived {m['survived']}"
              f" (equivalent {m['equivalent']})  no tests {m['no_tests']}  not checked {m['not_checked']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
