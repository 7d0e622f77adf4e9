"""A/B the tar shard writer and reader (``ssamba.data.shards``) at a git revision against
the working tree, in one process.

Writes ``--clips`` generated WAV clips of ``--seconds`` each once, then, alternating A and
B ``--repeats`` times: packs them into shards (``write_shards``), reads every sample's
bytes back (``iter_samples``), counts the samples from the tar headers
(``count_samples``) and streams the training items (``ShardDataset``: decoding, the
filterbank, normalisation; one thread), after one unmeasured round of each (imports, caches). Prints each
operation's best time for A (the revision) and B (the working tree) and B/A, and whether
each version reads the other's shards as the same samples.

    python lab/shard_io_ab.py 67c8a87 --clips 2000 --seconds 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the lab's own helpers
from revision import module_at  # noqa: E402


def load_revision(rev: str):
    """``ssamba.data.shards`` as of ``rev``, imported as a sibling module of the current one."""
    return module_at(rev, "ssamba.data.shards", "shard_io_ab")


def make_clips(folder: Path, clips: int, seconds: float) -> list:
    import numpy as np
    import soundfile

    from ssamba.data import ClipEntry

    rng = np.random.default_rng(0)
    entries = []
    for i in range(clips):
        path = folder / f"clip{i:05d}.wav"
        soundfile.write(path, 0.1 * rng.standard_normal(int(16000 * seconds)), 16000, subtype="PCM_16")
        entries.append(ClipEntry(str(path), (f"c{i % 10}",)))
    return entries


def run_once(module, entries: list, out: Path, per_shard: int) -> dict[str, float]:
    """Seconds to write, read and count ``entries``' shards with ``module``."""
    times = {}
    started = time.perf_counter()
    shards = module.write_shards(entries, out, max_clips_per_shard=per_shard, overwrite=True)
    times["write"] = time.perf_counter() - started
    started = time.perf_counter()
    read = sum(len(sample[1]) for shard in shards for sample in module.iter_samples(shard))
    times["read"] = time.perf_counter() - started
    if read != 2 * len(entries):  # an audio and a .json member per clip
        raise SystemExit(f"shard_io_ab: error: read {read} members of {len(entries)} clips")
    started = time.perf_counter()
    counted = sum(module.count_samples(shard) for shard in shards)
    times["count"] = time.perf_counter() - started
    if counted != len(entries):
        raise SystemExit(f"shard_io_ab: error: counted {counted} samples of {len(entries)} clips")
    from ssamba.data import ClipDatasetConfig
    from ssamba.frontend import FrontendConfig

    dataset = module.ShardDataset(out, ClipDatasetConfig(frontend=FrontendConfig(target_length=300)))
    started = time.perf_counter()
    items = sum(item is not None for item in dataset)
    times["items"] = time.perf_counter() - started
    if items != len(entries):
        raise SystemExit(f"shard_io_ab: error: {items} good items of {len(entries)} clips")
    return times


def same_samples(module, a: Path, b: Path) -> bool:
    """Whether ``module`` reads folders ``a`` and ``b`` as the same ``(key, {extension:
    bytes})`` samples, compared one at a time."""
    import itertools

    def samples(folder: Path):
        return (sample for shard in sorted(folder.glob("*.tar")) for sample in module.iter_samples(shard))

    return all(x == y for x, y in itertools.zip_longest(samples(a), samples(b)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", help="git revision of A (B is the working tree)")
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--per-shard", type=int, default=500, help="clips per shard")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if min(args.clips, args.per_shard, args.repeats) < 1 or args.seconds <= 0:
        parser.error("--clips, --per-shard and --repeats must be >= 1 and --seconds > 0")
    import torch

    import ssamba.data.shards as current

    torch.set_num_threads(1)

    versions = {"A": load_revision(args.revision), "B": current}
    with tempfile.TemporaryDirectory(prefix="shard_io_ab-") as tmp:
        tmp = Path(tmp)
        (tmp / "clips").mkdir()
        entries = make_clips(tmp / "clips", args.clips, args.seconds)
        best: dict[str, dict[str, float]] = {"A": {}, "B": {}}
        for repeat in range(args.repeats + 1):
            for name, module in versions.items():
                for op, seconds in run_once(module, entries, tmp / name, args.per_shard).items():
                    if repeat:  # the first round warms up
                        best[name][op] = min(best[name].get(op, float("inf")), seconds)
        same = all(same_samples(reader, tmp / "A", tmp / "B") for reader in versions.values())
    print(f"{args.clips} clips of {args.seconds:g} s, {args.per_shard} per shard, best of {args.repeats}; "
          f"each reads the other's shards as the same samples: {same}")
    for op in ("write", "read", "count", "items"):
        a, b = best["A"][op], best["B"][op]
        print(f"{op:6s} A {a:8.3f} s   B {b:8.3f} s   B/A {b / a:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
