"""Train any ARMANI stage through one Accelerate engine.

    accelerate launch src/armani/train.py --config default --stage all --output runs/default
    accelerate launch src/armani/train.py --config tiny --stage maskclip --output runs/tiny \\
        train.maskclip.max_steps=50 maskclip.text_layers=2
    accelerate launch src/armani/train.py --config my.yaml --stage vqgan --output runs/x --resume
    accelerate launch src/armani/train.py --config default --variant dalle --stage all \
        --output runs/default-dalle --reuse runs/default

``--config`` is a preset (tiny, default, paper) or a YAML file; ``--variant`` applies a
baseline/ablation switch set (armani, dalle, no_fusion, no_sem1, no_sem2, m6; see
armani.config.VARIANTS); trailing ``section.key=value`` arguments override any field.
``--reuse RUN`` copies the finished stages of another run whose inputs are identical
(e.g. the segmenter and MaskCLIP shared by every variant) instead of training them again.
``--init-from DIR`` (a run or a saved pipeline such as checkpoints/armani) warm-starts every
trained stage from DIR's weights and takes DIR's tokenizer: fine-tuning on your own data.

Real data (``data.source=<folder | saved dataset | parquet | hub id>``, see
docs/REAL_DATA.md) is prepared once before the first stage: photos letterboxed, masks
mapped (``data.label_map``) or predicted (``data.mask_segmenter``), unusable files skipped.
Its data report is printed, and a missing caption column or too few rows for the batch
size stop the run there, before anything trains. ``--stage all`` runs every stage in order and skips the ones
already finished in ``--output``, so a killed run continues with ``--resume``. Plain
``python src/armani/train.py`` works too (one process).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default", help="preset (tiny, default, paper) or a YAML file")
    p.add_argument("--stage", required=True, help="a stage name, a comma-separated list, or 'all'")
    p.add_argument("--output", default=None, help="run directory (default: runs/<config name>)")
    p.add_argument("--variant", default="armani", help="baseline/ablation switches (see armani.config.VARIANTS)")
    p.add_argument("--reuse", default=None, help="copy identical finished stages from this run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of each stage")
    p.add_argument("--init-from", default=None,
                   help="warm-start every trained stage (and take the tokenizer) from this run or saved pipeline")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    return p.parse_intermixed_args(argv)  # overrides may sit before and after flags


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from armani.config import load_config, save_config
    from armani.configuration import ConfigError
    from armani.training import STAGES, Trainer
    from armani.training.stages import ORDER

    try:
        cfg = load_config(args.config, args.overrides, variant=args.variant)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        from armani.configuration import to_dict

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    stages = list(ORDER) if args.stage == "all" else [s.strip() for s in args.stage.split(",")]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        print(f"unknown stage(s) {unknown}; choose from {sorted(STAGES)} or 'all'", file=sys.stderr)
        return 2
    if args.init_from:
        try:
            init_from_checkpoint(cfg, Path(args.init_from), stages)
        except (FileNotFoundError, ValueError) as err:
            print(f"--init-from error: {err}", file=sys.stderr)
            return 2
    if cfg.data.source != "procedural":
        from armani.data.prepare import DataError

        try:
            check_real_data(cfg, stages)
        except DataError as err:
            print(f"data error: {err}", file=sys.stderr)
            return 2
    run_dir = Path(args.output or f"runs/{cfg.name}")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    if args.reuse:
        # Every identical stage, not only the requested ones: they may be inputs of those.
        reuse_finished_stages(cfg, Path(args.reuse), run_dir, list(dict.fromkeys([*ORDER, *stages])))
    for name in stages:
        done = run_dir / name / "final" / "DONE"
        if (args.stage == "all" or args.reuse) and done.is_file():
            print(f"[{name}] already finished in {run_dir}; skipping")
            continue
        if name == "attribute_classifier" and cfg.data.source != "procedural":
            print(f"[{name}] skipped: it learns the procedural dataset's attribute records, which "
                  f"data.source={cfg.data.source} does not have; attribute-based evaluation (part accuracy in "
                  "armani.evaluate) uses a classifier trained with data.source=procedural")
            continue
        stage = STAGES[name](cfg, run_dir)
        trainer = Trainer(stage, seed=cfg.train.seed, mixed_precision=cfg.train.mixed_precision,
                          tracker=cfg.train.tracker, resume=args.resume, audit=cfg.train.audit)
        trainer.train()
        _reset_accelerate()
    from accelerate.state import PartialState

    PartialState().destroy_process_group()
    return 0


def check_real_data(cfg, stages: list[str]) -> dict:
    """Prepare the real training data once (main process first), print its data report and
    fail at once if it cannot train the requested stages. Returns the report."""
    from accelerate.state import PartialState

    from armani.data.prepare import DataError, format_report, prepare_with_report

    state = PartialState()
    with state.main_process_first():
        train, report = prepare_with_report(cfg.data, "train", progress=state.is_main_process)
        prepare_with_report(cfg.data, "val", progress=state.is_main_process)  # None when absent
    if state.is_main_process:
        print(format_report(report))
    need = {name: getattr(cfg.train, name).batch_size * state.num_processes
            for name in stages if name != "attribute_classifier" and hasattr(cfg.train, name)}
    too_big = {name: bs for name, bs in need.items() if len(train) < bs}
    if too_big:
        name, bs = max(too_big.items(), key=lambda kv: kv[1])
        raise DataError(
            f"{cfg.data.source} has {len(train)} usable training rows ({report['rows']} in the source, "
            f"{report['skipped_total']} skipped), fewer than one batch of stage(s) {sorted(too_big)} "
            f"(up to {bs} rows across {state.num_processes} process(es)); add data or lower the batch size, "
            f"e.g. train.{name}.batch_size={max(1, len(train) // state.num_processes)}")
    return report


def init_from_checkpoint(cfg, source: Path, stages: list[str]) -> list[str]:
    """Point ``train.<stage>.init_from`` of every requested stage at ``source``'s weights
    (a run's ``<stage>/final`` or a saved pipeline's component) unless already set, and
    ``data.tokenizer`` at its tokenizer. Returns the stages set."""
    import json

    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder")
    meta = json.loads((source / "pipeline.json").read_text()) if (source / "pipeline.json").is_file() else {}
    done = []
    for name in stages:
        optim = getattr(cfg.train, name, None)
        if optim is None or not hasattr(optim, "init_from") or optim.init_from is not None:
            continue  # no such optimiser section, or the user set init_from already
        shared = meta.get("shared", {}).get(name)
        for folder in (source / shared if shared else source / name, source / name / "final"):
            if (folder / "model.safetensors").is_file():
                optim.init_from = str(folder)
                done.append(name)
                break
    if not done:
        raise FileNotFoundError(f"{source} holds none of the stages {stages} (no <stage>/model.safetensors "
                                "or <stage>/final/model.safetensors)")
    if cfg.data.tokenizer is None and (source / "tokenizer" / "tokenizer.json").is_file():
        cfg.data.tokenizer = str(source / "tokenizer")
    print(f"[init-from] {', '.join(done)} start from {source}" +
          (f"; tokenizer {cfg.data.tokenizer}" if cfg.data.tokenizer else ""))
    return done


def reuse_finished_stages(cfg, source: Path, run_dir: Path, stages: list[str]) -> list[str]:
    """Copy the finished stages of ``source`` whose inputs (config sections, seed) are the
    same as this run's; returns the stages copied. Only the main process copies.

    ``source`` is a training run (``config.yaml``, ``<stage>/final/DONE``) or a saved
    pipeline such as the shipped checkpoint (``pipeline.json``, ``run_config.yaml``,
    ``<stage>/``), so a new run can start from the shipped stage-1 parts.
    """
    import shutil

    from accelerate.state import PartialState

    from armani.config import load_config, stage_fingerprint

    if not PartialState().is_main_process:
        PartialState().wait_for_everyone()
        return []
    saved_pipeline = (source / "pipeline.json").is_file()
    config_file = source / ("run_config.yaml" if saved_pipeline else "config.yaml")
    if not config_file.is_file():
        raise FileNotFoundError(f"--reuse {source}: no {config_file.name} (not a training run or saved pipeline)")
    other = load_config(str(config_file))
    copied = []
    if (source / "tokenizer").is_dir() and other.data == cfg.data and not (run_dir / "tokenizer").exists():
        shutil.copytree(source / "tokenizer", run_dir / "tokenizer")
    for name in stages:
        mine, theirs = stage_fingerprint(cfg, name), stage_fingerprint(other, name)
        src, dst = (source / name) if saved_pipeline else (source / name / "final"), run_dir / name / "final"
        finished = (src / "config.json").is_file() if saved_pipeline else (src / "DONE").is_file()
        if mine is None or mine != theirs or not finished or (dst / "DONE").is_file():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, dirs_exist_ok=True)
        if saved_pipeline:
            (dst / "DONE").write_text(f"reused from {source}\n")
        copied.append(name)
        print(f"[{name}] reused from {source}")
    PartialState().wait_for_everyone()
    return copied


def _reset_accelerate() -> None:
    """Let the next stage build a fresh Accelerator (its state is process-global)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


if __name__ == "__main__":
    sys.exit(main())
