"""``ssamba predict``: the top classes of a fine-tuned model for each audio file.

Inputs are files, folders (searched recursively) or manifests, as for ``ssamba embed``.
Each clip goes through the front end the model was trained with (its first
``target_length`` frames, padded, as in training and ``ssamba evaluate``) and the
classifier; scores are softmax probabilities, or per-class sigmoids for a multi-label
model. Class names come from the model (fine-tuning stores them), or from a label CSV
for models that do not carry them.

With ``out`` (``.csv`` or ``.json``) the predictions are written after every batch,
atomically, each row with the model's content hash; a rerun into the same file skips
the files already predicted by the same model (a file of another model is refused
unless ``overwrite``), so a killed run loses at most one batch.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write_text, strict_json
from .files import collect_inputs

CSV_COLUMNS = ("audio", "rank", "id", "name", "probability", "model")


def _read_previous(out: Path, fingerprint: str) -> dict[str, list[dict]]:
    """Predictions already in ``out`` (audio -> top list), all by the model ``fingerprint``."""
    if not out.is_file() or out.stat().st_size == 0:
        return {}
    try:
        if out.suffix == ".json":
            content = json.loads(out.read_text(encoding="utf-8"))
            models = {content.get("model")}
            rows = {p["audio"]: p["top"] for p in content.get("predictions", [])}
        else:
            table = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
            models = {r.get("model") for r in table}
            rows: dict[str, list[dict]] = {}
            for r in table:
                rows.setdefault(r["audio"], []).append(
                    {"id": r["id"], "name": r["name"], "probability": float(r["probability"])})
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise FileExistsError(f"{out} exists and is not a predictions file ({type(err).__name__}); "
                              "pass --overwrite or another --out") from None
    if models != {fingerprint}:
        raise FileExistsError(f"{out} holds predictions of another model ({sorted(map(str, models))[:2]}); "
                              "pass --overwrite to replace them, or another --out")
    return rows


def _write(out: Path, fingerprint: str, classes: list[dict], predictions: list[dict], failed: list[dict]) -> None:
    if out.suffix == ".json":
        atomic_write_text(out, strict_json({"model": fingerprint, "classes": classes, "predictions": predictions,
                                           "failed": failed}, indent=1))
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for p in predictions:
        for rank, top in enumerate(p["top"], 1):
            writer.writerow({"audio": p["audio"], "rank": rank, "id": top["id"], "name": top["name"],
                             "probability": f"{top['probability']:.6g}", "model": fingerprint})
    atomic_write_text(out, text.getvalue())


@torch.no_grad()
def predict_files(inputs: list[str | Path], model: torch.nn.Module, out: str | Path | None = None, top_k: int = 5,
                  batch_size: int = 8, label_csv: str | None = None, progress: bool = True,
                  overwrite: bool = False) -> dict[str, Any]:
    """Predict every input; returns ``{"predictions": [{"audio", "top": [{"id", "name",
    "probability"}, ...]}], "failed": [{"audio", "error"}], "resumed": n}`` (and writes it
    to ``out`` when given). ``model`` is a loaded fine-tuned classifier."""
    from ..frontend import LogMelFrontend, load_audio
    from ..frontend.logmel import NonFiniteFeaturesError
    from ..models.serialization import model_fingerprint
    from ..progress import progress as progress_bar
    from ..training.run import model_label_map

    if getattr(model, "head", None) is None:
        raise ValueError("predict needs a fine-tuned classifier (a model with a head); this one only embeds "
                         "(use ssamba embed)")
    if model.frontend_config is None:
        raise ValueError("this model carries no front-end config; it was not saved by a training run")
    if top_k < 1:
        raise ValueError(f"top-k must be at least 1, got {top_k}")
    if out is not None and Path(out).suffix not in (".csv", ".json"):
        raise ValueError(f"--out {out}: write predictions to a .csv or a .json file")
    labels = model_label_map(model, label_csv)
    multilabel = bool(getattr(model, "labels", None) and model.labels["multilabel"])
    model = model.eval()
    frontend = LogMelFrontend(model.frontend_config)
    fingerprint = model_fingerprint(model)
    classes = [{"id": i, "name": n} for i, n in zip(labels.ids, labels.names)]
    out = Path(out) if out is not None else None
    done = {} if out is None or overwrite else _read_previous(out, fingerprint)
    items = collect_inputs(inputs)
    predictions = [{"audio": str(path), "top": done[str(path)]} for path, _ in items if str(path) in done]
    todo = [path for path, _ in items if str(path) not in done]
    failed: list[dict] = []
    k = min(top_k, labels.num_classes)
    bar = progress_bar(len(todo), "predicting", unit="file", enabled=progress, every=max(1, len(todo) // 20))
    for start in range(0, len(todo), batch_size):
        batch, specs = [], []
        for path in todo[start:start + batch_size]:
            try:
                wave = load_audio(path, frontend.config.sample_rate)
                problem = frontend.problem(wave)
                if problem:
                    raise ValueError(problem)
                specs.append(frontend.features(wave, checked=True)[0][0])
                batch.append(path)
            except (ValueError, OSError, NonFiniteFeaturesError) as err:
                failed.append({"audio": str(path), "error": str(err)})
        if batch:
            logits = model(torch.stack(specs)).float()
            scores = logits.sigmoid() if multilabel else logits.softmax(dim=-1)
            values, indices = scores.topk(k, dim=-1)
            for path, vals, idx in zip(batch, values.tolist(), indices.tolist()):
                predictions.append({"audio": str(path), "top": [
                    {"id": labels.ids[i], "name": labels.names[i], "probability": v} for v, i in zip(vals, idx)]})
        if out is not None:
            _write(out, fingerprint, classes, predictions, failed)
        bar.update(len(todo[start:start + batch_size]))
    bar.close()
    if out is not None:
        _write(out, fingerprint, classes, predictions, failed)
    return {"predictions": predictions, "failed": failed, "resumed": len(done), "model": fingerprint}
