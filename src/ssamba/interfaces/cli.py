"""``ssamba embed``, ``ssamba export`` and ``ssamba explain``: the command-line faces of
:mod:`ssamba.interfaces.files`, :mod:`~ssamba.interfaces.export` and
:mod:`~ssamba.interfaces.explain`."""

from __future__ import annotations

import argparse
import sys

from ..argtypes import at_least
from ..fileio import strict_json


def _model_and_rest(args: argparse.Namespace, positional: str, at_least_after: int = 1) -> tuple[str, list[str]]:
    """The model (the first positional argument, or the hidden ``--checkpoint``) and the
    positional arguments after it; a ``UserError`` when inputs are missing."""
    from ..errors import UserError

    values = list(getattr(args, positional))
    model = args.checkpoint or (values.pop(0) if values else None)
    if model is None or len(values) < at_least_after:
        raise UserError(f"give the model first, then the {positional}: ssamba {args.command} MODEL "
                        f"{positional.upper()}...")
    return model, values


def cmd_embed(args: argparse.Namespace) -> int:
    """Clip-level (scene) and frame-level (timestamp) embeddings of audio files."""
    from .embedder import load
    from .files import embed_files

    layer: int | str = args.layer if args.layer == "mean" else int(args.layer)
    model, inputs = _model_and_rest(args, "inputs")
    embedder = load(model, hop_frames=args.hop_frames, layer=layer, whole=args.whole)
    index = embed_files(inputs, embedder, args.out, args.format, args.batch_size,
                        progress=not args.no_progress, overwrite=args.overwrite)
    if index["resumed"]:
        print(f"resumed: {len(index['resumed'])} file(s) already embedded in {args.out} were skipped "
              "(--overwrite recomputes them)", file=sys.stderr)
    print(f"embedded {len(index['files']) - len(index['resumed'])} file(s) into {args.out} "
          f"(D={index['embedding_size']}, hop {index['model_hop_ms']:.0f} ms)")
    if index["conversions"]:
        print(index["conversions"], file=sys.stderr)
    for failure in index["failed"]:
        print(f"skipped {failure['audio']}: {failure['error']}", file=sys.stderr)
    if args.json:
        print(strict_json(index, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """The top classes, with their probabilities, of a fine-tuned model for each audio file."""
    from ..models import load_model
    from .predict import predict_files

    model = load_model(args.model)
    result = predict_files(args.inputs, model, args.out, args.top_k, args.batch_size, args.labels,
                           progress=not args.no_progress, overwrite=args.overwrite)
    if args.out is None:
        for p in result["predictions"]:
            tops = ", ".join(f"{t['name']} {t['probability']:.3f}" for t in p["top"])
            print(f"{p['audio']}\t{tops}")
    else:
        resumed = f" ({result['resumed']} from an earlier run)" if result["resumed"] else ""
        print(f"predicted {len(result['predictions'])} file(s){resumed} into {args.out}")
    for failure in result["failed"]:
        print(f"skipped {failure['audio']}: {failure['error']}", file=sys.stderr)
    return 0


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help=cmd_predict.__doc__, description=cmd_predict.__doc__ + (
        " Each clip is scored on its first target_length frames, as in training and evaluate. Written to "
        "--out after every batch; a rerun into the same file skips the files already predicted by the same "
        "model."))
    p.add_argument("model", help="fine-tuned model directory, training run, or Hugging Face repo id")
    p.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively) or manifest JSONs")
    p.add_argument("--top-k", type=at_least(1), default=5, help="classes per clip, most probable first (default 5)")
    p.add_argument("--out", default=None, help="a .csv (audio,rank,id,name,probability,model) or .json file; "
                                               "default: print one line per file")
    p.add_argument("--labels", default=None,
                   help="label CSV, only for models that do not carry their classes")
    p.add_argument("--batch-size", type=at_least(1), default=8, help="clips per forward (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace --out instead of resuming it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def add_embed_parser(sub) -> None:
    p = sub.add_parser("embed", usage="%(prog)s MODEL INPUTS... --out OUT [options]", help=cmd_embed.__doc__,
                       description=cmd_embed.__doc__ + (
        " Writes one .npz per file (scene, timestamp_embeddings, timestamps_ms), or .npy files, or one"
        " embeddings.npz for the set, plus index.json listing every file and every skipped one. Output"
        " names mirror the inputs' paths (x/a.wav -> OUT/x/a.npz); running again into OUT resumes."))
    p.add_argument("inputs", nargs="+", metavar="MODEL INPUTS...",
                   help="the model (directory, training run, checkpoint, shipped name, Hub repo id, or a preset "
                        "name: random weights), then audio files, folders (searched recursively) or manifest JSONs")
    p.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)  # the earlier spelling of MODEL
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="npz", choices=["npz", "npy", "set"],
                   help="npz: one file per input; npy: three .npy per input; set: one embeddings.npz")
    p.add_argument("--layer", default="-1",
                   help="hidden state to read: index (0 = embedded input, then one per layer - for SSAMBA "
                        "one per pair of Mamba layers, as the official code pairs them - and -1 = the "
                        "normalised output) or 'mean' of all; an index out of range is an error naming the count")
    p.add_argument("--hop-frames", type=at_least(1), default=None,
                   help="time stride of the patches in 10 ms frames, i.e. the timestamp hop; the model is "
                        "re-strided to it, its weights carried over (default: the model's own stride, as "
                        "ssamba.load uses; 16x16-patch presets: 16 = 160 ms; 4 gives 40 ms, HEAR's hop)")
    p.add_argument("--whole", action="store_true",
                   help="run the encoder over each file in one pass (every token sees the whole file; memory "
                        "linear in its length for SSAMBA) instead of in windows of the model's input length; "
                        "for SSAMBA on long recordings, not for SSAST (attention is quadratic)")
    p.add_argument("--batch-size", type=at_least(1), default=8,
                   help="files of similar length per batch (results do not depend on it)")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute files already embedded in --out (default: resume, skipping them)")
    p.add_argument("--json", action="store_true", help="also print the index")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embed)


