"""Python's reference point for the transform bench: `jsonschema` (the library Python workers
use) validating the same Python v2 requests against the same schema.

Run by `cargo xtask bench`, which passes the schema file and the request files (the Python
envelopes `sdxl-transform request` produced for the bench's fixtures). Prints one JSON object:
{"python_jsonschema": {"<name>": {"median_us": …, "runs": …}}, "versions": {…}}.

Method: a Draft202012Validator is built once (as a worker would), then `validate(instance)` is
timed in batches; the median over batches of the per-call time is reported.
"""

import importlib.metadata
import json
import statistics
import sys
import time

import jsonschema


def median_us(validator, instance, batches=30, per_batch=200):
    validator.validate(instance)  # must be valid; also warms caches
    samples = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(per_batch):
            validator.validate(instance)
        samples.append((time.perf_counter_ns() - start) / per_batch / 1000.0)
    return statistics.median(samples), batches * per_batch


def main(argv):
    if len(argv) < 3:
        sys.exit("usage: validate_jsonschema.py SCHEMA NAME=REQUEST.json [NAME=REQUEST.json ...]")
    with open(argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    results = {}
    for spec in argv[2:]:
        name, _, path = spec.partition("=")
        with open(path, encoding="utf-8") as f:
            instance = json.load(f)
        median, runs = median_us(validator, instance)
        results[name] = {"median_us": median, "runs": runs}
    print(json.dumps({
        "python_jsonschema": results,
        "versions": {"python": sys.version.split()[0], "jsonschema": importlib.metadata.version("jsonschema")},
        "validator": validator_class.__name__,
    }))


if __name__ == "__main__":
    main(sys.argv)
