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
margin, the level, the bootstrap draws): stages/claims.py and docs/statistics.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from dvc.api import DVCFileSystem
from omegaconf import OmegaConf

from stages.claims import BENCHMARKS, SUBSETS, SeedResults, Settings, claims_table, markdown
from stages.cluster import INSTALL, RayEngine, git
from stages.envs import ENV_NAMES, get_env
from stages.params import ParamError, get, integer, load_params, number, per_env
from stages.provenance import provenance
from stages.storage import atomic_dir, write_json

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


DVC_TRIES = 5  # tries of a dvc command that can lose a race with the queue's workers
DVC_RETRY_S = 2
# a running experiment's info file (.dvc/tmp/exps/run/<rev>/<rev>.run, standalone/run/ for --temp runs)
RUNNING_INFO_GONE = re.compile(r"No such file or directory: '[^']*/\.dvc/tmp/exps/[^']*\.run'")


def dvc(*args: str, retry_if: re.Pattern | None = None) -> str:
    """`dvc *args`'s stdout; a failure whose message matches `retry_if` is tried DVC_TRIES times in all."""
    for attempt in range(1, DVC_TRIES + 1):
        result = subprocess.run(["dvc", *args], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout
        message = result.stderr.strip() or result.stdout.strip()
        if retry_if is None or not retry_if.search(message) or attempt == DVC_TRIES:
            raise SystemExit(f"error: `dvc {' '.join(args)}` failed:\n{message}")
        time.sleep(DVC_RETRY_S)


def experiments() -> dict[str, str]:
    """{name: commit} of the finished experiments based on the current commit, from `dvc exp show --json`."""
    found = {}
    # `exp show` lists the queue's active experiments, then reads each one's info file, which a worker
    # that finishes meanwhile removes (dvc 3.67, collect_active_data; seen in CI): that failure is retried
    shown = dvc("exp", "show", "--json", "--hide-queued", "--hide-failed", retry_if=RUNNING_INFO_GONE)
    for commit in json.loads(shown or "[]"):
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
    kept = kept_experiments(name, overrides)
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
            if experiment in kept:
                print(f"study: {experiment} kept in study/{name}/results (made at {kept[experiment][:7]})")
                continue
            todo[experiment] = {**overrides, "seed": seed, **arm_params(arm, overrides)}
        ran += len(todo)
        if todo:
            failed |= engine.run(todo, lock)
            engine.sync()
            made = experiments()
    return ran, failed


def arm_params(arm: str, overrides: dict[str, str]) -> dict:
    """The params that make `arm`, with its steps where they are its own (params.yaml with the study's --set,
    per env where the steps are given per env): the grpo_viter3 arm's grpo.steps are those the study would
    train over study.viter3_step_divisor, the budget arm's steps study.budget_multiple times them."""
    made = dict(ARMS[arm])
    if arm not in ("budget", "grpo_viter3"):
        return made
    config = study_config(overrides)
    env = get(config, "env")
    if arm == "grpo_viter3":
        divisor = number(config, per_env(config, "study.viter3_step_divisor", env), minimum=1.0)
        key = per_env(config, "grpo.steps", env)
        made[key] = max(1, round(integer(config, key, minimum=1) / divisor))
        return made
    multiple = integer(config, "study.budget_multiple", minimum=2)
    for stage in ("sft", "grpo"):
        key = per_env(config, f"{stage}.steps", env)
        made[key] = integer(config, key, minimum=1) * multiple
    return made


# The files the claims read of one model, by their name under study/<name>/results/s<seed>/<model>/ ->
# their path in the experiment that made the model; the first two are required.
MODEL_FILES = {
    "per_prompt.csv": "metrics/eval/per_prompt/{stage}.csv",
    "eval.json": "metrics/eval/{stage}.json",
    "training.json": "metrics/{stage}.json",
    "curve.json": "metrics/{stage}_live/plots/custom/success_vs_flops.json",
    "curve_per_prompt.csv": "metrics/{stage}_live/curve_per_prompt.csv",
    "benchmark_items.csv": "metrics/benchmarks/per_item/{stage}.csv",
}
# Params the arms and seeds set: the rest must agree for experiments to form one study.
ARM_KEYS = ("seed", "subset", "grpo.viter", "sft.steps", "grpo.steps")
# Sections of params.yaml that no stage reads: the study's own (what they change in an experiment, its arm's
# steps, is compared as ARM_KEYS) and the claims'.
STUDY_SECTIONS = ("study", "claims")


@dataclass
class StudyFiles:
    """What a study's claims read: per seed, per model (and "score"), {file name: text}; where each came
    from; and each experiment's params. study/<name>/results/ holds it in git, so a clone can rewrite the
    table, and resume the study, without the experiments."""

    env: str
    experiments: dict[str, str]  # experiment -> its commit
    params: dict[str, dict]  # experiment -> its params.yaml
    files: dict[int, dict[str, dict[str, str]]] = field(default_factory=dict)
    made_by: dict[int, dict[str, str]] = field(default_factory=dict)  # seed -> model -> experiment


def read_experiments(name: str, kept_env: str | None = None) -> StudyFiles | None:
    """The study's files at each of its experiments on the current commit (None if there are none); their
    env is checked against the kept results' (`kept_env`) before any file is read."""
    pattern = experiment_pattern(name)
    found = {m: rev for m, rev in experiments().items() if pattern.fullmatch(m)}
    if not found:
        return None
    systems = {experiment: DVCFileSystem(".", rev=rev) for experiment, rev in sorted(found.items())}
    params = {experiment: read_params(fs.read_text("params.yaml")) for experiment, fs in systems.items()}
    envs = {experiment: p["env"] for experiment, p in params.items()}
    kept = {f"study/{name}/results": kept_env} if kept_env else {}
    study = StudyFiles(one_env(name, kept | envs), found, params)
    # a seed's sft_easy_medium experiment first: base, GRPO and score come from it (see merge)
    for experiment, fs in sorted(systems.items(), key=lambda item: not item[0].endswith("-sft_easy_medium")):
        seed_text, arm = pattern.fullmatch(experiment).groups()
        seed = int(seed_text)
        files, made_by = study.files.setdefault(seed, {}), study.made_by.setdefault(seed, {})
        for model, stage in ARM_MODELS[arm].items():
            # base and grpo come with every sft arm of the seed: one copy is enough
            if model in files:
                continue
            paths = {file: path.format(stage=stage) for file, path in MODEL_FILES.items()}
            if stage == "base":
                del paths["training.json"], paths["curve.json"], paths["curve_per_prompt.csv"]
            if not fs.exists(paths["per_prompt.csv"]):
                raise SystemExit(
                    f"error: {experiment} has no {paths['per_prompt.csv']}; it predates per-prompt results: "
                    f"remove it with `dvc exp remove {experiment}` and run the study again"
                )
            files[model] = {file: fs.read_text(path) for file, path in paths.items() if fs.exists(path)}
            made_by[model] = experiment
        files.setdefault("score", {"score.json": fs.read_text("metrics/score.json")})
    return study


def read_params(text: str) -> dict:
    """A params.yaml as load_params reads it (OmegaConf's YAML: 1e-3 is a number)."""
    return OmegaConf.to_container(OmegaConf.create(text))


def study_config(overrides: dict[str, str]):
    """params.yaml with the study's --set values, each read as YAML the way load_params reads the file."""
    config = load_params()
    for key, value in overrides.items():
        OmegaConf.update(config, key, read_params(f"value: {value}")["value"], force_add=True)
    return config


def kept_experiments(name: str, overrides: dict[str, str]) -> dict[str, str]:
    """{experiment: commit} of those kept in study/<name>/results that this run would make with the same
    params; none where the model comes from model.path, whose weights the params do not pin."""
    kept = read_results(OUTPUT / name / "results")
    if kept is None:
        return {}
    config = study_config(overrides)
    if get(config, "model.path") is not None:
        return {}
    ours = study_params(OmegaConf.to_container(config))
    pattern = experiment_pattern(name)
    made_by_arm = {arm: arm_params(arm, overrides) for arm in ARMS}  # each reads params.yaml once
    same = {}
    for experiment, rev in kept.experiments.items():
        match = pattern.fullmatch(experiment)
        if match is None or study_params(kept.params[experiment]) != ours:
            continue
        seed, arm = int(match.group(1)), match.group(2)
        would = config.copy()
        for key, value in {"seed": seed, **made_by_arm[arm]}.items():
            OmegaConf.update(would, key, value, force_add=True)
        if arm_values(kept.params[experiment]) == arm_values(OmegaConf.to_container(would)):
            same[experiment] = rev
    return same


def experiment_pattern(name: str) -> re.Pattern:
    return re.compile(rf"{re.escape(name)}-s(\d+)-({'|'.join(ARMS)})")


def one_env(name: str, envs: dict[str, str]) -> str:
    if len(set(envs.values())) > 1:
        mixed = ", ".join(f"{source} ({env})" for source, env in envs.items())
        raise SystemExit(f"error: study {name} mixes envs: {mixed}; give each env its own --name")
    return next(iter(envs.values()))


# The model params only a VL env's embedded model reads (its vision tower)
VISION_KEYS = ("model.vision_hidden_size", "model.vision_layers", "model.vision_lr_scale")


def study_params(params: dict) -> dict:
    """An experiment's params as they bear on its env, so that a change elsewhere keeps its results:
    without those its arm and seed set and the study's own sections; each per-env value ({gp_l: ...,
    virl_l: ...}) read for the env; of the generate sections only the env's own, with the code's defaults
    filled in (a new key at its default changes nothing); for a text env, without the keys only images and
    a vision tower read."""
    env = get_env(params.get("env"))

    def walk(node, prefix: str = ""):
        if isinstance(node, dict) and node and set(node) <= set(ENV_NAMES) and env.name in node:
            return walk(node[env.name], prefix)
        if not isinstance(node, dict):
            return node
        skipped = (*ARM_KEYS, *STUDY_SECTIONS)
        return {k: walk(v, f"{prefix}{k}.") for k, v in node.items() if f"{prefix}{k}" not in skipped}

    bearing = walk(params)
    section = env.params_key.removeprefix("generate.")
    bearing["generate"] = {section: {**env.defaults, **bearing.get("generate", {}).get(section, {})}}
    if not env.visual:
        for key in (*VISION_KEYS, *(f"{env.params_key}.{k}" for k in env.image_keys)):
            *parents, last = key.split(".")
            node = bearing
            for parent in parents:
                node = node.get(parent, {})
            node.pop(last, None)
    return bearing


def arm_values(params: dict) -> dict:
    """The values of an experiment's params that its arm and seed set (ARM_KEYS), per-env ones for its env."""
    values = {}
    for key in ARM_KEYS:
        node = params
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values[key] = node.get(params.get("env")) if isinstance(node, dict) else node
    return values


def read_results(folder: Path) -> StudyFiles | None:
    """study/<name>/results/ as StudyFiles (None where the study kept none)."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return None
    manifest = json.loads(manifest_path.read_text())
    study = StudyFiles(manifest["env"], manifest["experiments"], manifest["params"])
    for seed_text, models in manifest["made_by"].items():
        seed = int(seed_text)
        study.made_by[seed] = dict(models)
        study.files[seed] = {
            model: {path.name: path.read_text() for path in sorted((folder / f"s{seed}" / model).iterdir())}
            for model in [*models, "score"]
        }
    return study


# The models whose timings the wall-time claim compares with sft_easy_medium's (stages/claims.py)
TIMED_WITH_SFT_EASY_MEDIUM = ("score", "grpo")


def merge(name: str, kept: StudyFiles | None, made: StudyFiles | None) -> StudyFiles:
    """The experiments made on this commit, over those kept in study/<name>/results: a model made by both
    comes from the new experiment, except a seed's score and GRPO, which come with its sft_easy_medium. Kept
    results made with other params than the new ones are dropped. (Their envs were checked by
    read_experiments.)"""
    if kept is None or made is None:
        if kept is None and made is None:
            raise SystemExit(
                f"error: no experiments named {name}-s<seed>-<arm> on this commit and no "
                f"study/{name}/results; run `python -m stages.study run` (or pass the study's --name)"
            )
        return kept or made
    ours = study_params(next(iter(made.params.values())))
    if any(study_params(p) != ours for p in kept.params.values()):
        print(f"study {name}: study/{name}/results was made with other params; replaced", file=sys.stderr)
        return made
    # Another machine's kernels train another base from the same params: arms compared with it must share it
    bases = [
        (kept.files[s].get("base"), made.files[s].get("base")) for s in set(kept.files) & set(made.files)
    ]
    if any(k and m and k["per_prompt.csv"] != m["per_prompt.csv"] for k, m in bases):
        print(
            f"study {name}: study/{name}/results starts from another base model (its per-prompt results "
            "differ: made on another CPU?); replaced: run the study again to remake its other arms here",
            file=sys.stderr,
        )
        return made
    merged = StudyFiles(kept.env, kept.experiments | made.experiments, kept.params | made.params)
    for seed in sorted(set(kept.files) | set(made.files)):
        merged.files[seed] = kept.files.get(seed, {}) | made.files.get(seed, {})
        merged.made_by[seed] = kept.made_by.get(seed, {}) | made.made_by.get(seed, {})
        # The wall-time row sets score and GRPO against sft_easy_medium: all three from one source, so a
        # seed's ratio is one machine's (a budget run elsewhere must not bring its score to kept arms)
        if "sft_easy_medium" not in made.files.get(seed, {}):  # else the new experiment's already won
            for model in TIMED_WITH_SFT_EASY_MEDIUM:
                if model in kept.files.get(seed, {}):
                    merged.files[seed][model] = kept.files[seed][model]
                    if model in kept.made_by[seed]:
                        merged.made_by[seed][model] = kept.made_by[seed][model]
    used = {experiment for models in merged.made_by.values() for experiment in models.values()}
    merged.experiments = {e: rev for e, rev in sorted(merged.experiments.items()) if e in used}
    merged.params = {e: p for e, p in merged.params.items() if e in used}
    return merged


def write_results(folder: Path, study: StudyFiles) -> None:
    """StudyFiles as study/<name>/results/: manifest.json and s<seed>/<model>/<file>, replaced whole."""
    with atomic_dir(folder) as scratch:
        for seed, models in study.files.items():
            for model, files in models.items():
                for file, text in files.items():
                    (scratch / f"s{seed}" / model).mkdir(parents=True, exist_ok=True)
                    (scratch / f"s{seed}" / model / file).write_text(text)
        made_by = {str(seed): models for seed, models in sorted(study.made_by.items())}
        manifest = {"env": study.env, "experiments": study.experiments, "made_by": made_by}
        write_json(scratch / "manifest.json", manifest | {"params": study.params})


def seed_results(study: StudyFiles, name: str, metric: str) -> list[SeedResults]:
    """The claims' input, per seed, from the study's files."""
    seeds = []
    for seed, models in sorted(study.files.items()):
        results = SeedResults(seed, prompts={})
        for model, files in sorted(models.items()):  # one order, whichever source the files came from
            if model == "score":
                results.training["score"] = json.loads(files["score.json"])
                continue
            results.prompts[model] = per_prompt_sets(files["per_prompt.csv"], metric, study.env)
            results.prompts[model] |= benchmark_items(files.get("benchmark_items.csv", ""))
            results.evals[model] = json.loads(files["eval.json"])
            if "training.json" in files:
                results.training[model] = json.loads(files["training.json"])
                results.curves[model] = json.loads(files.get("curve.json", "[]"))
                # experiments made before per-prompt curves have none
                if arrays := curve_arrays(read_csv(files.get("curve_per_prompt.csv", ""))):
                    results.curve_prompts[model] = arrays
        results.prompts, results.units = paired(results, name)
        seeds.append(results)
    return seeds


def read_csv(text: str) -> pd.DataFrame:
    if not text.strip():
        return pd.DataFrame()
    return pd.read_csv(io.StringIO(text), dtype={"id": str, "unit": str, "benchmark": str})


def per_prompt_sets(text: str, metric: str, env: str) -> dict[str, pd.DataFrame]:
    """{eval set: the metric and the independent unit of each prompt, indexed by prompt id}."""
    table = read_csv(text)
    if "unit" not in table:
        table["unit"] = units_from_ids(table["id"], env)
    return {name: rows.set_index("id")[[metric, "unit"]] for name, rows in table.groupby("set", sort=False)}


def benchmark_items(text: str) -> dict[str, pd.DataFrame]:
    """{"benchmarks": each benchmark item's verdict (0/1), an item its own unit}, or {} where the
    experiment ran no benchmark (benchmark.names empty, or made before the benchmark stage)."""
    if not text.strip():
        return {}
    items = read_csv(text)
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


def experiments_setup(study: StudyFiles) -> list[dict]:
    """Each distinct device and set of versions the study's evaluations ran on, with how many of its models'
    eval files each made (a study resumed on another machine has more than one)."""
    setups: dict[str, dict] = {}
    for models in study.files.values():
        for files in models.values():
            if "eval.json" in files:
                made = json.loads(files["eval.json"])["provenance"]
                setup = {"device": made["device"], "versions": made["versions"]}
                key = json.dumps(setup, sort_keys=True)
                setups.setdefault(key, setup | {"evaluations": 0})["evaluations"] += 1
    return list(setups.values())


def write_claims(name: str, metric: str) -> None:
    out = OUTPUT / name
    kept = read_results(out / "results")
    study = merge(name, kept, read_experiments(name, kept and kept.env))
    write_results(out / "results", study)
    seeds = seed_results(study, name, metric)
    params = load_params()
    settings = Settings.from_params(get(params, "claims"))
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
