"""Measure the app as users meet it: start time, memory, time to first image.

    python demo/measure.py                          # the shipped checkpoint
    python demo/measure.py --checkpoint runs/tiny --calls 10

Starts ``demo/app.py`` in a subprocess (demo/launcher.py), then times ``/text_to_image`` with
4 images through ``gradio_client`` (client-side wall time: queue, sampling, decoding, PNG
encoding and transfer), then the page's ``/text_to_image_stream`` (first preview, final
images), and reads the app's resident memory. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.examples import EXAMPLE_PROMPTS
from demo.launcher import running_app


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--num-images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="OMP threads of the app (default: all cores)")
    ap.add_argument("--with-baselines", action="store_true",
                    help="load every baseline in checkpoints/ as the Space does (start time and memory with them); "
                         "default: ARMANI alone")
    args = ap.parse_args(argv)
    from gradio_client import Client

    app_args = ([] if args.with_baselines else ["--baselines-dir", "none"]) + (
        ["--checkpoint", args.checkpoint] if args.checkpoint else [])
    with running_app(app_args, threads=args.threads) as app:
        client = Client(app.url, verbose=False, httpx_kwargs={"timeout": 300})
        seconds, server = [], []
        for i in range(args.calls):
            prompt = EXAMPLE_PROMPTS[i % len(EXAMPLE_PROMPTS)]
            start = time.perf_counter()
            raw, status = client.predict(prompt, args.num_images, i, 1.0, 100, 3.0, "AR", api_name="/text_to_image")
            seconds.append(time.perf_counter() - start)
            server.append(float(status.split(" in ")[1].split(" s")[0]))
            assert len(raw) == args.num_images
        # The page's endpoint, previews streamed: when the first preview and the final images
        # arrive (this client does not download the images; the browser would fetch them).
        streamer = Client(app.url, verbose=False, httpx_kwargs={"timeout": 300}, download_files=False)
        first_preview, final = [], []
        for i in range(args.calls):
            prompt = EXAMPLE_PROMPTS[i % len(EXAMPLE_PROMPTS)]
            start = time.perf_counter()
            job = streamer.submit(prompt, args.num_images, i, 1.0, 100, 3.0, "AR", api_name="/text_to_image_stream")
            seen = None
            for update in job:
                if seen is None and str(update[-1]).startswith("sampling"):
                    seen = time.perf_counter() - start
            final.append(time.perf_counter() - start)
            first_preview.append(seen if seen is not None else float("nan"))
        compare = {}
        if args.with_baselines:  # one garment per method, every method ticked (the tab's default)
            start = time.perf_counter()
            _, table, _ = client.predict(EXAMPLE_PROMPTS[0], None, None, 0, api_name="/compare")
            compare = {"compare_methods": [row[0] for row in table["data"]],
                       "compare_seconds": round(time.perf_counter() - start, 3),
                       "compare_per_method_seconds": {row[0]: row[1] for row in table["data"]}}
        report = {
            "checkpoint": args.checkpoint or "checkpoints/armani",
            "baselines": args.with_baselines,
            "start_seconds": round(app.start_seconds, 2),
            "rss_mib": round(app.rss_bytes() / 2**20, 1),
            "num_images": args.num_images,
            "calls": args.calls,
            "first_image_p50_seconds": round(statistics.median(seconds), 3),
            "first_image_max_seconds": round(max(seconds), 3),
            "server_side_p50_seconds": round(statistics.median(server), 3),
            "stream_first_preview_p50_seconds": round(statistics.median(first_preview), 3),
            "stream_final_p50_seconds": round(statistics.median(final), 3),
            **compare,
        }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
