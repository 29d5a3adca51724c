"""Command line: ``python -m drifthelpers {info,run,sweep,data,forensics,render} ...``.

Sub-commands import what they need when they run (the ``forensics`` options are
defined by :mod:`drifthelpers.forensics`, which imports torch). Errors the user can fix (bad file, bad parameter, missing data) print one
clear message and exit with status 2; a failing notebook exits with 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILED = 1


def _cmd_info(args) -> int:
    from .raw import RawError, read_raw

    status = 0
    for path in args.files:
        try:
            image = read_raw(path)
        except RawError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        meta = image.summary()
        if args.json:
            print(json.dumps(meta))
            continue
        wb = meta["wb_gains"]
        print(f"{path}")
        print(f"  camera        {meta['camera'] or '(unknown)'}")
        print(f"  size          {meta['size'][0]} x {meta['size'][1]} (visible area, H x W)")
        print(f"  cfa           {meta['cfa']}")
        print(f"  black level   {', '.join(f'{b:g}' for b in meta['black_level'])} (TL, TR, BL, BR)")
        print(f"  white level   {meta['white_level']:g} ({meta['bit_depth']} bits)")
        print(f"  white balance {'absent' if wb is None else ', '.join(f'{g:.4f}' for g in wb) + ' (R, G, B)'}")
        print(f"  colour matrix {'present' if meta['colour_matrix'] else 'absent'}")
        print(f"  pixel aspect  {meta['pixel_aspect']:.4g}")
    return status


def _parse_overrides(pairs: list[list[str]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs or []:
        out[name] = value
    return out


def _cmd_run(args) -> int:
    from .batch import NotebookFailed, ParameterError, run_notebooks

    try:
        results = run_notebooks(
            select=args.notebooks or None,
            parameters=_parse_overrides(args.param),
            profile=args.profile,
            run_name=args.name,
            runs_dir=args.runs_dir,
            notebook_dir=args.notebook_dir,
            progress=not args.no_progress,
        )
    except (ParameterError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    run_dir = results[0].output.parent
    total = sum(r.seconds for r in results)
    print(f"\nAll {len(results)} notebook(s) ran in {total:.0f} s.")
    print(f"Results: {run_dir}  (executed notebooks, per-notebook JSON, summary.md, summary.json)")
    return 0


def _cmd_sweep(args) -> int:
    from .batch import ParameterError
    from .sweep import SweepError, parse_grid, rerun_failed, run_sweep

    try:
        if args.rerun_failed:
            if args.grid or args.param or args.notebooks or args.name:
                raise SweepError("--rerun-failed takes the sweep's own settings; drop notebooks, --grid, -p and --name")
            result = rerun_failed(
                args.rerun_failed,
                engine=args.engine,
                address=args.address,
                workers=args.workers,
                threads_per_job=args.threads_per_job,
            )
        else:
            result = run_sweep(
                parse_grid(args.grid or []),
                select=args.notebooks or None,
                parameters=_parse_overrides(args.param),
                profile=args.profile,
                name=args.name,
                runs_dir=args.runs_dir,
                notebook_dir=args.notebook_dir,
                engine=args.engine,
                address=args.address,
                workers=args.workers,
                threads_per_job=args.threads_per_job,
                columns=args.columns,
            )
    except (ParameterError, FileNotFoundError) as exc:  # SweepError is a ParameterError
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted: finished jobs are kept; unfinished ones are marked 'interrupted' in sweep.json.\n"
              "continue with: python -m drifthelpers sweep --rerun-failed <the sweep folder printed above>",
              file=sys.stderr)
        return 130
    n_ok = sum(s == "ok" for s in result.statuses.values())
    print(f"\n{n_ok} of {len(result.statuses)} job(s) ok; ran {len(result.ran)} in {result.seconds:.0f} s.")
    print(f"Table: {result.table}  (also results.md, results.json; jobs/ holds each job's notebooks)")
    if result.failed:
        print(f"{len(result.failed)} job(s) failed or did not finish: {', '.join(result.failed)}", file=sys.stderr)
        print(f"re-run them alone with: python -m drifthelpers sweep --rerun-failed {result.sweep_dir}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _cmd_data(args) -> int:
    from . import datasets

    try:
        if args.data_cmd == "mini":
            paths = datasets.ensure_mini(root=args.root, seed=args.seed, rebuild=args.force)
            for name, path in paths.items():
                print(f"{name}: {path}")
        elif args.data_cmd == "download":
            path = datasets.download(args.name, root=args.root)
            print(f"{args.name}: {path}")
        else:  # pragma: no cover - argparse guarantees a sub-command
            raise AssertionError(args.data_cmd)
    except (datasets.DatasetLayoutError, datasets.DownloadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _cmd_render(args) -> int:
    from . import isp

    try:
        out = isp.render_file(args.file, preset=args.preset, output=args.output)
    except Exception as exc:  # every user-facing error of render_file is typed; report it plainly
        from .raw import RawError

        if isinstance(exc, (RawError, ValueError, FileNotFoundError)):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m drifthelpers",
        description="Dataset drift controls with physical data models of optical images.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="print a camera raw file's metadata")
    p.add_argument("files", nargs="+", metavar="FILE", help="raw file(s): DNG, CRW, CR2, NEF, KDC, ...")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("run", help="execute the notebooks headless with papermill")
    p.add_argument("notebooks", nargs="*", help="a selection (e.g. 01 02); all by default")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="parameter override")
    p.add_argument("--profile", default="quick", choices=("quick", "paper"), help="parameter profile")
    p.add_argument("--name", help="run folder name (default: a timestamp)")
    p.add_argument("--runs-dir", help="folder for runs (default: <repo>/runs)")
    p.add_argument("--notebook-dir", help="folder of notebooks to run (default: <repo>/notebooks)")
    p.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "sweep",
        help="run a grid of parameter values as parallel notebook jobs (local processes or Dask)",
        description="Every point of the grid runs the selected notebooks once, as an independent job; "
        "the jobs' JSON results are collected into runs/<name>/results.csv (and .md, .json).",
    )
    p.add_argument("notebooks", nargs="*", help="notebooks each job runs (e.g. 03); all by default")
    p.add_argument("-g", "--grid", action="append", metavar="NAME=V1,V2",
                   help="a swept parameter and its values (repeat for a product grid)")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter fixed for every job")
    p.add_argument("--profile", default="quick", choices=("quick", "paper"), help="parameter profile")
    p.add_argument("--name", help="sweep folder name (default: sweep-<timestamp>)")
    p.add_argument("--runs-dir", help="folder for runs (default: <repo>/runs)")
    p.add_argument("--notebook-dir", help="folder of notebooks (default: <repo>/notebooks)")
    p.add_argument("--engine", default="local", choices=("local", "dask"),
                   help="local worker processes (default) or Dask.distributed")
    p.add_argument("--address", help="Dask scheduler address (tcp://host:8786); default: a LocalCluster")
    p.add_argument("--workers", type=int, help="parallel jobs (default: min(jobs, CPU cores))")
    p.add_argument("--threads-per-job", type=int, help="math threads per job (default: cores / workers)")
    p.add_argument("--columns", action="append", metavar="PATTERN",
                   help="glob of result columns to show in results.md (e.g. '03/*ratio*')")
    p.add_argument("--rerun-failed", metavar="SWEEP_DIR",
                   help="run again, alone, the failed or unfinished jobs of an earlier sweep")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("data", help="build the mini data sets or download the real ones")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    q = dsub.add_parser("mini", help="generate the offline mini data sets (reused when intact)")
    q.add_argument("--root", help="data folder (default: <repo>/data or $DRIFTHELPERS_DATA)")
    q.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    q.add_argument("--force", action="store_true", help="rebuild even when present and intact")
    q.set_defaults(func=_cmd_data)
    q = dsub.add_parser("download", help="fetch a real data set from Zenodo (checksummed)")
    q.add_argument("name", choices=("raw-microscopy", "raw-drone"))
    q.add_argument("--root", help="data folder (default: <repo>/data or $DRIFTHELPERS_DATA)")
    q.set_defaults(func=_cmd_data)

    from .forensics import add_arguments as _forensics_arguments, run_cli as _forensics_run

    p = sub.add_parser("forensics", help="operating envelope of a trained task model (drift forensics)")
    _forensics_arguments(p)
    p.set_defaults(func=_forensics_run)

    p = sub.add_parser("render", help="render a raw file through a static data model")
    p.add_argument("file", help="camera raw file or mini-dataset TIFF")
    p.add_argument("--preset", default="bi,s,ga", help="one of the twelve static data models (default bi,s,ga)")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .tif)")
    p.set_defaults(func=_cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
