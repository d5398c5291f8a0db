"""`gzpipe study`: the whole model comparison as one resumable command.

  [synth] -> shard -> train x backbones -> features -> boost x (engines x backbones) -> ensembles -> report

Every stage skips what is finished and current, re-does what is out of date (a run whose inputs changed since it
was built: retrained, re-extracted, refitted) and resumes what was interrupted, so re-running the same command
after a kill carries on. ``force`` re-does the named stages even when they are finished. The configuration is
checked whole before anything runs (``gzpipe.study.config``).
"""

from __future__ import annotations

import os
from pathlib import Path

from gzpipe import runs
from gzpipe.errors import GzpipeError
from gzpipe.study.config import PRESETS, STAGES, StudyConfig, resolve_study, write_resolved

__all__ = ["PRESETS", "STAGES", "StudyConfig", "parse_stages", "resolve_study", "run_study"]


def parse_stages(text: str | None) -> set[str]:
    """``--force train,boost`` (or ``all``) -> the stage names, checked."""
    if not text:
        return set()
    names = {s.strip() for s in text.split(",") if s.strip()}
    if "all" in names:
        return set(STAGES)
    unknown = sorted(names - set(STAGES))
    if unknown:
        raise GzpipeError(f"--force: unknown stage {', '.join(unknown)}; choose from {', '.join(STAGES)} or all")
    return names


def _say(stage: str, msg: str) -> None:
    print(f"[study] {stage}: {msg}", flush=True)


def run_study(cfg: StudyConfig, force: set[str] | None = None) -> dict:
    from gzpipe.boost import BoostConfig, run_boost
    from gzpipe.ensemble import EnsembleConfig, run_ensemble
    from gzpipe.features import FeaturesConfig, run_features
    from gzpipe.report import run_report
    from gzpipe.shard import ShardConfig, run_shard
    from gzpipe.shard.prior import out_of_date
    from gzpipe.stopping import STOP
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    force = force or set()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_resolved(cfg)
    data = cfg.data
    if data.synth is not None:
        from gzpipe.synth import SynthConfig, synth

        raw = out / "synth"
        s = data.synth
        if "synth" not in force and _synth_done(raw, s.n):
            _say("synth", f"{s.n} galaxies already in {raw}")
        else:
            synth(SynthConfig(out=raw, n=s.n, seed=s.seed, workers=cfg.shard.get("workers", 1)))
            _say("synth", f"{s.n} galaxies -> {raw}")
        catalog, images, mapping = raw / "gz2_hart16.csv", raw / "images", raw / "gz2_filename_mapping.csv"
    else:
        def paths(v):
            return [Path(p) for p in v] if isinstance(v, list) else Path(v)

        catalog, images = paths(data.catalog), paths(data.images)
        mapping = Path(data.mapping) if data.mapping else None
    STOP.check()
    shards = out / "shards"
    scfg = ShardConfig(catalog=catalog, images=images, mapping=mapping, out=shards, format=data.format,
                       target=data.target, force="shard" in force, **cfg.shard)
    changed = out_of_date(scfg)
    if changed:
        _say("shard", f"{'; '.join(changed)} since the shards were written; rebuilding them")
        scfg.force = True
    m = run_shard(scfg, force_hint="`gzpipe study --force shard`")
    c, r = m["counts"], m["run"]
    _say("shard", f"kept the finished shards in {shards}" if r["skipped"] else
         f"{c['written']} galaxies in {len(m['shards'])} shards ({r['shards_reused']} reused, {r['shards_written']} "
         f"written), {c['rejected']} rejected -> {shards}")

    trained = []
    for b in cfg.backbones:
        STOP.check()
        d = runs.backbone_dir(out, b)
        mode = None
        if "train" in force:
            mode = "restart"
        elif runs.is_complete(d, runs.BACKBONE) and (changed := runs.changed_data(d)):
            _say("train", runs.stale_message(d, changed, "training it again"))
            mode = "restart"
        tcfg = resolve(b, str(shards), None, out=str(out), mode=mode, **cfg.train)
        if run_train(tcfg, restart_hint="`gzpipe study --force train`") is not None:
            trained.append(tcfg.backbone)
    _say("train", f"{len(trained)} of {len(cfg.backbones)} backbones finished")
    for b in trained:
        STOP.check()
        run_features(FeaturesConfig(backbone=b, out=str(out), workers=cfg.train.get("workers", 2),
                                    force="features" in force), force_hint="`gzpipe study --force features`")
    _say("features", ", ".join(trained))
    from gzpipe.boost import split_boost_section

    for engine in cfg.engines:
        common, params = split_boost_section(cfg.boost, engine_name=engine)
        for b in trained:
            STOP.check()
            d = runs.booster_dir(out, engine, b)
            changed = runs.changed_inputs(d) if runs.is_complete(d, runs.BOOSTER) else []
            if changed:
                _say("boost", runs.stale_message(d, changed, "training it again"))
            run_boost(BoostConfig(engine=engine, backbone=b, out=str(out), force="boost" in force or bool(changed),
                                  params=params, **common), force_hint="`gzpipe study --force boost`")
    _say("boost", f"{len(cfg.engines) * len(trained)} boosters")
    for method in cfg.methods:
        STOP.check()
        members = trained
        if method == "stacked":  # every model this study trained: its backbones and their boosters
            members = trained + [runs.booster_dir(out, e, b).name for e in cfg.engines for b in trained]
        redo = _ensemble_out_of_date(runs.ensemble_dir(out, method), members)
        if redo:
            _say("ensemble", f"ensemble_{method}: {redo}; refitting it")
        run_ensemble(EnsembleConfig(method=method, out=str(out), backbones=trained, members=members,
                                    force="ensemble" in force or bool(redo)),
                     force_hint="`gzpipe study --force ensemble`")
    _say("ensemble", ", ".join(cfg.methods))
    rep = run_report(out)
    _say("report", f"{rep['models']} models -> {rep['dir']}")
    return rep


def _ensemble_out_of_date(d: Path, members: list[str]) -> str:
    """Why a finished ensemble no longer matches this study ("" when it does): its members changed, or their
    predictions did. The study's ensembles are over every model it trained, so either way it is refitted."""
    if not runs.is_complete(d, runs.ENSEMBLE):
        return ""
    changed = runs.changed_inputs(d)
    if changed:
        return "; ".join(changed) + " since it was fitted"
    saved = runs.read_json(d, runs.WEIGHTS).get("models", [])
    if sorted(saved) != sorted(members):
        return f"its members were {', '.join(saved)}, the study's models are {', '.join(members)}"
    return ""


def _synth_done(raw: Path, n: int) -> bool:
    cat = raw / "gz2_hart16.csv"
    if not cat.exists() or not (raw / "synth_params.csv").exists():
        return False
    with open(cat) as f:
        rows = sum(1 for _ in f) - 1
    return rows == n and len(os.listdir(raw / "images")) >= n
