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
grpo_viter3 arm runs its whole schedule, and the claims compare it with viter 1 along the scaling curves at
matched FLOPs; the budget arm (not in the default --arms) trains SFT on all prompts and GRPO for
study.budget_multiple times their default steps, for the compute-axis claims. Seeds vary `seed`
(post-training and evaluation samples) from one starting point (`data_seed`: data, base model, scores).
DVC restores what experiments share from its run cache, so each runs only what is its own; run_study orders
them in rounds so no two workers make the same stage. Experiments already made under these names are kept,
so rerunning the command resumes a study that stopped midway. `dvc exp show` lists them; `dvc exp apply`
and `dvc exp push` take each.

`claims` reads the experiments of the current commit through DVC (`dvc exp show --json` for their names,
dvc.api.DVCFileSystem for the files at each experiment) and writes study/<name>/claims.md and claims.json.
What each row measures, and how its interval and verdicts are made (params.yaml `claims`: the equivalence
margin, the level, the bootstrap draws): stages/claims.py and docs/statistics.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from dvc.api import DVCFileSystem
from omegaconf import OmegaConf

from stages.claims import BENCHMARKS, SUBSETS, SeedResults, Settings, claims_table, markdown
from stages.cluster import INSTALL, RayEngine, git
from stages.envs import ENV_NAMES
from stages.params import ParamError, get, integer, load_params, per_env
from stages.provenance import provenance
from stages.storage import write_json

# What makes each arm; the sft arms pin grpo.viter 1, so their GRPO model is the viter-1 arm. The budget arm
# also multiplies sft.steps and grpo.steps (arm_params); it is left out of the default --arms.
ARMS = {f"sft_{subset}": {"subset": subset, "grpo.viter": 1} for subset in SUBSETS} | {
    "grpo_viter3": {"subset": "all", "grpo.viter": 3},
    "budget": {"subset": "all", "grpo.viter": 1},
}
DEFAULT_ARMS = [arm for arm in ARMS if arm != "budget"]
# The models each arm's experiments hold, by name in the claims -> the stage that made them.
ARM_MODELS = {arm: {"base": "base", arm: "sft", "grpo": "grpo"} for arm in ARMS if arm.startswith("sft_")} | {
    "grpo_viter3": {"grpo_viter3": "grpo"},
    "budget": {"base": "base", "sft_all_budget": "sft", "grpo_budget": "grpo"},
}
OUTPUT = Path("study")
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


