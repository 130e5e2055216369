"""Command line over the named pipeline configs: `python -m ilm_keras.experiments`.

    python -m ilm_keras.experiments configs
    python -m ilm_keras.experiments configs openp5_cpu --set seed=1
    python -m ilm_keras.experiments run --config quickstart_small \
        --work_dir runs/smoke
    python -m ilm_keras.experiments run --config openp5_cpu --set seed=1 \
        --data ../shared/data/openp5/ML100K --variant ilm --variant none \
        --work_dir runs/ml100k_seed1

`configs` lists the named configs (`ilm_keras/experiments/configs.py`), or
prints one's fields and values after the `--set` overrides. `run` runs the
whole pipeline on one: on the built-in synthetic data (`--data synthetic`,
the default for the `quickstart*` configs; what `examples/quickstart.py`
runs) or on an OpenP5 dataset folder (one cell per `--variant`, as
`examples/openp5.py` runs, resumable after a kill). Results go to
`<work_dir>/results.json`.
"""

from ilm_keras.utils.quiet import quiet_backend_logs

if __name__ == "__main__":  # a command, not an import (tests)
    quiet_backend_logs()  # before TensorFlow/JAX are imported

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from ilm_keras.experiments import configs as named  # noqa: E402

SYNTHETIC = "synthetic"
VARIANTS = ("none", "mlp", "ilm_rand", "ilm")


class UsageError(ValueError):
    """A bad command line (exit status 2)."""


def config_from_arguments(name, assignments):
    """`get_config(name)` with the `--set FIELD=VALUE` assignments.

    Args:
        name: a named config (`NAMED_CONFIGS`).
        assignments: list of `"FIELD=VALUE"` strings.

    Returns:
        `(config, overrides)`: the `PipelineConfig` and the parsed
        `{field: value}` overrides.

    Raises:
        UsageError: an unknown config name (listing the known ones), an
            assignment without `=`, an unknown field, or a value not of the
            field's type.

    Example:
    ```python
    config, _ = config_from_arguments("openp5_cpu", ["seed=1"])
    ```
    """
    try:
        overrides = named.parse_overrides(assignments)
        return named.get_config(name, **overrides), overrides
    except ValueError as error:
        raise UsageError(str(error)) from None


def list_configs():
    """The named configs, one per line, with what each is for."""
    width = max(len(name) for name in named.NAMED_CONFIGS)
    lines = ["Named configs (python -m ilm_keras.experiments configs NAME):"]
    lines += [f"  {name:<{width}}  {named.describe_config(name)}"
              for name in named.NAMED_CONFIGS]
    return "\n".join(lines)


def show_config(name, assignments=(), as_json=False):
    """One named config's fields and values, `--set` overrides applied.

    Args:
        name: a named config.
        assignments: `"FIELD=VALUE"` overrides.
        as_json: a JSON object instead of one `field = value` line each
            (overridden fields marked `(--set)`).

    Returns:
        The text to print.

    Raises:
        UsageError: see `config_from_arguments`.

    Example:
    ```python
    print(show_config("openp5_cpu", ["seed=1"]))
    ```
    """
    config, overrides = config_from_arguments(name, assignments)
    values = config.to_dict()
    if as_json:
        return json.dumps(values, indent=2)
    width = max(len(field) for field in values)
    lines = [f"{name}: {named.describe_config(name)}"]
    for field, value in values.items():
        mark = "  (--set)" if field in overrides else ""
        lines.append(f"  {field:<{width}} = {value!r}{mark}")
    return "\n".join(lines)


