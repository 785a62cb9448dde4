"""`minicnn fetch`: download and verify a dataset into the cache."""

from .. import data
from ..data.datasets import FETCHABLE


def add_to(commands):
    fetch = commands.add_parser("fetch", help="download and verify a dataset into the cache",
                                description="Fetch a dataset into $MINICNN_DATA or ~/.cache/minicnn: MNIST and "
                                            "Fashion-MNIST checked by SHA-256, CIFAR-10's archive by its published MD5.")
    fetch.add_argument("dataset", choices=list(FETCHABLE))
    fetch.set_defaults(run=run)


def run(args):
    if args.dataset in data.ARCHIVES:
        path = data.fetch_archive(args.dataset)
        print(f"{args.dataset}: verified {path}; `minicnn train --dataset {args.dataset}` reads it when --data is not given")
        return 0
    folder = data.fetch(args.dataset)
    print(f"{args.dataset}: verified files in {folder}")
    return 0