def cmd_export(args: argparse.Namespace) -> int:
    """Export an encoder to ONNX (spectrogram -> tokens, dynamic batch and length) and check it with onnxruntime."""
    from ..models import create_model, list_models, load_model
    from .export import MIN_FRAMES, check_onnx, check_onnx_waveforms, export_onnx

    if args.model in list_models():
        encoder = create_model(args.model)
        print(f"note: {args.model} is a preset: random weights", file=sys.stderr)
    else:
        encoder = load_model(args.model)
    lengths = args.check_frames or [encoder.config.input_tdim, 2 * encoder.config.input_tdim + 16]
    if any(t < MIN_FRAMES for t in lengths):
        raise ValueError(f"--check-frames must be at least {MIN_FRAMES} frames (two 16-frame patch columns)")
    def say(text: str) -> None:
        print(f"export: {text}", file=sys.stderr, flush=True)

    path = export_onnx(encoder, args.out, with_frontend=args.with_frontend, say=say)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if args.no_check:
        return 0
    say("checking the file with onnxruntime against PyTorch")
    if args.with_frontend:
        rows = check_onnx_waveforms(path, encoder, [1.0, 3.3])
        print(f"{'seconds':>8} {'max |diff|':>11} {'rel':>9}")
        for r in rows:
            print(f"{r['seconds']:>8.1f} {r['max_abs_diff']:>11.2e} {r['max_rel_diff']:>9.1e}")
        return _check_status(rows)
    rows = check_onnx(path, encoder, lengths)
    print(f"{'frames':>7} {'tokens':>7} {'max |diff|':>11} {'rel':>9} {'torch s':>9} {'onnxruntime s':>14}")
    for r in rows:
        print(f"{r['frames']:>7} {r['tokens']:>7} {r['max_abs_diff']:>11.2e} {r['max_rel_diff']:>9.1e} "
              f"{r['torch_s']:>9.4f} {r['onnxruntime_s']:>14.4f}")
    return _check_status(rows)


def _check_status(rows: list[dict], tolerance: float = 1e-4) -> int:
    """Exit status of an ONNX check: 1, with one error line, when onnxruntime and torch
    differ by more than ``tolerance`` (relative) anywhere."""
    worst = max(r["max_rel_diff"] for r in rows)
    if worst > tolerance:
        print(f"ssamba: error: onnxruntime differs from torch by {worst:.1e} (relative), more than {tolerance:g}",
              file=sys.stderr)
        return 1
    return 0


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help=cmd_export.__doc__, description=cmd_export.__doc__ + (
        " SSAMBA's scan becomes an ONNX Scan over time, so any length runs without custom operators. After"
        " writing, onnxruntime and PyTorch run the same random spectrograms at two lengths and the largest"
        " difference and both times are printed (exit status 1 above 1e-4 relative). Needs"
        " pip install 'ssamba[onnx]'."))
    p.add_argument("model", help="model directory, checkpoint, training run, Hugging Face repo id, or a preset name")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--check-frames", type=at_least(1), nargs="+", default=None, metavar="T",
                   help="input lengths of the check, in frames (default: the trained length and 2x + 16)")
    p.add_argument("--no-check", action="store_true", help="write the file without the onnxruntime check")
    p.add_argument("--with-frontend", action="store_true",
                   help="the graph takes a waveform (batch, samples) at the model's rate (16 kHz) and holds the "
                        "model's front end (Kaldi filterbank, padding, normalisation); a classifier's output is "
                        "its class probabilities (class names in the file's metadata), an encoder's its tokens; "
                        "checked on waveforms of 1 s and 3.3 s")
    p.set_defaults(func=cmd_export)


