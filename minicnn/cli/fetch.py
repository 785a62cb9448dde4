"""`minicnn fetch`: download and verify a dataset into the cache."""

from .. import data, run_settings


def add_to(commands):
    fetch = commands.add_parser("fetch", help="download and verify a dataset into the cache",
                                description="Fetch a dataset into $MINICNN_DATA or ~/.cache/minicnn.")
    fetch.add_argument("dataset", choices=list(run_settings.FETCHED_DATASETS))
    fetch.set_defaults(run=run)


def run(args):
    folder = data.fetch(args.dataset)
    print(f"{args.dataset}: verified files in {folder}")
    return 0
