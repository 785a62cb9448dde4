"""What `minicnn train` reports at the end (and on resuming): the test results of last.npz's weights and of
best.npz's, printed and written to metrics.json."""

import json

from ..checkpoint import load_checkpoint
from ..files import cannot_write, write_bytes_atomically
from ..profiler import mean_epoch_seconds, peak_memory_mib


def best_result(args, trainer, test, out, last_result):
    """(epoch, test result) of best.npz's weights, which evaluate, show, predict and serve read; None without
    a best.npz. When best.npz holds the final epoch that is last_result; otherwise its weights are loaded into
    the trainer's model (training is over) and evaluated. Rank 0 reads the file; every rank evaluates."""
    path = None if out is None else out / "best.npz"
    best = load_checkpoint(path) if path is not None and path.is_file() else None
    best_epoch = None if best is None else int(best.state["epoch"])
    comm = getattr(args, "comm", None)
    several = comm is not None and comm.size > 1
    if several:
        best_epoch = comm.allgather_object(best_epoch)[0]
    if best_epoch is None:
        return None
    if best_epoch == len(trainer.history.get("loss", [])):
        return best_epoch, last_result
    if best is not None:
        trainer.model.load_state_dict(best.model.state_dict())
    if several:
        comm.broadcast_parameters(trainer.model)
    return best_epoch, trainer.evaluate(test)


def _results(result):
    return {"test_accuracy": result["accuracy"], "test_loss": result["loss"],
            "confusion_matrix": result["confusion_matrix"].tolist()}


def report(args, settings, history, results, steps_per_epoch, out):
    """Write metrics.json and print the test results of last.npz's weights and of best.npz's.

    results: (the final weights' test result, (best.npz's epoch, its test result) or None, the history key
    that chose best.npz). metrics.json's test_accuracy, test_loss and confusion_matrix are the final weights'
    (last.npz, epoch `last.epoch`); `best` holds best.npz's.
    """
    result, best, monitor = results
    epochs = len(history.get("loss", []))
    mean_seconds, partial = mean_epoch_seconds(history, steps_per_epoch)
    summary = {
        "run": settings, "device": args.device, **_results(result),
        "last": {"checkpoint": "last.npz", "epoch": epochs},
        "best": None if best is None else {"checkpoint": "best.npz", "epoch": best[0], "chosen_by": monitor,
                                           **_results(best[1])},
        "seconds_per_epoch": history.get("seconds", []), "mean_epoch_seconds": mean_seconds,
        "peak_memory_mib": round(peak_memory_mib(), 1), "gpu_pool_mib_per_epoch": history.get("gpu_pool_mib"),
        "history": dict(history),
    }
    try:
        write_bytes_atomically(out / "metrics.json", json.dumps(summary, indent=1).encode())
    except OSError as error:
        raise cannot_write(out / "metrics.json", error) from error
    if best is None or best[0] == epochs:
        print(f"last.npz = best.npz (epoch {epochs}): {_accuracy_text(result)}")
    else:
        print(f"last.npz (epoch {epochs}): {_accuracy_text(result)}")
        print(f"best.npz (epoch {best[0]}, the best {monitor}; evaluate, show, predict and serve read it): "
              f"{_accuracy_text(best[1])}")
    mean_text = "-" if mean_seconds is None else f"{mean_seconds:.1f} s"
    left_out = f" (leaving out {partial} epoch{'s' if partial > 1 else ''} resumed mid-way)" if partial else ""
    print(f"mean epoch {mean_text}{left_out}  peak memory {summary['peak_memory_mib']:.0f} MiB")
    print(f"wrote {out / 'metrics.json'}")


def _accuracy_text(result):
    return f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}"


def resume_line(folder, state, steps_per_epoch, epochs):
    epoch, step = int(state["epoch"]), int(state.get("step", 0))
    if epoch >= epochs:
        return f"{folder} has finished its {epoch} epochs; pass --epochs above {epoch} to train it further"
    where = (f"epoch {epoch + 1}, step {step + 1} of {steps_per_epoch} ({step} steps of that epoch were done)"
             if step else f"the start of epoch {epoch + 1}")
    return f"resuming {folder} at {where}, to {epochs} epochs"

