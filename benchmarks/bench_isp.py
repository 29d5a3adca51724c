"""Throughput of the ISP data models, measured side by side in one run.

Prints megapixels per second (MP/s) for

  (a) the twelve static presets of ``drifthelpers.isp``, one call per batch, as rendered by
      default (float32 on the CPU: the fused kernels of ``drifthelpers.isp.fastisp``), and
      (a') the same with those kernels switched off (the eager torch path);
  (b) the same stages in NumPy/SciPy with colour-demosaicing, image by image, the way the
      paper's public code rendered its views (``tests/isp_reference.py``);
  (c) ``rawpy.postprocess`` (LibRaw) with linear demosaicing on the Canon test file, and our
      ``bi,*`` presets on the same full frame;
  (d) the parametrized model, forward (with autograd on) and forward + backward;

and checks three targets: every preset >= 10x (b); the bilinear presets >= 1x LibRaw per
pixel; forward + backward <= 3x forward. Candidates are timed in interleaved rounds and the
median is reported, which is robust to other work on a shared machine.

Usage:
    python benchmarks/bench_isp.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_isp.py --quick    # smaller batch, fewer rounds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the NumPy reference lives with the tests

import isp_reference  # noqa: E402

from drifthelpers import isp  # noqa: E402
from drifthelpers.isp import fastisp  # noqa: E402

CANON = ROOT.parent / "shared" / "testdata" / "raw" / "canon_powershot_g2_CRW_0304.CRW"


def _median_time(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _interleaved(cands: dict, rounds: int) -> dict[str, float]:
    """Median seconds per call of each candidate, timed round-robin."""
    for fn in cands.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(rounds):
        for name, fn in cands.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 4, 3 rounds")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: what torch picks)")
    args = ap.parse_args(argv)
    batch = args.batch or (4 if args.quick else 8)
    rounds = args.rounds or (3 if args.quick else 7)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size
    mp_batch = batch * size * size / 1e6

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {batch}x{size}x{size}, "
          f"rounds {rounds} (median)")
    rng = np.random.default_rng(0)
    cam = isp.CameraParams("RGGB", (32.0, 32.0, 32.0, 32.0), 1023.0, (1.63, 1.0, 1.6),
                           ((1.7, -0.5, -0.2), (-0.2, 1.5, -0.3), (0.0, -0.6, 1.6)))
    raw_np = (rng.random((batch, size, size)) * 900 + 40).astype(np.float32)
    raw = torch.from_numpy(raw_np)[:, None]

    # (a) and (b), per preset, interleaved
    print(f"\nfused kernels: {'on' if fastisp.enabled() else 'OFF (numba missing or DRIFTHELPERS_FAST_ISP=0)'}")
    print("(a) static presets, batched, default path  (a') torch path  vs  (b) NumPy/SciPy + colour-demosaicing,"
          " per image")
    print("preset       (a) MP/s  (a') MP/s   (b) MP/s     a/b    a'/b  target >= 10x")
    n_ref = 1 if args.quick else 2
    ratios, torch_ratios = {}, {}
    a_speed = {}
    for preset in isp.PRESETS:
        def ours(p=preset):
            with torch.inference_mode():
                isp.render(raw, p, cam)

        def ours_torch(p=preset):
            previous = fastisp.set_enabled(False)
            try:
                with torch.inference_mode():
                    isp.render(raw, p, cam)
            finally:
                fastisp.set_enabled(previous)

        def ref(p=preset):
            for i in range(n_ref):
                isp_reference.render(raw_np[i], p, cam.cfa, cam.black_level, cam.white_level, cam.wb_gains,
                                     cam.ccm, phase_preserving_border=False)

        t = _interleaved({"a": ours, "t": ours_torch, "b": ref}, rounds)
        a, a_torch = mp_batch / t["a"], mp_batch / t["t"]
        b = n_ref * size * size / 1e6 / t["b"]
        a_speed[preset] = a
        ratios[preset] = a / b
        torch_ratios[preset] = a_torch / b
        print(f"{preset:10s} {a:10.2f} {a_torch:10.2f} {b:10.2f} {a / b:7.1f} {a_torch / b:7.1f}  "
              f"{'ok' if a / b >= 10 else 'MISSED'}")

    # (c) LibRaw on the Canon file vs our bilinear presets on the same frame
    print("\n(c) full Canon PowerShot G2 frame (1720x2312): rawpy.postprocess(LINEAR) vs our bi presets")
    lib_vs_bi = {}
    if CANON.exists():
        import rawpy

        from drifthelpers.raw import read_raw

        ri = read_raw(CANON)
        camera = isp.CameraParams.from_raw_image(ri)
        frame = ri.to_tensor()[None]
        mp_frame = frame.shape[-1] * frame.shape[-2] / 1e6
        with rawpy.imread(str(CANON)) as rp:
            def libraw():
                rp.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR, use_camera_wb=True,
                               no_auto_bright=True, gamma=(2.2, 0.0), output_bps=16, user_flip=0,
                               adjust_maximum_thr=0.0, output_color=rawpy.ColorSpace.sRGB)

            cands = {"libraw": libraw}
            for preset in ("bi,s,me", "bi,s,ga", "bi,u,me", "bi,u,ga"):
                def ours_frame(p=preset):
                    with torch.inference_mode():
                        isp.render(frame, p, camera)
                cands[preset] = ours_frame
            t = _interleaved(cands, max(3, rounds // 2))
        lib = mp_frame / t["libraw"]
        print(f"{'libraw':10s} {lib:10.2f} MP/s (postprocess only; decoding excluded)")
        for preset in ("bi,s,me", "bi,s,ga", "bi,u,me", "bi,u,ga"):
            v = mp_frame / t[preset]
            lib_vs_bi[preset] = v / lib
            print(f"{preset:10s} {v:10.2f} MP/s  {v / lib:5.2f}x libraw (batched tiles: {a_speed[preset] / lib:5.2f}x)"
                  f"  {'ok' if v / lib >= 1 else 'MISSED'}")
    else:
        print(f"skipped: {CANON} not found")

    # (d) parametrized model
    print("\n(d) parametrized model, autograd on")
    model = isp.ParametrizedDataModel(cam)

    def fwd():
        model(raw)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(raw).mean().backward()

    t = _interleaved({"f": fwd, "fb": fwd_bwd}, rounds)
    print(f"forward            {mp_batch / t['f']:8.2f} MP/s")
    print(f"forward+backward   {mp_batch / t['fb']:8.2f} MP/s   ratio {t['fb'] / t['f']:.2f}x forward  "
          f"(target <= 3x) {'ok' if t['fb'] / t['f'] <= 3 else 'MISSED'}")
    with torch.inference_mode():
        tinf = _median_time(lambda: model(raw), rounds)
    print(f"forward (inference_mode) {mp_batch / tinf:8.2f} MP/s")

    print("\nsummary")
    worst = min(ratios, key=ratios.get)
    print(f"  presets vs NumPy reference: min {ratios[worst]:.1f}x ({worst}), "
          f"median {statistics.median(ratios.values()):.1f}x (target >= 10x); torch path alone: "
          f"{min(torch_ratios.values()):.1f}x .. {max(torch_ratios.values()):.1f}x")
    if lib_vs_bi:
        print(f"  bilinear presets vs LibRaw per pixel: {min(lib_vs_bi.values()):.2f}x .. "
              f"{max(lib_vs_bi.values()):.2f}x (target >= 1x)")
    print(f"  forward+backward / forward: {t['fb'] / t['f']:.2f} (target <= 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
