"""`gzpipe ensemble --method NAME`: one ensemble of finished models, following the re-run contract
(``gzpipe.rerun``): a finished ensemble of the same members is skipped, one of other members is kept (the
differences listed) until ``--force``, and a new one is built beside the old one and swapped in when complete.
Output ``<out>/ensemble_<method>/`` (see ``gzpipe.runs``); its ``inputs.json`` records the members' predictions,
so a retrained member makes it out of date."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gzpipe import rerun, runs
from gzpipe.ensemble import stacked, weighted
from gzpipe.ensemble.members import base_models, check_members, finished_backbones, parse_members
from gzpipe.ensemble.methods import METHODS, WEIGHTED
from gzpipe.errors import GzpipeError
from gzpipe.fileio import check_out_folder, finish_swap, rebuilt, remove_stale_tmp, staging_dir, write_json
from gzpipe.models import parse_backbones

_SAVED = ("method", "models", "weights", "weights_from", "member_val_metrics", "grouping", "shrink", "cv_mae",
          "cv_kaggle_rmse", "weights_fitted_on", "weights_minimise")


@dataclass
class EnsembleConfig:
    method: str
    out: str = "artifacts"
    backbones: list[str] | None = None  # the seed's methods: None = every finished backbone
    members: list[str] | None = None  # stacked: run names (backbones and boosters); None = every finished one
    force: bool = False


def _members(cfg: EnsembleConfig, out: Path) -> list[str]:
    if cfg.method in WEIGHTED:
        used = parse_backbones(cfg.backbones) if cfg.backbones is not None else finished_backbones(out)
        if not used:
            raise GzpipeError(f"no finished backbone in {out} (no <backbone>/{runs.MARKERS[runs.BACKBONE]}); train "
                              "one first")
        check_members(out, used)
        return used
    used = parse_members(out, cfg.members) or base_models(out)
    if len(used) < 2:
        raise GzpipeError(f"the stacked ensemble needs at least 2 finished models in {out}, found {len(used)}; train "
                          "backbones and boosters first")
    return used


def run_ensemble(cfg: EnsembleConfig, force_hint: str | None = None) -> dict:
    """Fit one ensemble (or skip it: see the module docstring); ``force_hint`` is how the caller's user refits a
    finished one (named in the messages)."""
    out = Path(cfg.out)
    if cfg.method not in METHODS:
        raise GzpipeError(f"unknown --method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    check_out_folder(out)
    used = _members(cfg, out)
    name = f"ensemble_{cfg.method}"
    final = runs.ensemble_dir(out, cfg.method)
    finish_swap(final)
    remove_stale_tmp(final)
    if runs.is_complete(final, runs.ENSEMBLE) and not cfg.force:
        changed = runs.changed_inputs(final)
        if changed:
            raise GzpipeError(runs.stale_message(final, changed, (force_hint or f"`gzpipe ensemble --method "
                                                 f"{cfg.method} --force`") + " refits it"))
        saved = runs.read_json(final, runs.WEIGHTS).get("models", [])
        diff = [] if sorted(saved) == sorted(used) else [f"members {', '.join(saved)} -> {', '.join(used)}"]
        rerun.say(rerun.finished_line(name, final, diff, force_hint or "--force"))
        return runs.read_json(final, runs.METRICS)
    if len(used) == 1:
        rerun.say(f"{name}: note: one member ({used[0]}), so the ensemble is that model itself; name more with "
                  "--backbones for a real ensemble")
    if runs.is_complete(final, runs.ENSEMBLE):
        rerun.say(rerun.replacing_line(name, staging_dir(final), final))
    method = weighted if cfg.method in WEIGHTED else stacked
    with rebuilt(final) as staged:  # a fit takes seconds: an interrupted one starts over
        result, preds, ids = (weighted.fit_weighted(out, cfg.method, used) if method is weighted
                              else stacked.fit_stacked(out, used))
        result["members"] = len(used)
        result["tasks_trained"] = _tasks_trained(out, used)
        result["metrics_cover"] = runs.metrics_cover(result["tasks_trained"])
        for split in runs.EVAL_SPLITS:
            runs.write_predictions(staged, split, ids[split], preds[split])
        write_json(staged / runs.WEIGHTS, {k: result[k] for k in _SAVED if k in result})
        write_json(staged / runs.METRICS, {"model": name, **result})
        runs.record_inputs(staged, {f"{b} {split} predictions": runs.predictions_path(out / b, split)
                                    for b in used for split in runs.EVAL_SPLITS})
        runs.mark_complete(staged, runs.ENSEMBLE, f"{name}: test MAE {result['test']['mae']:.5f}")
    print(f"{name} of {', '.join(used) if len(used) <= 5 else f'{len(used)} models'}: test MAE "
          f"{result['test']['mae']:.4f}  accuracy {result['test']['accuracy']:.4f} ({result['test']['galaxies']} test "
          f"galaxies; weights from {result['val']['galaxies']} val galaxies)  {method.summary(result)}", flush=True)
    return result


def load_weights(run_dir: str | Path) -> dict:
    """``{member run name: weight}`` of a finished ensemble (a weight is a number, or 30 per-target numbers)."""
    return runs.read_json(run_dir, runs.WEIGHTS)["weights"]


def _tasks_trained(out: Path, members: list[str]) -> list[str]:
    """The questions any member had training labels for (a member that records none learnt all of them)."""
    from gzpipe import schema

    learnt: set[str] = set()
    for m in members:
        try:
            learnt.update(runs.read_json(Path(out) / m, runs.METRICS).get("tasks_trained") or schema.TASK_SLICES)
        except (OSError, ValueError, GzpipeError):
            learnt.update(schema.TASK_SLICES)
    return [t for t in schema.TASK_SLICES if t in learnt]
