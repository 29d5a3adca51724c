"""``python -m drifthelpers forensics``: the operating envelope of a saved task model, from the command line.

Importing this module loads neither torch nor numba (the command line builds its parser from
:func:`add_arguments`); :func:`run_cli` loads the data, the task model and
:mod:`drifthelpers.forensics` when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .profiles import NAMES

__all__ = ["add_arguments", "run_cli", "cli_main"]


class _UsageError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``forensics`` command's options to ``parser``."""
    parser.add_argument("--dataset", default="microscopy", choices=("microscopy", "drone"),
                        help="data set (default microscopy)")
    parser.add_argument("--profile", default="quick", choices=NAMES,
                        help="training profile of the task model, as in notebook 03 (default quick)")
    parser.add_argument("--preset", default="bi,s,ga",
                        help="static view the task model was trained on; must be <bi|ma|me>,s,ga (default bi,s,ga)")
    parser.add_argument("--split", type=int, default=0, help="split index (default 0)")
    parser.add_argument("--subset", default="test", choices=("test", "val", "val+test"),
                        help="images the envelope is measured on (default test)")
    parser.add_argument("--intensity", type=float, default=1.0, help="light level of the raw data (default 1.0)")
    parser.add_argument("--source", default="mini", choices=("mini", "zenodo"),
                        help="mini data sets (generated offline) or the downloaded Zenodo release (default mini)")
    parser.add_argument("--data-root", help="data folder (default: <repo>/data or $DRIFTHELPERS_DATA)")
    parser.add_argument("--cache-dir", help="checkpoint cache (default: <data root>/cache/checkpoints)")
    parser.add_argument("--checkpoint", help="a task-model state dict (torch.save) to use instead of the cache")
    parser.add_argument("--train", action="store_true", help="train the task model when it is not in the cache")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="allowed drop of the metric below the reference (default 0.05)")
    parser.add_argument("--points", type=int, default=8, help="grid points per side and axis (default 8)")
    parser.add_argument("--refine", type=int, default=4, help="bisection steps at each edge (default 4)")
    parser.add_argument("--search-steps", type=int, default=0,
                        help="also search each group (this many evaluations) and add paths toward the most "
                             "harmful settings found (default 0 = fixed axes only)")
    parser.add_argument("--lam", type=float, default=0.0, help="λ of those searches (default 0)")
    parser.add_argument("-o", "--output", default="envelope.json", help="JSON specification (default envelope.json)")
    parser.add_argument("--json", action="store_true", help="print the JSON specification instead of the table")
    return parser


def _check_args(args) -> str:
    """Everything that can be checked before touching data; returns the demosaic method."""
    from .isp import parse_preset

    try:
        demosaic, sharp, denoise = parse_preset(args.preset)
    except ValueError as exc:
        raise _UsageError(str(exc)) from exc
    if (sharp, denoise) != ("s", "ga"):
        raise _UsageError(f"the parametrized data model reproduces '<demosaic>,s,ga' views only; got {args.preset!r}")
    if not 0 <= args.tolerance < 1:
        raise _UsageError(f"--tolerance must be in [0, 1), got {args.tolerance}")
    if args.points < 1 or args.refine < 0 or args.search_steps < 0 or not args.lam >= 0 or not args.intensity > 0:
        raise _UsageError("need --points >= 1, --refine >= 0, --search-steps >= 0, --lam >= 0, --intensity > 0")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise _UsageError(f"--checkpoint {args.checkpoint}: no such file")
    if Path(args.output).is_dir():
        raise _UsageError(f"--output {args.output} is a folder; give a file name such as envelope.json")
    return demosaic


def _dataset(args):
    """The raw data set the arguments name."""
    from . import datasets

    try:
        if args.source == "mini":
            path = datasets.ensure_mini(root=args.data_root, which=args.dataset, progress=False)[args.dataset]
        else:
            path = datasets.dataset_dir(args.dataset, args.data_root, source="zenodo")
        cls = datasets.RawMicroscopy if args.dataset == "microscopy" else datasets.RawDrone
        return cls(path, intensity=args.intensity)
    except (datasets.DatasetLayoutError, ValueError) as exc:
        raise _UsageError(str(exc)) from exc


