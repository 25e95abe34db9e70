"""Clean corpus → a text model fitted on its captions and a CNN trained to predict each post's text target.

    python -m pipelines.train_embeddings --input CLEAN --output OUT [--text-model word2vec|lda] ...

Writes OUT/model.safetensors (CNN + text model), OUT/train_state.pt (for --resume), OUT/history.json,
OUT/loss_curve.png and OUT/summary.json. Posts whose id hashes into --heldout-fraction are never trained on;
pipelines.evaluate_embeddings evaluates on exactly those.
"""

import json
import os
import sys
import time
from collections import Counter

from models.common.errors import CheckpointError, UsageError
from models.common.files import write_atomically
from models.embedding.choices import LOSSES, TARGET_KINDS
from pipelines.cli import (
    BACKBONES,
    INPUT_HELP,
    OUTPUT_HELP,
    ArgumentParser,
    add_common_args,
    check_apart,
    positive_float,
    positive_int,
    run_main,
)


def parse_args(argv):
    parser = ArgumentParser(prog="python -m pipelines.train_embeddings", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--input", required=True, help=f"{INPUT_HELP}: the clean corpus, clean-*.parquet files, a glob or their folder"
    )
    parser.add_argument(
        "--output", required=True, help=f"{OUTPUT_HELP}: a folder for the checkpoint, curves and summary"
    )
    text = parser.add_argument_group("text targets")
    text.add_argument("--text-model", choices=TARGET_KINDS, default="word2vec", help="(default: %(default)s)")
    text.add_argument(
        "--text-dim", type=positive_int, default=None, help="word-vector size (default 128) or LDA topics (default 40)"
    )
    text.add_argument("--no-tfidf", action="store_true", help="plain mean of word vectors instead of TF-IDF weighted")
    text.add_argument("--min-count", type=positive_int, default=5, help="captions a word must occur in (default: 5)")
    model = parser.add_argument_group("model and training")
    model.add_argument("--backbone", choices=BACKBONES, default="resnet18", help="(default: %(default)s)")
    model.add_argument(
        "--weights", default="imagenet", help="backbone init: imagenet (from the torch cache), random, or a PATH"
    )
    model.add_argument("--loss", choices=LOSSES, default=None, help="default: cosine for word2vec, sigmoid-ce for lda")
    model.add_argument("--epochs", type=positive_int, default=10, help="(default: %(default)s)")
    model.add_argument("--lr", type=positive_float, default=1e-3, help="AdamW learning rate (default: %(default)s)")
    model.add_argument("--heldout-fraction", type=float, default=0.1, help="posts kept for evaluation (default: 0.1)")
    model.add_argument("--decode-threads", type=positive_int, default=2, help="image decoding threads (default: 2)")
    model.add_argument("--resume", action="store_true", help="continue the run in --output from its last epoch")
    add_common_args(parser, batch_size=32, image_size=224, no_progress=True)
    args = parser.parse_args(argv)
    if not 0 <= args.heldout_fraction < 1:
        parser.error("--heldout-fraction must be in [0, 1)")
    return args


# The training settings each flag sets; a resumed run must repeat them (only --epochs may grow).
TRAIN_FLAGS = ("batch_size", "lr", "image_size", "heldout_fraction", "seed")


def run_settings(args) -> dict:
    """What the flags ask a run to train (defaults resolved), keyed by flag: compared on ``--resume``."""
    from models.embedding.losses import default_loss

    return {
        "input": args.input,
        "text_model": args.text_model,
        "text_dim": args.text_dim or (40 if args.text_model == "lda" else 128),
        "no_tfidf": args.no_tfidf,
        "min_count": args.min_count,
        "backbone": args.backbone,
        "weights": args.weights,
        "loss": args.loss or default_loss(args.text_model),
        **{key: getattr(args, key) for key in TRAIN_FLAGS},
    }


