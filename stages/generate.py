"""Stage `generate`: every dataset the later stages read, for the env named in params.yaml.

    dvc repro generate          # or: python -m stages.generate

Writes data/generated/{train,eval_id,eval_ood_rule,eval_ood_visual (VL),corpus}.parquet. Records are
made as they are written, a row group at a time, so memory does not grow with the splits' sizes.
"""

from __future__ import annotations

from stages.core.params import choice, get, integer, load_params
from stages.core.paths import GENERATED
from stages.core.storage import atomic_dir, write_split
from stages.envs import ENV_NAMES, get_env


def main() -> None:
    params = load_params()
    env = get_env(choice(params, "env", ENV_NAMES))
    seed = integer(params, "data_seed", minimum=0)
    cfg = dict(get(params, env.params_key))
    sizes = {split: integer(params, f"{env.params_key}.sizes.{split}", minimum=0) for split in env.splits}
    cfg.pop("sizes")
    records = env.iter_records(sizes, cfg, seed)  # validates cfg before anything is written
    with atomic_dir(GENERATED) as out:
        for split in env.splits:
            count = write_split(records[split], out / f"{split}.parquet")
            print(f"generate {env.name}: {split:16s} {count:7d} records")


if __name__ == "__main__":
    main()
