"""plot.py: runs compared from their metrics.jsonl files, in one PNG (loss vs step and vs training time, batch
losses, and each layer's mu/beta/gamma)."""
import json

import pytest

import plot


def write_run(folder, residual, n_layer=2, evals=(0, 10, 20), slope=0.05):
    """metrics.jsonl as train.py writes it: a log row per step, an eval row (with the scalars) at evals."""
    folder.mkdir()
    rows = []
    for it in range(evals[-1] + 1):
        if it in evals:
            scalars = {f"layer{i}.{sub}.{s}": 0.5 + slope * it / 20 * (i + 1)
                       for i in range(n_layer) for sub in ("attn", "mlp") for s in plot.SCALARS} \
                if residual != "gd" else {}
            rows.append({"iter": it, "train_loss": 10 - slope * it, "val_loss": 10.1 - slope * it, "lr": 1e-3,
                         "tokens_per_s": None, "mfu": None, "time": 0.5 * it, **scalars})
        if it < evals[-1]:
            rows.append({"iter": it, "train_loss": 10 - slope * it, "val_loss": None, "lr": 1e-3,
                         "tokens_per_s": 1000.0, "mfu": 0.1, "time": 0.5 * it + 0.5})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_two_runs_in_one_png(tmp_path):
    runs = [write_run(tmp_path / "run-gd", "gd"), write_run(tmp_path / "run-nesterov", "nesterov", slope=0.08)]
    out = tmp_path / "compare.png"
    fig = plot.plot_runs([str(r) for r in runs], str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    panels = {ax.get_title().split(" (")[0]: ax for ax in fig.axes}
    assert set(panels) == {"loss vs step", "loss vs training time", "train loss of each logged step",
                           "mu of every layer", "beta of every layer", "gamma of every layer"}
    # val and train per run against step and against time, at the eval steps
    step, time = panels["loss vs step"], panels["loss vs training time"]
    assert [line.get_label() for line in step.lines] == ["run-gd val", "run-gd train", "run-nesterov val",
                                                         "run-nesterov train"]
    assert list(step.lines[2].get_xdata()) == [0, 10, 20] and list(time.lines[2].get_xdata()) == [0, 5, 10]
    assert list(step.lines[2].get_ydata()) == pytest.approx([10.1, 9.3, 8.5])
    assert len(panels["train loss of each logged step"].lines[0].get_xdata()) == 20
    # the scalars: gd has none; nesterov's 2 layers x 2 substeps in each panel, with their values
    for scalar in plot.SCALARS:
        lines = panels[f"{scalar} of every layer"].lines
        assert sorted(line.get_label() for line in lines) == [f"run-nesterov layer{i}.{sub}" for i in range(2)
                                                              for sub in ("attn", "mlp")]
        layer1 = next(line for line in lines if line.get_label() == "run-nesterov layer1.mlp")
        assert list(layer1.get_ydata()) == pytest.approx([0.5, 0.58, 0.66])


def test_scalar_line_style_follows_the_oracle(tmp_path):
    """Solid: a substep calling attention, dotted: the MLP, dashed: both. Verlet's attn1/attn2 are attention half
    steps; euler's (and imex's) mu and beta belong to a substep calling both, its gammas to one oracle each."""
    names = {"layer0.attn1.mu": "-", "layer0.attn1.gamma": "-", "layer0.mlp.beta": ":", "layer0.attn2.gamma": "-",
             "layer1.euler.mu": "--", "layer1.euler.beta": "--", "layer1.euler.attn.gamma": "-",
             "layer1.euler.mlp.gamma": ":", "layer1.imex.mu": "--", "layer1.imex.mlp.gamma": ":"}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(json.dumps(
        {"iter": 0, "train_loss": 1.0, "val_loss": 1.0, **{n: 0.5 for n in names}}) + "\n")
    fig = plot.plot_runs([str(tmp_path / "run")], str(tmp_path / "x.png"), labels=["r"])
    drawn = {f"{line.get_label()[2:]}.{ax.get_title().split()[0]}": line.get_linestyle()
             for ax in fig.axes if ax.get_title().split()[0] in plot.SCALARS for line in ax.lines}
    assert drawn == names


def test_bad_inputs_say_one_sentence(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text(json.dumps({"iter": 0, "train_loss": 1.0, "val_loss": None}))
    for folder, words in ((tmp_path / "nothing", "has no metrics.jsonl"), (tmp_path / "empty", "no evaluation yet")):
        with pytest.raises(SystemExit) as exit:
            plot.main([str(write_run(tmp_path / "ok", "gd") if not (tmp_path / "ok").exists() else tmp_path / "ok"),
                       str(folder), f"--out={tmp_path / 'x.png'}"])
        assert exit.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and words in err
    assert not (tmp_path / "x.png").exists()


def test_a_torn_last_line_is_left_out_and_a_damaged_one_refused(tmp_path, capsys):
    """A run killed while writing metrics.jsonl: its last line is half a row, dropped with a note (plot.py, train.py
    on resume, bench/reproduce.py and bench/gpu_check.py read the file through the same reader). A bad line before
    the last is damage, said in one sentence."""
    run = write_run(tmp_path / "run", "gd")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"iter": 21, "train_lo')
    plot.main([str(run), f"--out={tmp_path / 'x.png'}"])
    assert "note: the last line of" in capsys.readouterr().out and (tmp_path / "x.png").stat().st_size > 10_000
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] + ["[1, 2]"] + lines[2:-1]) + "\n")
    with pytest.raises(SystemExit):
        plot.main([str(run), f"--out={tmp_path / 'y.png'}"])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "metrics.jsonl, line 3, is not a row of train.py's metrics" in err
    assert not (tmp_path / "y.png").exists()
