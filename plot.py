"""
Compare training runs from their metrics.jsonl files, in one PNG: val loss (solid) and train loss (dashed, at
eval steps) against step and against training time, the loss of each logged training batch, and every layer's
learned mu, beta and gamma over training.

$ python plot.py out-tinystories-cpu-nesterov out-tinystories-cpu-gpt --out=compare.png

train.py draws out_dir/loss.png with this at the end of each run.
"""
import argparse
import os
import sys

SCALARS = ("mu", "beta", "gamma")
# a scalar's line by the oracles its substep calls: attention, the MLP, or both (euler's and imex's mu and beta)
STYLES = {frozenset({"attn"}): "-", frozenset({"mlp"}): ":", frozenset({"attn", "mlp"}): "--"}


class PlotError(Exception):
    """A problem with the inputs, said in one sentence."""


def read_metrics(run_dir):
    from checkpoints import read_metrics
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise PlotError(f"{run_dir} has no metrics.jsonl; give folders that train.py wrote (its --out_dir).")
    try:
        rows = read_metrics(path)
    except ValueError as e:
        raise PlotError(f"{e}.") from None
    if not any(r.get("val_loss") is not None for r in rows):
        raise PlotError(f"{path} holds no evaluation yet (no val_loss); plot it after the first eval step.")
    return rows


def oracles(name):
    """The oracles behind a scalar of metrics.jsonl: "layer0.euler.mlp.gamma" -> {"mlp"} (a gamma of a substep that
    calls both names its oracle), "layer0.euler.mu" -> {"attn", "mlp"}, "layer0.attn1.mu" -> {"attn"} (verlet)."""
    from model import SPLITTINGS
    _, step, *oracle, _ = name.split(".")
    return set(oracle) or {o for splitting in SPLITTINGS.values() for o in splitting.get(step, ())}


def plot_runs(run_dirs, out_path, labels=None):
    """Draw the runs in run_dirs into out_path; returns the matplotlib figure (closed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [read_metrics(d) for d in run_dirs]
    labels = labels or [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    ax_step, ax_time, ax_batch = axes[0]
    colors = plt.get_cmap("tab10").colors
    for color, label, rows in zip(colors * (len(runs) // 10 + 1), labels, runs):
        evals = [r for r in rows if r.get("val_loss") is not None]
        steps = [r["iter"] for r in evals]
        ax_step.plot(steps, [r["val_loss"] for r in evals], "o-", ms=3, color=color, label=f"{label} val")
        ax_step.plot(steps, [r["train_loss"] for r in evals], "--", color=color, alpha=0.7, label=f"{label} train")
        logs = [r for r in rows if r.get("val_loss") is None]
        ax_batch.plot([r["iter"] for r in logs], [r["train_loss"] for r in logs], color=color, alpha=0.6, label=label)
        timed = [r for r in evals if r.get("time") is not None]
        if timed:  # runs from before train.py logged its training time have only the step axis
            ax_time.plot([r["time"] for r in timed], [r["val_loss"] for r in timed], "o-", ms=3, color=color,
                         label=f"{label} val")
            ax_time.plot([r["time"] for r in timed], [r["train_loss"] for r in timed], "--", color=color, alpha=0.7)
        # "layer0.attn.mu": one line per layer and substep, darker for deeper layers
        names = sorted({k for r in evals for k in r if k.startswith("layer") and k.rsplit(".", 1)[1] in SCALARS})
        n_layers = 1 + max((int(k.split(".")[0][5:]) for k in names), default=0)
        for ax, scalar in zip(axes[1], SCALARS):
            for name in (k for k in names if k.endswith("." + scalar)):
                layer = int(name.split(".")[0][5:])
                points = [(r["iter"], r[name]) for r in evals if name in r]
                ax.plot(*zip(*points), color=color, alpha=0.35 + 0.65 * (layer + 1) / n_layers,
                        ls=STYLES[frozenset(oracles(name))], label=f"{label} {name.rsplit('.', 1)[0]}")
    ax_step.set(title="loss vs step", xlabel="step", ylabel="loss (nats/token)")
    ax_time.set(title="loss vs training time", xlabel="training time (s, evaluation excluded)",
                ylabel="loss (nats/token)")
    for ax, scalar in zip(axes[1], SCALARS):
        ax.set(title=f"{scalar} of every layer (solid: attention, dotted: MLP, dashed: both; darker: deeper)",
               xlabel="step", ylabel=scalar)
        if ax.lines:
            ax.legend(fontsize=6, ncol=2)
        else:
            ax.text(0.5, 0.5, "no momentum scalars (gd)", ha="center", va="center", transform=ax.transAxes)
    ax_batch.set(title="train loss of each logged step (its batches)", xlabel="step", ylabel="loss (nats/token)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    ax_step.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return fig


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="folders holding metrics.jsonl (train.py's out_dir)")
    parser.add_argument("--out", default="compare.png", help="the PNG to write (default: compare.png)")
    args = parser.parse_args(argv)
    try:
        plot_runs(args.runs, args.out)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