def new_run(args, paths):
    """Fit the text model on the training split's captions; a fresh network projecting into its space."""
    from models.embedding.net import EmbeddingNet, EmbeddingNetConfig
    from models.embedding.text_targets import TextTargetConfig, TextTargets
    from models.embedding.trainer import TrainConfig
    from transforms.embed import iter_split_tokens

    settings = run_settings(args)
    config = TextTargetConfig(
        args.text_model, settings["text_dim"], tfidf=not args.no_tfidf, min_count=args.min_count, seed=args.seed
    )
    text = TextTargets.fit(list(iter_split_tokens(paths, args.heldout_fraction, heldout=False)), config)
    loss_name = settings["loss"]
    output = "sigmoid" if loss_name == "sigmoid-ce" else "linear"
    model = EmbeddingNet(EmbeddingNetConfig(args.backbone, text.dim, output), args.weights)
    train_config = TrainConfig(epochs=args.epochs, **{key: settings[key] for key in TRAIN_FLAGS})
    facts = {"loss": loss_name, "weights": args.weights, "input": args.input}
    return model, text, loss_name, train_config, facts


def resumed_run(args):
    """The run's own network, text model and settings from its checkpoint; a flag that asks for other settings
    than the run's is refused in one line (``models.common.resume.check_same_settings``); only ``--epochs`` may
    change."""
    from models.common.resume import check_same_settings
    from models.embedding.net import load_embedding_model
    from models.embedding.trainer import TrainConfig

    model, text, info = load_embedding_model(args.output)
    training = info.training
    try:
        train = {**training["train"], "epochs": args.epochs}
        facts = {key: training[key] for key in ("loss", "weights", "input")}
        recorded = {
            **{key: facts[key] for key in ("input", "weights", "loss")},
            "text_model": text.config.kind,
            "text_dim": text.dim,
            "no_tfidf": not text.config.tfidf,
            "min_count": text.config.min_count,
            "backbone": info.config.backbone,
            **{key: train[key] for key in TRAIN_FLAGS},
        }
        train_config = TrainConfig(**train)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{args.output}: its checkpoint does not record how it was trained ({exc})") from None
    check_same_settings(args.output, recorded, run_settings(args))
    return model, text, facts["loss"], train_config, facts


def main(argv=None):
    args = parse_args(argv)
    from models.common.device import resolve_device, seed_everything
    from models.embedding.losses import make_loss
    from models.embedding.trainer import EmbeddingTrainer
    from transforms.embed import corpus_examples
    from transforms.sources import clean_corpus_paths

    started = time.perf_counter()
    check_apart(args.output, input=args.input)
    paths = clean_corpus_paths(args.input)
    device = resolve_device(args.device)
    seed_everything(args.seed)
    state_file = os.path.join(args.output, "train_state.pt")
    if os.path.exists(state_file) and not args.resume:
        raise UsageError(f"{args.output} already holds a training run; pass --resume or choose another --output")

    model, text, loss_name, train_config, facts = resumed_run(args) if args.resume else new_run(args, paths)
    trainer = EmbeddingTrainer(
        model,
        make_loss(loss_name),
        text,
        train_config,
        args.output,
        device,
        progress=not args.no_progress,
        extra_training_facts=facts,
    )
    if args.resume:
        trainer.resume()

    counts = {"train": Counter(), "heldout": Counter()}

    def stream(heldout: bool, epoch: int | None = None):
        counts["heldout" if heldout else "train"] = tally = Counter()
        return corpus_examples(
            paths,
            text,
            image_size=train_config.image_size,
            heldout_fraction=train_config.heldout_fraction,
            heldout=heldout,
            counts=tally,
            shuffle_seed=None if heldout else train_config.seed * 1000 + epoch,
            decode_threads=args.decode_threads,
        )

    heldout = (lambda: stream(True)) if train_config.heldout_fraction else None
    history = trainer.fit(lambda epoch: stream(False, epoch), heldout)
    summary = {
        "counts": {f"{split}.{key}": value for split, tally in counts.items() for key, value in sorted(tally.items())},
        "text_model": {"kind": text.config.kind, "dim": text.dim, "vocabulary": len(text.vocab)},
        "loss": loss_name,
        "final": history[-1] if history else None,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    write_atomically(os.path.join(args.output, "summary.json"), json.dumps(summary, indent=2, sort_keys=True).encode())
    print(json.dumps(summary["final"]), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_main(main))
