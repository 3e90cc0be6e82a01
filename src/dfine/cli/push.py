"""``dfine push MODEL REPO_ID``: upload a model with its processor to a Hugging Face hub repository, in one commit."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("push", help="upload a model to the Hugging Face hub",
                              description="Upload a model (e.g. a training run's best/ folder) with its "
                                          "preprocessor_config.json and a model card to a hub repository, created "
                                          "when missing (a segmentation model with its mask branch). transformers' "
                                          "DFineForObjectDetection loads a detector as well. "
                                          "Log in first (huggingface-cli login) or pass --token.")
    p.add_argument("model", help="local model directory, .pth/.safetensors file, training checkpoint or hub id")
    p.add_argument("repo_id", help="the repository, e.g. me/my-detector")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--token", default=None, help="hub token (default: the one huggingface-cli login saved)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dfine.errors import DFineError
    from dfine.hub.upload import model_card, push_files
    from dfine.model.auto import load_model
    from dfine.predict.predictor import load_processor, random_weights_reason

    reason = random_weights_reason(args.model)
    if reason is not None:
        raise DFineError(f"{reason}: it has random weights, nothing worth pushing (pass a trained model)")
    model = load_model(args.model)  # a segmentation model with its mask branch, not as a detector without it
    processor = load_processor(args.model)  # the model's own, at its training size

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    url = push_files(save, args.repo_id, card=partial(model_card, model.config), commit_message=args.message,
                     private=True if args.private else None, token=args.token, revision=args.revision,
                     create_pr=args.create_pr)
    print(f"pushed {args.model} to {args.repo_id}: {url}")
    return 0
