"""Command line: ``python -m drifthelpers {info,run,sweep,data,forensics,render,student,book,repository} ...``.

Building the parser imports neither torch nor numba (the options are defined here and,
for ``forensics``, in :mod:`drifthelpers.cli_forensics`, which imports no torch either);
sub-commands import what they need when they run, so ``--help`` and ``--version`` answer at once.

Exit status: 0 success; 1 a notebook or sweep job failed; 2 an error the user can fix
(bad file, bad parameter, missing data, an existing output, a file-system error such
as a read-only folder), printed as one ``error:`` line; 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys

from .cli_forensics import add_arguments as add_forensics_arguments
from .profiles import NAMES as PROFILE_NAMES

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _error(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


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
    from .batch import ParameterError

    out: dict[str, str] = {}
    for name, value in pairs or []:
        if name in out:
            raise ParameterError(f"-p {name} is given twice ({out[name]!r} and {value!r}); give it once")
        out[name] = value
    return out


def _cmd_run(args) -> int:
    import logging

    from .batch import NotebookFailed, ParameterError, RunInterrupted, run_notebooks

    # papermill logs a dead kernel or a failed cell as an error; the command reports it once itself
    logging.getLogger("papermill").addHandler(logging.NullHandler())
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
    except (ParameterError, FileNotFoundError, FileExistsError) as exc:
        return _error(exc)
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RunInterrupted as exc:
        logging.getLogger("asyncio").disabled = True  # the cancelled kernel's tasks, collected at exit
        print(f"\ninterrupted: the run stopped; {exc.run_dir / 'summary.json'} (and summary.md) "
              "list what finished and are marked 'interrupted'.", file=sys.stderr)
        return EXIT_INTERRUPTED
    run_dir = results[0].output.parent
    total = sum(r.seconds for r in results)
    print(f"\nAll {len(results)} notebook(s) ran in {total:.0f} s.")
    print(f"Results: {run_dir}  (executed notebooks, per-notebook JSON, summary.md, summary.json)")
    return 0


def _pool_sweep(sweep_dir) -> None:
    """A sweep of notebook 03: pool its jobs' units into one set of intervals (drifthelpers.sweep_pool)."""
    from pathlib import Path

    from .sweep import load_manifest
    from .sweep_pool import NOTEBOOK, pool_synthesis

    if not any(Path(nb).stem == NOTEBOOK for nb in load_manifest(sweep_dir)["notebooks"]):
        return
    try:
        pooled = pool_synthesis(sweep_dir)
    except (ValueError, KeyError, TypeError) as exc:  # a record it cannot read: the jobs' own results stand
        print(f"notebook 03's jobs were not pooled ({type(exc).__name__}: {exc}); each job's results are in "
              f"{Path(sweep_dir) / 'records'}", file=sys.stderr)
        return
    for kind, entry in pooled["data_sets"].items():
        print(f"Notebook 03, {kind}: " + (f"{entry['units']} units pooled over the jobs" if entry["pooled"]
                                          else f"not pooled: {entry['reason']}")
              + f"  ({Path(sweep_dir) / 'pooled_03.md'})")


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
    except (ParameterError, FileNotFoundError, FileExistsError) as exc:  # SweepError is a ParameterError
        return _error(exc)
    except KeyboardInterrupt:
        print("\ninterrupted: finished jobs are kept; unfinished ones are marked 'interrupted' in sweep.json.\n"
              "continue with: python -m drifthelpers sweep --rerun-failed <the sweep folder printed above>",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    n_ok = sum(s == "ok" for s in result.statuses.values())
    print(f"\n{n_ok} of {len(result.statuses)} job(s) ok; ran {len(result.ran)} in {result.seconds:.0f} s.")
    print(f"Table: {result.table}  (also results.md, results.json; jobs/ holds each job's notebooks)")
    _pool_sweep(result.sweep_dir)
    if result.failed:
        print(f"{len(result.failed)} job(s) failed or did not finish: {', '.join(result.failed)}", file=sys.stderr)
        print(f"re-run them alone with: python -m drifthelpers sweep --rerun-failed {result.sweep_dir}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _cmd_data(args) -> int:
    from . import datasets

    try:
        if args.data_cmd == "mini" and args.paper_size:
            return _cmd_data_standin(args)
        if args.data_cmd == "verify":
            return _cmd_data_verify(args)
        if args.data_cmd == "mini":
            sizes = {k: getattr(args, k) for k in ("n_microscopy", "n_drone", "size", "min_per_class")}
            kw = dict(root=args.root, seed=args.seed, which=args.which or datasets.KINDS, workers=args.workers,
                      **{k: v for k, v in sizes.items() if v is not None})  # unset: datasets.MINI_DEFAULTS
            paths = datasets.build_mini(**kw) if args.force else datasets.ensure_mini(**kw)
            for name, path in paths.items():
                print(f"{name}: {path}")
        elif args.data_cmd == "download":
            path = datasets.download(args.name, root=args.root)
            print(f"{args.name}: {path}")
        else:  # pragma: no cover - argparse guarantees a sub-command
            raise AssertionError(args.data_cmd)
    except (datasets.DatasetLayoutError, datasets.DownloadError, ValueError) as exc:
        return _error(exc)
    return 0


def _cmd_data_standin(args) -> int:
    from . import datasets
    from .datasets import verify as dataverify

    custom = [f"--{k.replace('_', '-')}" for k in ("size", "n_microscopy", "n_drone", "min_per_class")
              if getattr(args, k) is not None]
    if custom:
        return _error(ValueError(f"--paper-size fixes the sizes; drop {', '.join(custom)} (or use --scale)"))
    try:
        paths = dataverify.build_standin(args.root, which=args.which or datasets.KINDS, scale=args.scale,
                                         seed=args.seed, workers=args.workers, force=args.force)
    except (datasets.DatasetLayoutError, FileExistsError, ValueError) as exc:
        return _error(exc)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _data_kind(value: str) -> str:
    if value not in ("microscopy", "drone"):
        raise argparse.ArgumentTypeError(f"unknown data set {value!r}; choose microscopy or drone")
    return value


def _cmd_data_verify(args) -> int:
    from . import datasets
    from .datasets import verify as dataverify

    root = args.root or datasets.data_root() / "zenodo"
    status = 0
    for kind in args.kinds or datasets.KINDS:
        try:
            report = dataverify.verify_dataset(root, kind, expected=None if args.expect == "auto" else args.expect)
        except datasets.DatasetLayoutError as exc:
            return _error(exc)
        print(report.table() + "\n")
        if not report.ok:
            status = EXIT_FAILED
            print(f"{kind}: {len(report.problems)} problem(s):", file=sys.stderr)
            for problem in report.problems:
                print(f"  - {problem}", file=sys.stderr)
    return status


def _cmd_render(args) -> int:
    from . import isp
    from .raw import RawError

    try:
        out = isp.render_file(args.file, preset=args.preset, output=args.output, overwrite=args.force,
                              fidelity=args.fidelity)
    except (RawError, ValueError, OSError) as exc:  # every user-facing error of render_file is typed
        return _error(exc)
    print(f"wrote {out}")
    return 0


def _cmd_student(args) -> int:
    from .exercises import ExerciseFormatError, write_student_versions

    try:
        paths = write_student_versions(args.out_dir, args.notebook_dir, overwrite=args.force)
    except (ExerciseFormatError, FileNotFoundError, FileExistsError) as exc:
        return _error(exc)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _cmd_repository(args) -> int:
    from .repository import RepositoryError, default_root, set_repository

    try:
        changed = set_repository(args.root or default_root(), args.url, args.branch)
    except (RepositoryError, FileNotFoundError) as exc:
        return _error(exc)
    for path in changed:
        print(f"updated {path}")
    if not changed:
        print(f"already set: {args.url} at {args.branch}")
    return 0


def _cmd_book(args) -> int:
    from .book import run_cli

    return run_cli(args)


def _cmd_forensics(args) -> int:
    from .cli_forensics import run_cli

    return run_cli(args)


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _add_data_parser(sub) -> None:
    """The ``data`` command and its ``mini``, ``verify`` and ``download`` sub-commands."""
    p = sub.add_parser("data", help="build the mini data sets or download the real ones")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    q = dsub.add_parser("mini", help="generate the offline mini data sets (reused when intact)")
    q.add_argument("--root", help="data folder (default: <repo>/data or $DRIFTHELPERS_DATA)")
    q.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    q.add_argument("--which", action="append", choices=("microscopy", "drone"),
                   help="build only this set (repeat for both; default both)")
    q.add_argument("--size", type=int, help="tile side in pixels, even, >= 64 (default 128)")
    q.add_argument("--n-microscopy", type=int, help="microscopy crops, >= 9 x --min-per-class (default 144)")
    q.add_argument("--n-drone", type=int, help="drone tiles (default 48)")
    q.add_argument("--min-per-class", type=int, help="least microscopy crops per class (default 8)")
    q.add_argument("--workers", type=_positive_int, help="processes (default: available cores, at most 4)")
    q.add_argument("--force", action="store_true", help="rebuild even when present and intact")
    q.add_argument("--paper-size", action="store_true",
                   help="a stand-in at the paper's sizes in the Zenodo layout: --root receives its microscopy/ and "
                        "drone/ folders (default <data>/standin, where data_source=standin reads it)")
    q.add_argument("--scale", type=float, default=1.0,
                   help="with --paper-size: fraction of the paper's counts (default 1)")
    q.set_defaults(func=_cmd_data)
    q = dsub.add_parser("verify", help="check that a data set is complete (counts, classes, sizes, checksums)")
    q.add_argument("kinds", nargs="*", type=_data_kind, metavar="{microscopy,drone}",
                   help="data sets to check (default both)")
    q.add_argument("--root", help="data set folder or a folder holding it (default <data>/zenodo)")
    q.add_argument("--expect", choices=("auto", "paper", "manifest"), default="auto",
                   help="paper: the paper's counts; manifest: those a stand-in records; auto: manifest if any")
    q.set_defaults(func=_cmd_data)
    q = dsub.add_parser("download", help="fetch a real data set from Zenodo (checksummed)")
    q.add_argument("name", choices=("raw-microscopy", "raw-drone"))
    q.add_argument("--root", help="data folder (default: <repo>/data or $DRIFTHELPERS_DATA)")
    q.set_defaults(func=_cmd_data)


def _add_sweep_parser(sub) -> None:
    """The ``sweep`` command."""
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
    p.add_argument("--profile", default="quick", choices=PROFILE_NAMES, help="parameter profile")
    p.add_argument("--name",
                   help="sweep folder name, a plain name that must not exist yet (default: sweep-<timestamp>)")
    p.add_argument("--runs-dir", help="folder for runs (default: <repo>/runs)")
    p.add_argument("--notebook-dir", help="folder of notebooks (default: <repo>/notebooks)")
    p.add_argument("--engine", default="local", choices=("local", "dask"),
                   help="local worker processes (default) or Dask.distributed")
    p.add_argument("--address", help="Dask scheduler address (tcp://host:8786); default: a LocalCluster")
    p.add_argument("--workers", type=_positive_int, help="parallel jobs (default: min(jobs, CPU cores))")
    p.add_argument("--threads-per-job", type=_positive_int, help="math threads per job (default: cores / workers)")
    p.add_argument("--columns", action="append", metavar="PATTERN",
                   help="glob of result columns to show in results.md (e.g. '03/*ratio*')")
    p.add_argument("--rerun-failed", metavar="SWEEP_DIR",
                   help="run again, alone, the failed or unfinished jobs of an earlier sweep")
    p.set_defaults(func=_cmd_sweep)


def _add_run_options(p: argparse.ArgumentParser, notebooks_help: str) -> None:
    """The options of a notebook run, shared by ``run`` and ``book``."""
    p.add_argument("notebooks", nargs="*", help=notebooks_help)
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="parameter override")
    p.add_argument("--profile", default="quick", choices=PROFILE_NAMES, help="parameter profile")
    p.add_argument("--name", help="run folder name, a plain name that must not exist yet (default: a timestamp)")
    p.add_argument("--runs-dir", help="folder for runs (default: <repo>/runs)")
    p.add_argument("--notebook-dir", help="folder of notebooks to run (default: <repo>/notebooks)")
    p.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="python -m drifthelpers",
        description="Dataset drift controls with physical data models of optical images.",
    )
    parser.add_argument("--version", action="version", version=f"drifthelpers {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="print a camera raw file's metadata")
    p.add_argument("files", nargs="+", metavar="FILE", help="raw file(s): DNG, CRW, CR2, NEF, KDC, ...")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("run", help="execute the notebooks headless with papermill")
    _add_run_options(p, "a selection (e.g. 01 02); all by default")
    p.set_defaults(func=_cmd_run)

    _add_sweep_parser(sub)

    _add_data_parser(sub)

    p = sub.add_parser("forensics", help="operating envelope of a trained task model (drift forensics)")
    add_forensics_arguments(p)
    p.set_defaults(func=_cmd_forensics)

    p = sub.add_parser("render", help="render a raw file through a static data model")
    p.add_argument("file", help="camera raw file or mini-dataset TIFF")
    p.add_argument("--preset", default="bi,s,ga", help="one of the twelve static data models (default bi,s,ga)")
    p.add_argument("-o", "--output", required=True,
                   help="output image (.png, .tif); never the input file, and not an existing file without --force")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--fidelity", choices=("corrected", "raw2logit"), default="corrected",
                   help="corrected data model (default) or the paper's public code's chain (raw2logit)")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("student", help="write the student version of the notebooks (solutions replaced by stubs)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder for the student notebooks (created)")
    p.add_argument("--notebook-dir", help="folder of notebooks (default: <repo>/notebooks)")
    p.add_argument("--force", action="store_true", help="replace student notebooks already in OUT_DIR")
    p.set_defaults(func=_cmd_student)

    p = sub.add_parser("book", help="build a static HTML book of the executed notebooks (runs them unless --from)")
    _add_run_options(p, "notebooks to run for the book (e.g. 01 02); all by default")
    p.add_argument("--from", dest="from_run", metavar="RUN_DIR",
                   help="build from this run folder's executed notebooks; runs nothing")
    p.add_argument("--out", metavar="DIR", help="book folder (default: <repo>/build/book; an earlier book is replaced)")
    p.set_defaults(func=_cmd_book)

    p = sub.add_parser("repository", help="set the public repository's URL: install cells, Colab/Binder links")
    p.add_argument("url", metavar="URL", help="https://HOST/OWNER/NAME of the public git repository")
    p.add_argument("--branch", default="main", help="the branch the links open (default main)")
    p.add_argument("--root", help="the checkout to update (default: the one this package runs from)")
    p.set_defaults(func=_cmd_repository)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command; returns the exit status (see the module doc)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OSError as exc:  # a file-system error no handler expected: one line, never a traceback
        return _error(exc)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