def _list_of(convert, what: str):
    """An argparse type: a comma-separated list, each item through ``convert``."""
    def parse(text: str) -> list:
        try:
            return [convert(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {what}") from None
    return parse


_int_list = _list_of(int, "integers")
_float_list = _list_of(float, "numbers")


def cmd_explain(args: argparse.Namespace) -> int:
    """Attention maps of an audio file: SSAMBA's hidden attention per Mamba layer and direction, SSAST's softmax attention."""
    from .explain import explain_file

    model, audio = _model_and_rest(args, "audio")
    if len(audio) != 1:
        from ..errors import UserError

        raise UserError(f"explain draws one audio file at a time, got {len(audio)}")
    summary = explain_file(audio[0], model, args.out, layers=args.layers, channels=args.channels or [],
                           times_s=args.at, frames=args.frames, start_s=args.start, compare=args.compare,
                           absolute=not args.signed, max_tokens=args.max_tokens, progress=not args.no_progress)
    for key, model in summary["models"].items():
        print(f"{model['source']} ({model['family']}): {model['tokens']} tokens ({model['grid'][0]} x "
              f"{model['grid'][1]} patches + {model['num_prefix_tokens']}), {len(model['layers'])} layer(s) x "
              f"{len(model['directions'])} map(s)")
    print(f"wrote {', '.join(summary['files'])} to {args.out}")
    return 0


def add_explain_parser(sub) -> None:
    p = sub.add_parser("explain", usage="%(prog)s MODEL AUDIO --out OUT [options]", help=cmd_explain.__doc__, description=cmd_explain.__doc__ + (
        " A selective scan is an implicit attention (Ali, Zimerman & Wolf, 2024): for each Mamba layer, the"
        " direction that scans forward in token order gives a causal L x L map, the other an anti-causal one,"
        " averaged over inner channels (of |alpha| unless --signed). SSAST's maps are its blocks' softmax"
        " attention averaged over heads. Writes maps.npz (every map, [output token, source token], class"
        " tokens first, then patches frequency row by row), explain.json, token_maps.png (patch-to-patch maps"
        " of up to 6 layers) and spectrogram_attention.png (what chosen times read, over the spectrogram)."
        " Maps are L^2 floats per layer and direction: inputs over --max-tokens are refused."))
    p.add_argument("audio", nargs="+", metavar="MODEL AUDIO",
                   help="the model (directory, training run, checkpoint, shipped name, Hub repo id, or a preset "
                        "name: random weights), then the audio file (resampled to the model's rate, mono)")
    p.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)  # the earlier spelling of MODEL
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--compare", default=None, metavar="MODEL",
                   help="a second model (e.g. SSAST beside SSAMBA) drawn in the same figures")
    p.add_argument("--layers", type=_int_list, default=None, metavar="LIST",
                   help="block indices, comma-separated, negative from the end (default: all)")
    p.add_argument("--channels", type=_int_list, default=None, metavar="LIST",
                   help="also keep these inner channels' maps (SSAMBA) or heads' (SSAST) whole in maps.npz")
    p.add_argument("--at", type=_float_list, default=None, metavar="SECONDS",
                   help="times whose output tokens spectrogram_attention.png draws (default: 1/4, 1/2, 3/4 of the way)")
    p.add_argument("--frames", type=at_least(1), default=None,
                   help="input length in 10 ms frames, padded or cropped (default: the model's front end's)")
    p.add_argument("--start", type=float, default=0.0, metavar="SECONDS", help="where in the file the input starts")
    p.add_argument("--signed", action="store_true", help="average alpha over channels, not |alpha|")
    p.add_argument("--max-tokens", type=at_least(1), default=2048,
                   help="refuse inputs of more tokens (each map is tokens^2 x 4 bytes; default 2048)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_explain)
