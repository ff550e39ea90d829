"""diffusers' reference point for the render benches: the same tiny model and the same request as
the criterion benches in `benches/benches/render.rs`.

    python benches/python/diffusers_bench.py --model DIR --request REQUEST.json --threads N [--runs K]

Run by `cargo xtask bench`. Prints one JSON object:
{"diffusers": {"load": {"median_s": …, "runs": K}, "render": {"median_s": …, "runs": K}},
 "threads": N, "versions": {…}}.

With `--schedulers A,B --scheduler-steps S`, also the render with each scheduler class and S steps
(`diffusers.schedulers.<schedulers>`, `{median_s, unet_calls}`), the UNet calls counted by a
forward pre-hook.

Method (as `validate_jsonschema.py`: repeated runs, median), in one process after one untimed
warm-up of each (criterion warms up too):
- load: `StableDiffusionXLPipeline.from_pretrained(model, torch_dtype=float32,
  add_watermarker=False)`, what the oracle does (`fixtures/oracle/render.py`);
- render: the oracle's `pipe(...)` call for the request (scheduler built from the pipeline's
  config as the oracle does, per-image CPU generators, `output_type="pil"`), no PNG written:
  the criterion side (`Pipeline::render`) stops at 8-bit RGB too.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

ORACLE = Path(__file__).resolve().parents[2] / "fixtures" / "oracle" / "render.py"


def load_oracle():
    # The oracle's request semantics (seeds, defaults, negative prompt) are the ones to time.
    # render.py imports its sibling `prompts` as a script would: its folder goes on the path.
    if str(ORACLE.parent) not in sys.path:
        sys.path.insert(0, str(ORACLE.parent))
    spec = importlib.util.spec_from_file_location("oracle_render", ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_s(function, runs):
    function()  # warm-up, untimed
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--request", required=True, type=Path)
    parser.add_argument("--threads", required=True, type=int)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--schedulers", default="", help="comma-separated scheduler classes to time")
    parser.add_argument("--scheduler-steps", type=int, default=8)
    args = parser.parse_args()

    oracle = load_oracle()
    torch = oracle.torch
    torch.set_num_threads(args.threads)
    _, data = oracle.load_request(args.request)
    hyper = data.get("hyperparameters", {})
    dims = data.get("dimensions", {})
    seeds = oracle.seeds_for(data)

    def load():
        return oracle.StableDiffusionXLPipeline.from_pretrained(
            args.model, torch_dtype=torch.float32, add_watermarker=False
        )

    load_median = median_s(load, args.runs)

    pipe = load()
    pipe.set_progress_bar_config(disable=True)
    base_scheduler_config = pipe.scheduler.config
    scheduler_class = getattr(oracle.diffusers, data.get("scheduler") or type(pipe.scheduler).__name__)

    def render():
        pipe.scheduler = scheduler_class.from_config(base_scheduler_config, **data.get("scheduler_options", {}))
        return pipe(
            prompt=data["prompt"],
            negative_prompt=data.get("negative_prompt"),
            num_inference_steps=int(hyper.get("num_inference_steps", 25)),
            guidance_scale=float(hyper.get("guidance_scale", 7.5)),
            width=int(dims.get("width", 1024)),
            height=int(dims.get("height", 1024)),
            num_images_per_prompt=len(seeds),
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            output_type="pil",
        ).images

    render_median = median_s(render, args.runs)  # `pipe.__call__` runs under torch.no_grad()

    # The same render with each scheduler class, counting the UNet's forward passes.
    unet_calls = [0]
    pipe.unet.register_forward_pre_hook(lambda *_: unet_calls.__setitem__(0, unet_calls[0] + 1))
    schedulers = {}
    for name in filter(None, args.schedulers.split(",")):
        # render() reads both at call time: the class it builds, the steps it asks for.
        scheduler_class = getattr(oracle.diffusers, name)
        hyper["num_inference_steps"] = args.scheduler_steps
        unet_calls[0] = 0
        render()
        calls = unet_calls[0]
        schedulers[name] = {"median_s": median_s(render, args.runs), "unet_calls": calls}

    print(json.dumps({
        "diffusers": {
            "load": {"median_s": load_median, "runs": args.runs},
            "render": {"median_s": render_median, "runs": args.runs},
            "schedulers": schedulers,
        },
        "threads": torch.get_num_threads(),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "diffusers": importlib.metadata.version("diffusers"),
        },
    }))


if __name__ == "__main__":
    main()
