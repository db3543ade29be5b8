"""A study: the pipeline over seeds and arms as queued DVC experiments, and the claims table they give.

    python -m stages.study run                      # 3 seeds x 6 arms on params.yaml's env, then the claims
    python -m stages.study run --set env=virl_l     # another env; --set applies to every arm
    python -m stages.study run --seeds 5 --arms sft_all,sft_medium --set sft.lr=1e-3 --name gp_l-lr1e-3
    python -m stages.study run --arms sft_all,budget  # compute axis: SFT, GRPO at study.budget_multiple
    python -m stages.study claims                   # the table again, from the experiments already made
    python -m stages.study run --engine ray --gpus-per-experiment 1   # on a Ray cluster: docs/cluster.md

`run` queues one experiment per seed and arm, named <name>-s<seed>-<arm> (name: the env by default), with
`dvc exp run --queue`, and runs the queue with `dvc exp run --run-all` (`--jobs` workers). An arm sets the
params that make it (ARMS, arm_params); every experiment also trains GRPO and evaluates every model. The
grpo_viter3 arm runs its whole schedule, grpo.steps / study.viter3_step_divisor steps, and the claims
compare it with viter 1 along the scaling curves at matched FLOPs; the budget arm (not in the default
--arms) trains SFT on all prompts and GRPO for study.budget_multiple times their default steps, for the
compute-axis claims. Seeds vary `seed` (post-training and evaluation samples) from one starting point
(`data_seed`: data, base model, scores). DVC restores what experiments share from its run cache, so each
runs only what is its own; run_study orders them in rounds so no two workers make the same stage.
Experiments already made under these names are kept, so rerunning the command resumes a study that stopped
midway. `dvc exp show` lists them; `dvc exp apply` and `dvc exp push` take each.

`claims` reads the experiments of the current commit through DVC (`dvc exp show --json` for their names,
dvc.api.DVCFileSystem for the files at each experiment) and writes study/<name>/claims.md and claims.json.
What each row measures, and how its interval and verdicts are made (params.yaml `claims`: the equivalence
margin, the level, the bootstrap draws): stages/claims/ and docs/statistics.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

from stages.claims.table import Settings, claims_table, markdown
from stages.core.params import ParamError, get, load_params
from stages.core.paths import STUDIES
from stages.core.provenance import provenance
from stages.core.storage import write_json
from stages.envs import ENV_NAMES
from stages.experiments.arms import ARMS, DEFAULT_ARMS
from stages.experiments.cluster import INSTALL, RayEngine
from stages.experiments.local import LocalQueue
from stages.experiments.results import (
    experiments_setup,
    merge,
    read_experiments,
    read_results,
    seed_results,
    write_results,
)
from stages.experiments.rounds import run_study

METRICS = ("mean_success", "greedy_success")  # per-prompt success in metrics/eval/per_prompt/<model>.csv


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.study", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser(
        "run", help="queue and run the study's experiments, then write the claims"
    )
    run_parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    run_parser.add_argument(
        "--arms",
        default=",".join(DEFAULT_ARMS),
        help=f"comma-separated, of: {', '.join(ARMS)} (default: {','.join(DEFAULT_ARMS)})",
    )
    run_parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a param for all arms"
    )
    run_parser.add_argument(
        "--jobs", type=int, default=1, help="local engine: experiments run at once (default 1)"
    )
    cluster = run_parser.add_argument_group("--engine ray: experiments as Ray tasks (docs/cluster.md)")
    cluster.add_argument("--engine", default="local", help="local (DVC's queue, default) | ray")
    cluster.add_argument("--address", help="the Ray cluster (default: RAY_ADDRESS, else a local one)")
    cluster.add_argument("--cpus-per-experiment", type=float, default=1, help="Ray CPUs a task asks for")
    cluster.add_argument("--gpus-per-experiment", type=float, default=0, help="Ray GPUs a task asks for")
    cluster.add_argument("--retries", type=int, default=2, help="retries of a task whose worker dies")
    cluster.add_argument("--git-remote", default="origin", help="where experiments go (default origin)")
    cluster.add_argument("--dvc-remote", help="DVC remote every node reaches (default: the default one)")
    cluster.add_argument(
        "--workdir", type=Path, help="each node's folder for task clones and logs (default: the temp dir)"
    )
    cluster.add_argument(
        "--checkpoints", type=Path, help="training checkpoints, shared for resume (default: --workdir)"
    )
    claims_parser = commands.add_parser("claims", help="write the claims table from the experiments made")
    for sub in (run_parser, claims_parser):
        sub.add_argument("--name", help="the study's name, the prefix of its experiments (default: the env)")
        sub.add_argument(
            "--metric", default="mean_success", help=f"per-prompt success: {' | '.join(METRICS)}"
        )
    args = parser.parse_args(argv)

    if args.metric not in METRICS:
        raise ParamError(f"--metric={args.metric!r} is not allowed; use one of: {', '.join(METRICS)}")
    if args.command == "run":
        overrides = parse_sets(args.set)
        arms = parse_arms(args.arms)
        if args.jobs < 1:
            raise ParamError(f"--jobs={args.jobs}: run at least 1 experiment at a time")
        if args.seeds < 1:
            raise ParamError(
                f"--seeds={args.seeds}: a study needs at least 1 seed (3 gives intervals over seeds)"
            )
        env = overrides.get("env", get(load_params(), "env"))
        if env not in ENV_NAMES:
            raise ParamError(f"env={env!r} is not allowed; use one of: {', '.join(ENV_NAMES)}")
        name = args.name or env
        run_study(name, list(range(args.seeds)), arms, overrides, args.jobs, make_engine(args))
    else:
        name = args.name or get(load_params(), "env")
    write_claims(name, args.metric)


def parse_sets(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamError(f"--set {item!r} is not KEY=VALUE (e.g. --set sft.lr=1e-3)")
        if key == "seed" or key in {k for arm in ARMS.values() for k in arm}:
            raise ParamError(
                f"--set {key}=... is set by the study; choose seeds with --seeds and arms with --arms"
            )
        overrides[key] = value
    return overrides


def parse_arms(text: str) -> list[str]:
    arms = [arm.strip() for arm in text.split(",") if arm.strip()]
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown or not arms:
        raise ParamError(
            f"--arms: unknown arm {', '.join(unknown) or '(none given)'}; use some of: {', '.join(ARMS)}"
        )
    # the budget arm last: the first sft arm of a seed makes the default-steps GRPO its other arms restore
    return sorted(arms, key=lambda arm: arm == "budget")


def make_engine(args: argparse.Namespace) -> LocalQueue | RayEngine:
    """The engine that runs each round's experiments: DVC's local queue, or Ray tasks
    (stages/experiments/cluster.py)."""
    if args.engine == "local":
        return LocalQueue(args.jobs)
    if args.engine != "ray":
        raise ParamError(f"--engine={args.engine!r} is not allowed; use one of: local, ray")
    counts = {
        "--cpus-per-experiment": args.cpus_per_experiment,
        "--gpus-per-experiment": args.gpus_per_experiment,
    }
    for flag, value in {**counts, "--retries": args.retries}.items():
        if value < 0:
            raise ParamError(f"{flag}={value:g} must be >= 0")
    if importlib.util.find_spec("ray") is None:
        raise ParamError(f"--engine ray needs Ray, which is not installed: {INSTALL}")
    workdir = args.workdir or Path(tempfile.gettempdir()) / "sft-vs-rl-study"
    return RayEngine(address=args.address, cpus=args.cpus_per_experiment, gpus=args.gpus_per_experiment,
                     retries=args.retries, workdir=workdir.resolve(),
                     checkpoints=args.checkpoints.resolve() if args.checkpoints else None,
                     git_remote=args.git_remote, dvc_remote=args.dvc_remote)  # fmt: skip


def write_claims(name: str, metric: str) -> None:
    out = STUDIES / name
    kept = read_results(out / "results")
    study = merge(name, kept, read_experiments(name, kept and kept.env))
    write_results(out / "results", study)
    seeds = seed_results(study, name, metric)
    params = load_params()
    settings = Settings.from_params(params)
    rows = claims_table(seeds, study.env, study.env.endswith("_vl"), settings)
    names = sorted(study.experiments)
    header = (
        f"# Claims on {study.env}: study `{name}`, seeds {', '.join(str(s.seed) for s in seeds)}\n\n"
        f"Effect: the difference in {metric.replace('_', ' ')} the finding names (a ratio for wall time and "
        "gradient norms; rows read off the scaling curves use the curves' sampled success), the mean over "
        f"seeds. {len(names)} experiments, their files in `results/`; `python -m stages.study claims` "
        "rewrites this file."
    )
    summary = {"study": name, "env": study.env, "metric": metric, "experiments": names}
    summary |= {"seeds": [s.seed for s in seeds], "settings": settings.__dict__, "claims": rows}
    # the machine writing the table need not be the experiments'
    made = provenance(get(params, "data_seed")) | {"experiments": experiments_setup(study)}
    write_json(out / "claims.json", summary | {"provenance": made})
    (out / "claims.md").write_text(markdown(rows, header, settings))
    print((out / "claims.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