def run(name, assignments=(), data=None, work_dir=None, variants=None,
        sample_users=2000, item_texts_from=None, log=print):
    """The pipeline on a named config; results in `<work_dir>/results.json`.

    Args:
        name: a named config.
        assignments: `"FIELD=VALUE"` overrides.
        data: `"synthetic"` (the built-in data at the quickstart's sizes,
            `synthetic_sizes`; the default for `quickstart*` configs) or an
            OpenP5 dataset folder (`run_openp5`).
        work_dir: output folder (default `runs/<name>`). Synthetic: the
            last variant's trained model as a preset in `preset/`. OpenP5:
            one cell folder per variant (each with its `preset/`) and
            `shared/` for CF / phase 1 / LLM.
        variants: phase-2 variants (synthetic default `("none", "ilm")`,
            OpenP5 default `("ilm",)`).
        sample_users, item_texts_from: OpenP5 only (`run_openp5`).
        log: print function.

    Returns:
        The path of the results JSON.

    Raises:
        UsageError: a bad config, override, data path or variant.

    Example:
    ```python
    run("quickstart_small", ["seed=1"], work_dir="runs/smoke")
    ```
    """
    config, _ = config_from_arguments(name, assignments)
    if data is None:
        if not name.startswith("quickstart"):
            raise UsageError(
                f"--data is required with --config {name}: an OpenP5 dataset "
                "folder (e.g. ../shared/data/openp5/ML100K) or "
                f"'{SYNTHETIC}'."
            )
        data = SYNTHETIC
    unknown = sorted(set(variants or ()) - set(VARIANTS))
    if unknown:
        raise UsageError(f"Unknown variant(s) {unknown}; choose from "
                         f"{list(VARIANTS)}.")
    if data != SYNTHETIC and not os.path.isfile(
            os.path.join(data, "user_sequence.txt")):
        raise UsageError(
            f"--data {data!r} is neither '{SYNTHETIC}' nor an OpenP5 dataset "
            "folder (no user_sequence.txt in it)."
        )
    work_dir = work_dir or os.path.join("runs", name)
    os.makedirs(work_dir, exist_ok=True)
    output = os.path.join(work_dir, "results.json")
    log(f"config {name}" + "".join(f" --set {a}" for a in assignments)
        + f"; data {data}; results in {output}")

    if data == SYNTHETIC:
        from ilm_keras.experiments.synthetic import run_quickstart
        from ilm_keras.experiments.synthetic import synthetic_sizes

        sizes = synthetic_sizes(name)
        run_quickstart(
            config, sizes, output=output, log=log,
            variants=tuple(variants or ("none", "ilm")),
            preset_dir=os.path.join(work_dir, "preset"),
        )
        return output

    from ilm_keras.experiments.openp5 import run_openp5
    from ilm_keras.utils import files

    cells = {}
    for variant in variants or ("ilm",):
        cell_dir = os.path.join(work_dir, variant)
        cells[variant] = run_openp5(
            data, config, cell_dir, variant=variant,
            shared_dir=os.path.join(work_dir, "shared"),
            sample_users=sample_users, item_texts_from=item_texts_from, log=log,
        )
        with open(os.path.join(cell_dir, "results.md")) as f:
            log(f.read())
    files.write_json(output, {"config_name": name, "variants": cells},
                     indent=2, default=float)
    return output


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m ilm_keras.experiments",
        description=__doc__.splitlines()[0],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    configs = commands.add_parser(
        "configs", help="list the named configs, or print one's fields")
    configs.add_argument("name", nargs="?", help="a named config to print")
    configs.add_argument("--set", action="append", default=[],
                         metavar="FIELD=VALUE", help="replace one field")
    configs.add_argument("--json", action="store_true",
                         help="print the config as JSON")
    runner = commands.add_parser("run", help="run the pipeline on a config")
    runner.add_argument("--config", required=True,
                        help="a named config (see `configs`)")
    runner.add_argument("--set", action="append", default=[],
                        metavar="FIELD=VALUE",
                        help="replace one config field (repeatable), e.g. "
                        "--set seed=1")
    runner.add_argument("--data", default=None,
                        help=f"'{SYNTHETIC}' (default for quickstart*) or an "
                        "OpenP5 dataset folder, e.g. ../shared/data/openp5/ML100K")
    runner.add_argument("--work_dir", default=None,
                        help="output folder (default runs/<config>)")
    runner.add_argument("--variant", action="append", default=None,
                        help=f"phase-2 variant, repeatable: {', '.join(VARIANTS)} "
                        "(default: none and ilm on synthetic data, ilm on OpenP5)")
    runner.add_argument("--sample_users", type=int, default=2000,
                        help="OpenP5: score datasets with more test users on "
                        "a fixed sample of this many")
    runner.add_argument("--item_texts_from", default=None,
                        help="OpenP5: MovieLens folder with item texts "
                        "(default for ML100K: <data>/../../ml-100k)")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.command == "configs":
            if args.name is None:
                if args.set:
                    raise UsageError("--set needs a config name: "
                                     "configs NAME --set FIELD=VALUE.")
                print(list_configs())
            else:
                print(show_config(args.name, args.set, as_json=args.json))
        else:
            run(args.config, args.set, data=args.data, work_dir=args.work_dir,
                variants=args.variant, sample_users=args.sample_users,
                item_texts_from=args.item_texts_from)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
