"""Stage `model_source`: the contents of the checkpoint under `model.path`, hashed, so that a changed
checkpoint reruns `base` and everything after it.

    dvc repro model_source          # or: python -m stages.model_source

DVC tracks files inside the repository; `model.path` is usually outside it (a local Hugging Face
directory of several GB), and as a param DVC sees only its name. This stage runs on every `dvc repro`
(`always_changed`) and writes data/model_source.json: the SHA-256 of every file under the directory. `base`
depends on that file, so DVC reruns it when, and only when, the contents differ. Hashes are kept in
.dvc/tmp/model_source.json by (path, size, mtime) as DVC keeps its own, so an unchanged checkpoint costs a
stat per file, not a read. With `model.path: null` (the embedded default) the file says so and nothing
is hashed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from stages.core.params import ParamError, get, load_params
from stages.core.paths import MODEL_SOURCE
from stages.core.storage import write_json

MEMO = Path(".dvc/tmp/model_source.json")
CHUNK = 1 << 24


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: Path, memo: dict, used: dict) -> dict[str, dict]:
    """{relative path: {size, sha256}} of every file under `root` (symlinks followed, as the Hugging Face
    cache links its snapshots to blobs). `memo` maps "path size mtime_ns" to a digest already computed;
    `used` receives the entries of this tree."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        key = f"{path.resolve()} {stat.st_size} {stat.st_mtime_ns}"
        used[key] = memo[key] if key in memo else sha256(path)
        files[path.relative_to(root).as_posix()] = {"size": stat.st_size, "sha256": used[key]}
    return files


def main() -> None:
    params = load_params()
    path = get(params, "model.path")
    if path is None:
        write_json(MODEL_SOURCE, {"model.path": None})
        print("model_source: model.path is null (the embedded model); nothing to hash")
        return
    root = Path(str(path))
    if not root.is_dir():
        raise ParamError(f"model.path={str(path)!r} does not exist; give a local Hugging Face model folder")
    memo = json.loads(MEMO.read_text()) if MEMO.is_file() else {}
    used = {}
    files = hash_tree(root, memo, used)
    if not files:
        raise ParamError(f"model.path={str(path)!r} is an empty directory; give a Hugging Face checkpoint")
    MEMO.parent.mkdir(parents=True, exist_ok=True)
    MEMO.write_text(json.dumps(used))  # this checkpoint's digests only
    total = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    write_json(MODEL_SOURCE, {"model.path": str(path), "sha256": total, "files": files})
    size = sum(f["size"] for f in files.values())
    print(f"model_source: {path}: {len(files)} files, {size / 1e9:.2f} GB, sha256 {total[:12]}")


if __name__ == "__main__":
    main()
