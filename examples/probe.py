"""Is a demo task learnable, and do the encoders' features carry it?

Linear probes (scikit-learn's logistic regression) on a random sample of one task of
the offline suite (``kws``, ``speaker`` or ``sounds``): training clips vs test clips
(unseen voices, words or programs). Features:

* ``log-mel``: the normalised log-mel spectrogram, average-pooled 4 x 4 (no network);
* ``encoder``: mean-pooled tokens (class tokens left out) of a frozen encoder (``--encoder DIR``, e.g. the
  demo's ``pretrain_ssamba`` folder), beside the same architecture randomly initialised.

    python examples/probe.py [--task kws] [--encoder demo_out/pretrain_ssamba] [--train 2000 --test 600]

Builds (or reuses) the default suite. Prints train and test accuracies and chance. The
demo (``ssamba demo``) runs the full protocol: every layer, several seeds, fine-tuning.
"""

from __future__ import annotations

import argparse

import torch


def load(suite, task: str, split: str, count: int, frontend, labels, seed: int):
    from ssamba.data import ClipDataset, ClipDatasetConfig, collate_clips

    data = ClipDataset(suite.manifest(task, split), ClipDatasetConfig(frontend=frontend), labels)
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
    batch = collate_clips([data[int(i)] for i in pick])
    return batch["spec"], batch["target"].argmax(1)


def probe(train_x, train_y, test_x, test_y, classes: int) -> tuple[float, float]:
    """Train/test accuracy of a linear classifier (:func:`ssamba.training.probe.linear_probe`)."""
    from ssamba.training.probe import linear_probe

    train, test = linear_probe(train_x, train_y, [(train_x, train_y), (test_x, test_y)], classes)[:, 0].tolist()
    return train, test


def encode(encoder, spec):
    """Mean-pooled tokens of the encoder's last hidden state (its output)."""
    from ssamba.training.probe import layer_embeddings

    return layer_embeddings(encoder, spec)[-1]


def main(argv=None) -> int:
    from ssamba.corpora import build_suite
    from ssamba.data import compute_stats, read_label_csv
    from ssamba.demo import MODES
    from ssamba.frontend import FrontendConfig
    from ssamba.models import load_model, model_from_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="kws", choices=("kws", "speaker", "sounds"), help="which task of the suite")
    p.add_argument("--encoder", default=None, help="a saved encoder (model folder) to probe frozen")
    p.add_argument("--train", type=int, default=2000, help="training clips sampled")
    p.add_argument("--test", type=int, default=600, help="test clips sampled (unseen voices, words or programs)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    suite = build_suite(None, seed=0, scale="default", progress=False)
    labels = read_label_csv(suite.label_csv(args.task))
    mean, std = compute_stats(suite.manifest("unlabeled", "train"), max_clips=200)
    frames = MODES["default"].task_frames[args.task]
    frontend = FrontendConfig(target_length=frames, mean=mean, std=std)  # the demo's input
    train_x, train_y = load(suite, args.task, "train", args.train, frontend, labels, args.seed)
    test_x, test_y = load(suite, args.task, "test", args.test, frontend, labels, args.seed)
    n = labels.num_classes
    print(f"{args.task}: {len(train_y)} training clips, {len(test_y)} test clips, chance {100 / n:.1f}%")

    from ssamba.training.probe import pooled_logmel as pooled

    tr, te = probe(pooled(train_x), train_y, pooled(test_x), test_y, n)
    print(f"log-mel, pooled 4x4        train {100 * tr:5.1f}%  test {100 * te:5.1f}%")
    if args.encoder:
        encoder = load_model(args.encoder)
        random = model_from_config(encoder.config)
        for name, model in ((f"encoder {args.encoder}", encoder), ("same encoder, random init", random)):
            tr, te = probe(encode(model, train_x), train_y, encode(model, test_x), test_y, n)
            print(f"{name:<26} train {100 * tr:5.1f}%  test {100 * te:5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
