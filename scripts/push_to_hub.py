"""Push a folder to the Hugging Face Hub: `python scripts/push_to_hub.py PATH REPO_ID [--private] [--revision R]`.

PATH is an export (OUTPUT_DIR/model), an adapter folder, or a prepared data folder (train/ + validation/ +
data_card.json, pushed as a dataset repository with its data card as README). The token comes from HF_TOKEN or
`hf auth login`. This is also the command a training run prints when one of its pushes failed.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hf_llm.config import HfLlmError  # noqa: E402
from hf_llm.hub import push_path  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="folder to upload")
    parser.add_argument("repo_id", help="user/name or org/name")
    parser.add_argument("--private", action=argparse.BooleanOptionalAction, default=True,
                        help="visibility of a new repository (default: private; an existing one keeps its own)")
    parser.add_argument("--revision", default="main", help="branch to commit to (created when missing)")
    parser.add_argument("--repo-type", choices=("model", "dataset"), default=None,
                        help="default: dataset for a prepared data folder, else model")
    parser.add_argument("--endpoint", default=None,
                        help="a private Hub or mirror (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--retries", type=int, default=3, help="further attempts after a failure, with backoff")
    args = parser.parse_args(argv)
    try:
        url = push_path(args.path, args.repo_id, private=args.private, revision=args.revision,
                        repo_type=args.repo_type, endpoint=args.endpoint, retries=args.retries)
    except HfLlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"pushed {args.path} to {args.repo_id}@{args.revision}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