def _checkpoint_model(args, ds, config):
    """The task model of ``--checkpoint`` and the split of ``--split``."""
    import numpy as np
    import torch

    from .datasets import stratified_split
    from .models import build_task_model

    ckpt = Path(args.checkpoint)
    model = build_task_model(config.model, num_classes=len(getattr(ds, "classes", [])) or 1)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        state = state.get("task", state) if isinstance(state, dict) else state
        model.load_state_dict(state)
    except Exception as exc:
        raise _UsageError(f"--checkpoint {ckpt}: not a {config.model} state dict ({exc})") from exc
    parts = stratified_split(np.asarray(ds.targets), config.fractions, seed=config.seed + args.split,
                             groups=getattr(ds, "frames", None))
    return model, (parts[0], parts[1], parts[2] if len(parts) > 2 else parts[1])


def _cached_model(args, ds, config):
    """The task model notebook 03 trained (from the checkpoint cache, or trained with ``--train``) and its split."""
    from . import synthesis
    from .training import CheckpointCache, config_key

    tc = synthesis.train_config(config, args.preset, args.split, synthesis.data_fingerprint(ds, config))
    cache = CheckpointCache(args.cache_dir or synthesis.default_cache_dir())
    if not cache.has(config_key(tc)) and not args.train:
        raise _UsageError(f"no cached task model for {args.dataset}/{args.profile}/{args.preset}/split "
                          f"{args.split} in {cache.root}; run notebook 03, or pass --train or --checkpoint")
    model, _, parts = synthesis.trained_model(ds, config, preset=args.preset, split=args.split,
                                              cache_dir=args.cache_dir)
    return model, parts


def _load_problem(args):
    """The :class:`~drifthelpers.forensics.ForensicsProblem` the arguments describe."""
    import numpy as np
    import torch

    from .forensics import ForensicsProblem
    from .isp import CameraParams, ParametrizedDataModel
    from .profiles import settings
    from .synthesis import SynthesisConfig

    demosaic = _check_args(args)
    config = SynthesisConfig(dataset=args.dataset, intensity=args.intensity,
                             **settings("synthesis", args.profile, args.dataset))
    if not 0 <= args.split < config.n_splits:
        raise _UsageError(f"--split must be in 0..{config.n_splits - 1} for the {args.profile} profile")
    ds = _dataset(args)
    model, parts = _checkpoint_model(args, ds, config) if args.checkpoint else _cached_model(args, ds, config)
    idx = {"test": parts[2], "val": parts[1], "val+test": np.concatenate([parts[1], parts[2]])}[args.subset]
    raw = torch.stack([ds[int(i)]["raw"] for i in idx])
    if config.task == "classification":
        targets = torch.as_tensor([int(ds.targets[int(i)]) for i in idx])
    else:
        targets = torch.stack([ds[int(i)]["mask"] for i in idx])
    dm = ParametrizedDataModel(CameraParams.from_dataset_camera(ds.camera), demosaic=demosaic)
    return ForensicsProblem(dm, model, raw, targets, image_size=config.image_size, task=config.task)


def _envelope(args, problem) -> dict:
    """The envelope specification, with paths toward the harmful settings that ``--search-steps`` finds."""
    from .envelope import envelope_axes, operating_envelope
    from .forensics import gradient_search

    harmful, searches = {}, []
    if args.search_steps:
        for g in problem.groups:
            r = gradient_search(problem, g, lam=args.lam, steps=args.search_steps)
            searches.append(r.to_dict())
            if r.drop > args.tolerance:
                harmful[g] = r.state
    axes = envelope_axes(problem.data_model, harmful)
    spec = operating_envelope(problem, tolerance=args.tolerance, axes=axes, points=args.points, refine=args.refine)
    spec["source"] = {k: getattr(args, k) for k in ("dataset", "source", "profile", "preset", "split", "subset",
                                                    "intensity", "checkpoint", "search_steps", "lam")}
    spec["n_images"] = len(problem.raw)
    if searches:
        spec["searches"] = searches
    return spec


def run_cli(args: argparse.Namespace) -> int:
    """Run the envelope for parsed arguments (see :func:`add_arguments`); 0 ok, 2 usage error."""
    from .envelope import envelope_table
    from .forensics import save_json

    try:
        problem = _load_problem(args)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = _envelope(args, problem)
    try:
        out = save_json(spec, args.output)
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(spec, indent=1, default=float) if args.json else envelope_table(spec))
    print(f"wrote {out}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``python -m drifthelpers forensics ...``: the operating envelope of a saved task model.

    Prints the envelope table and writes the JSON specification; clear errors exit with 2.
    """
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m drifthelpers forensics",
        description="Operating envelope of a trained task model over the data model's parameters."))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own message
        return int(exc.code or 0)
    return run_cli(args)