def dvc(*args: str) -> str:
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(
            f"error: `dvc {' '.join(args)}` failed:\n{result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def experiments() -> dict[str, str]:
    """{name: commit} of the finished experiments based on the current commit, from `dvc exp show --json`."""
    found = {}
    for commit in json.loads(dvc("exp", "show", "--json", "--hide-queued", "--hide-failed") or "[]"):
        for experiment in commit.get("experiments") or []:
            if (experiment.get("executor") or {}).get("state", "success") != "success":
                continue  # still running: its commit is not there yet
            for rev in experiment.get("revs") or []:
                if rev.get("name") and not rev.get("error"):
                    found[rev["name"]] = rev["rev"]
    return found


def make_engine(args: argparse.Namespace) -> LocalQueue | RayEngine:
    """The engine that runs each round's experiments: DVC's local queue, or Ray tasks (stages/cluster.py)."""
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


class LocalQueue:
    """Each round's experiments queued with `dvc exp run --queue` and run by `dvc exp run --run-all`."""

    def __init__(self, jobs: int):
        self.jobs = jobs

    def start(self, study: str) -> None:
        self.study = study

    def sync(self) -> None:
        """The experiments are made in this repository: nothing to fetch."""

    def stop(self) -> None:
        pass

    def run(self, todo: dict[str, dict], lock: str | None = None) -> dict[str, str]:
        remaining = dict(todo)
        for start in range(1, QUEUE_STARTS + 1):
            finished = self.run_queue(remaining, lock)
            made = set(experiments())
            remaining = {name: params for name, params in remaining.items() if name not in made}
            if finished or not remaining:
                break
            # DVC's local queue runs on kombu's filesystem broker, whose worker can die reading a message
            # while it is written (JSONDecodeError, treeverse/dvc-task#73): queue the rest again.
            print(
                f"study {self.study}: DVC's queue workers exited with {len(remaining)} experiments not run "
                f"(start {start} of {QUEUE_STARTS}); queueing them again",
                file=sys.stderr,
            )
        else:
            raise SystemExit(
                f"error: DVC's queue workers exited {QUEUE_STARTS} times with experiments still queued "
                f"({', '.join(remaining)}); `dvc queue logs <experiment>` shows what ran; run the same "
                "command again (finished experiments are kept)"
            )
        if remaining:  # the queue's later rounds need this one's outputs: stop here
            failed = sorted(remaining)
            raise SystemExit(
                f"error: {len(failed)} experiments failed: {', '.join(failed)}; see `dvc queue logs "
                f"{failed[0]}`, fix the cause and run the same command again (finished experiments are kept)"
            )
        return {}

    def run_queue(self, todo: dict[str, dict], lock: str | None) -> bool:
        """Queue `todo` and run it with `dvc exp run --run-all`; False if the queue's workers died first."""
        with workspace_lock(lock):  # the queue takes the workspace as it is, dvc.lock included
            for experiment, params in todo.items():
                dvc("exp", "run", "--queue", "--name", experiment, *[f"-S{k}={v}" for k, v in params.items()])
        workers = min(self.jobs, len(todo))
        env = dict(os.environ)
        if workers > 1:  # a share of the cores per worker: a torch thread per core each runs 4x slower
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        print(
            f"study {self.study}: running {len(todo)} experiments, {workers} at once (dvc exp run --run-all)"
        )
        run_all = subprocess.Popen(["dvc", "exp", "run", "--run-all", "--jobs", str(workers)], env=env)
        return wait_for_queue(run_all)


@contextlib.contextmanager
def workspace_lock(lock: str | None):
    """The workspace's dvc.lock replaced by `lock` inside the block, then put back as it was.

    DVC restores a stage whose deps match dvc.lock from the outputs the lock names, and reruns it when those
    are not in the cache; it looks in the run cache only for a stage the lock does not match. The commit's
    dvc.lock names the outputs of whoever made the baseline, which another CPU (or a fresh clone without a
    remote) does not have, so every experiment would remake the starting point. Queued from the first
    experiment's dvc.lock, the rest restore it from this study's own outputs.
    """
    path = Path("dvc.lock")
    if lock is None:
        yield
        return
    original = path.read_bytes() if path.exists() else None
    path.write_text(lock)
    try:
        yield
    finally:
        if original is None:
            path.unlink()
        else:
            path.write_bytes(original)


def experiment_lock(commit: str) -> str:
    """An experiment's dvc.lock, from its commit."""
    return git("show", f"{commit}:dvc.lock", strip=False)


QUEUE_CHECK_S = 30  # how often a running queue's workers are checked
QUEUE_DEAD_CHECKS = 3  # checks in a row without a live worker that make a queue dead
QUEUE_STARTS = 3  # times a round's queue is started before the study stops


def wait_for_queue(run_all: subprocess.Popen) -> bool:
    """Wait for `dvc exp run --run-all`; False if the queue's workers died first. The command waits without
    limit for each queued experiment to start, so when its workers exit first (seen in CI: both workers
    defunct, the command waiting forever) it is stopped and what is still queued removed."""
    dead = 0
    while True:
        try:
            run_all.wait(timeout=QUEUE_CHECK_S)
            return True
        except subprocess.TimeoutExpired:
            pass
        dead = 0 if queue_workers_alive() else dead + 1
        if dead == QUEUE_DEAD_CHECKS:
            run_all.kill()
            run_all.wait()
            subprocess.run(["dvc", "queue", "remove", "--queued"], capture_output=True)
            return False


def queue_workers_alive() -> bool:
    return bool(queue_worker_pids())


def queue_worker_pids() -> list[int]:
    """The live (not defunct) `dvc exp queue-worker` processes of this repository, from /proc."""
    here = Path.cwd().resolve()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"queue-worker" not in (proc / "cmdline").read_bytes():
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = (proc / "cwd").resolve()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z" and (cwd == here or here in cwd.parents):
            pids.append(int(proc.name))
    return pids


def run_study(
    name: str, seeds: list[int], arms: list[str], overrides: dict[str, str], jobs: int, engine=None
) -> None:
    """Run the experiments not made yet, in three rounds, each round through the engine (default: the local
    queue with `jobs` workers).

    Experiments depend on each other through DVC's run cache: the first one makes the starting point
    (generate, base, score, split) that every seed shares, each seed's first sft arm trains the seed's
    viter-1 GRPO that its other sft arms restore. Rounds keep the queue's workers from making the same stage
    twice. An engine that goes on past a failed experiment (Ray) still runs the later rounds; the failures
    are reported at the end.
    """
    engine = engine or LocalQueue(jobs)
    engine.start(name)
    try:
        ran, failed = run_rounds(name, seeds, arms, overrides, engine)
    finally:
        engine.stop()
    if failed:
        for experiment, why in failed.items():
            print(f"study {name}: {experiment} {why}", file=sys.stderr)
        raise SystemExit(
            f"error: {len(failed)} experiments failed: {', '.join(failed)} (logs above); fix the cause and "
            "run the same command again (the experiments made are kept)"
        )
    print(f"study {name}: {ran} experiments queued and run")


def run_rounds(
    name: str, seeds: list[int], arms: list[str], overrides: dict[str, str], engine
) -> tuple[int, dict[str, str]]:
    """The rounds of run_study; returns how many experiments ran and {name: why} of those that failed."""
    engine.sync()
    made = experiments()
    sft_arms = [arm for arm in arms if arm != "grpo_viter3"]
    first = sft_arms[:1]
    rounds = [
        [(seeds[0], arm) for arm in first],
        [(seed, arm) for seed in seeds[1:] for arm in first],
        [(seed, arm) for seed in seeds for arm in sft_arms[1:] + ["grpo_viter3"] * ("grpo_viter3" in arms)],
    ]
    ran, failed = 0, {}
    starting_point = f"{name}-s{seeds[0]}-{first[0]}" if first else None
    for round_ in rounds:
        # after the first round, each experiment starts from the dvc.lock of the first (workspace_lock)
        lock = experiment_lock(made[starting_point]) if starting_point in made else None
        todo = {}
        for seed, arm in round_:
            experiment = f"{name}-s{seed}-{arm}"
            if experiment in made:
                print(f"study: {experiment} already made; kept")
                continue
            todo[experiment] = {**overrides, "seed": seed, **arm_params(arm, overrides)}
        ran += len(todo)
        if todo:
            failed |= engine.run(todo, lock)
            engine.sync()
            made = experiments()
    return ran, failed


def arm_params(arm: str, overrides: dict[str, str]) -> dict:
    """The params that make `arm`; the budget arm's steps are study.budget_multiple times those the study
    would train (params.yaml with the study's --set), per env where the steps are given per env."""
    made = dict(ARMS[arm])
    if arm != "budget":
        return made
    config = load_params()
    for key, value in overrides.items():
        OmegaConf.update(config, key, yaml.safe_load(value), force_add=True)
    multiple = integer(config, "study.budget_multiple", minimum=2)
    for stage in ("sft", "grpo"):
        key = per_env(config, f"{stage}.steps", get(config, "env"))
        made[key] = integer(config, key, minimum=1) * multiple
    return made


def collect(name: str, metric: str) -> tuple[str, list[SeedResults], list[str]]:
    """The study's results per seed, read at each experiment's commit."""
    pattern = re.compile(rf"{re.escape(name)}-s(\d+)-({'|'.join(ARMS)})")
    found = {m: rev for m, rev in experiments().items() if pattern.fullmatch(m)}
    if not found:
        raise SystemExit(
            f"error: no experiments named {name}-s<seed>-<arm> on this commit; run `python -m stages.study"
            " run` (or pass the study's --name)"
        )
    files = {experiment: DVCFileSystem(".", rev=rev) for experiment, rev in sorted(found.items())}
    envs = {
        experiment: yaml.safe_load(fs.read_text("params.yaml"))["env"] for experiment, fs in files.items()
    }
    if len(set(envs.values())) > 1:
        mixed = ", ".join(f"{experiment} ({env})" for experiment, env in envs.items())
        raise SystemExit(f"error: study {name} mixes envs: {mixed}; give each env its own --name")
    seeds: dict[int, SeedResults] = {}
    for experiment, fs in files.items():
        seed_text, arm = pattern.fullmatch(experiment).groups()
        results = seeds.setdefault(int(seed_text), SeedResults(int(seed_text), prompts={}))
        for model, stage in ARM_MODELS[arm].items():
            # base and grpo come with every sft arm of the seed: one copy is enough
            if model in results.prompts:
                continue
            results.prompts[model] = read_per_prompt(fs, stage, metric, experiment, envs[experiment])
            results.prompts[model] |= read_benchmark_items(fs, stage)
            results.evals[model] = json.loads(fs.read_text(f"metrics/eval/{stage}.json"))
            if stage != "base":
                results.training[model] = json.loads(fs.read_text(f"metrics/{stage}.json"))
                curve = f"metrics/{stage}_live/plots/custom/success_vs_flops.json"
                results.curves[model] = json.loads(fs.read_text(curve)) if fs.exists(curve) else []
                per_prompt = f"metrics/{stage}_live/curve_per_prompt.csv"
                if fs.exists(per_prompt):  # experiments made before per-prompt curves have none
                    with fs.open(per_prompt) as f:
                        arrays = curve_arrays(pd.read_csv(f, dtype={"id": str, "unit": str}))
                    if arrays:
                        results.curve_prompts[model] = arrays
        results.training.setdefault("score", json.loads(fs.read_text("metrics/score.json")))
    for results in seeds.values():
        results.prompts, results.units = paired(results, name)
    return next(iter(envs.values())), [seeds[s] for s in sorted(seeds)], sorted(found)


def read_per_prompt(
    fs: DVCFileSystem, stage: str, metric: str, experiment: str, env: str
) -> dict[str, pd.DataFrame]:
    """{eval set: the metric and the independent unit of each prompt, indexed by prompt id}."""
    path = f"metrics/eval/per_prompt/{stage}.csv"
    if not fs.exists(path):
        raise SystemExit(f"error: {experiment} has no {path}; it predates per-prompt results: remove it with "
                         f"`dvc exp remove {experiment}` and run the study again")  # fmt: skip
    with fs.open(path) as f:
        table = pd.read_csv(f, dtype={"id": str, "unit": str})
    if "unit" not in table:
        table["unit"] = units_from_ids(table["id"], env)
    return {name: rows.set_index("id")[[metric, "unit"]] for name, rows in table.groupby("set", sort=False)}


def read_benchmark_items(fs: DVCFileSystem, stage: str) -> dict[str, pd.DataFrame]:
    """{"benchmarks": each benchmark item's verdict (0/1), an item its own unit}, or {} where the
    experiment ran no benchmark (benchmark.names empty, or made before the benchmark stage)."""
    path = f"metrics/benchmarks/per_item/{stage}.csv"
    if not fs.exists(path):
        return {}
    with fs.open(path) as f:
        items = pd.read_csv(f, dtype={"benchmark": str, "id": str})
    if items.empty:
        return {}
    ids = (items["benchmark"] + "/" + items["id"]).to_numpy(dtype=str)
    frame = pd.DataFrame({"correct": items["correct"].astype(float).to_numpy(), "unit": ids}, index=ids)
    return {BENCHMARKS: frame}


def units_from_ids(ids: pd.Series, env: str) -> pd.Series:
    """The unit of per-prompt files made before they had a unit column: a V-IRL step's id is
    <route>-s<step> (stages/envs/virl.py), a GeneralPoints hand is its own unit."""
    return ids.str.rsplit("-s", n=1).str[0] if env.startswith("virl") else ids


def curve_arrays(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """A curve_per_prompt.csv as arrays: FLOPs per point, the prompts' units, and success per point and
    prompt for every eval set ({} when the curves were off)."""
    if table.empty:
        return {}
    steps = sorted(table["step"].unique())
    arrays = {"flops": table.groupby("step")["flops"].first().loc[steps].to_numpy(dtype=float)}
    for eval_set, rows in table.groupby("set", sort=False):
        ids = list(dict.fromkeys(rows["id"]))
        grid = rows.pivot(index="step", columns="id", values="success").loc[steps, ids]
        arrays[eval_set] = grid.to_numpy(dtype=float)
        if eval_set == "ood_rule":  # the matched-compute claims read ood_rule
            arrays["units"] = rows.drop_duplicates("id").set_index("id").loc[ids, "unit"].to_numpy(dtype=str)
    return arrays


def paired(results: SeedResults, name: str) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Per-prompt success as arrays, once every model of the seed is known to have seen the same prompts,
    and the unit of each prompt per eval set."""
    units = {}
    for eval_set in {s for sets in results.prompts.values() for s in sets}:
        frames = {model: sets[eval_set] for model, sets in results.prompts.items() if eval_set in sets}
        ids = {model: tuple(frame.index) for model, frame in frames.items()}
        if len(set(ids.values())) > 1:
            raise SystemExit(
                f"error: study {name}, seed {results.seed}: models {', '.join(ids)} were evaluated on "
                f"different {eval_set} prompts; rerun the study's experiments on one commit"
            )
        units[eval_set] = next(iter(frames.values()))["unit"].to_numpy(dtype=str)
    prompts = {
        model: {eval_set: frame.iloc[:, 0].to_numpy(dtype=float) for eval_set, frame in sets.items()}
        for model, sets in results.prompts.items()
    }
    return prompts, units


def write_claims(name: str, metric: str) -> None:
    env, seeds, names = collect(name, metric)
    params = load_params()
    settings = Settings.from_params(get(params, "claims"))
    rows = claims_table(seeds, env, env.endswith("_vl"), settings)
    out = OUTPUT / name
    header = (
        f"# Claims on {env}: study `{name}`, seeds {', '.join(str(s.seed) for s in seeds)}\n\n"
        f"Effect: the difference in {metric.replace('_', ' ')} the finding names (a ratio for wall time and "
        "gradient norms; rows read off the scaling curves use the curves' sampled success), the mean over "
        f"seeds. {len(names)} experiments; `python -m stages.study claims` rewrites this file."
    )
    summary = {"study": name, "env": env, "metric": metric, "experiments": names}
    summary |= {"seeds": [s.seed for s in seeds], "settings": settings.__dict__, "claims": rows}
    write_json(out / "claims.json", summary | {"provenance": provenance(get(params, "data_seed"))})
    (out / "claims.md").write_text(markdown(rows, header, settings))
    print((out / "claims.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
