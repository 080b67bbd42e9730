"""`--config FILE` and `--set KEY=VALUE` (issue 15): every option of a command from a file or
the command line, with one precedence (default < file < typed option < --set) and one error
line for a wrong key, value or file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from diffseg.cli import main


@pytest.fixture
def labels(tmp_path):
    np.save(tmp_path / "lab.npy", np.ones((3, 8, 8), np.int32))
    return tmp_path / "lab.npy"


def _memory(out):
    return json.loads(out.with_suffix(".json").read_text())["engine"]["lifecycle"]["memory"]


def test_set_and_config_reach_the_command_with_one_precedence(labels, tmp_path):
    out = tmp_path / "o.npy"
    stack = ["stack", str(labels), "-o", str(out), "-q"]
    assert main(stack) == 0 and _memory(out) == 3  # the slices preset
    assert main(stack + ["--set", "memory=2"]) == 0 and _memory(out) == 2
    (tmp_path / "c.yaml").write_text("volume:\n  memory: 5\n  int32: true\n")
    assert main(stack + ["--config", str(tmp_path / "c.yaml")]) == 0 and _memory(out) == 5
    assert np.load(out).dtype == np.int32  # a switch from the file
    assert main(stack + ["--config", str(tmp_path / "c.yaml"), "--memory", "4"]) == 0 and _memory(out) == 4
    assert main(["--set", "memory=6"] + stack + ["--config", str(tmp_path / "c.yaml"), "--memory", "4"]) == 0
    assert _memory(out) == 6  # --set wins, also given before the subcommand
    (tmp_path / "c.json").write_text(json.dumps({"split_cost": 0.5, "memory": 1}))
    assert main(stack + ["--config", str(tmp_path / "c.json")]) == 0 and _memory(out) == 1
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["engine"]["associate"]["split_cost"] == 0.5  # underscores work as dashes


@pytest.mark.parametrize("extra,words", [
    (["--set", "memry=2"], ["memry", "did you mean memory"]),
    (["--set", "split-cost=x"], ["split-cost", "'x'"]),
    (["--set", "memory"], ["KEY=VALUE"]),
    (["--set", "int32=maybe"], ["int32", "true or false"]),
    (["--set", "axes=magic"], ["axes", "one of"]),
    (["--config", "{tmp}/missing.yaml"], ["missing.yaml", "cannot read"]),
    (["--config", "{tmp}/bad.json"], ["bad.json", "not valid JSON"]),
    (["--config", "{tmp}/list.yaml"], ["list.yaml", "mapping"]),
])
def test_a_wrong_setting_is_one_error_line(extra, words, labels, tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{memory: 2")
    (tmp_path / "list.yaml").write_text("- memory\n- 2\n")
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    rc = main(["stack", str(labels), "-o", str(tmp_path / "o.npy"), "-q"] + extra)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("diffseg stack: error:"), err
    assert all(w in err[0] for w in words), err[0]
    assert not (tmp_path / "o.npy").exists()  # refused before any work


def test_settings_reach_video_tracker_options(tmp_path, capsys):
    from tests.temporal.test_api_cli import write_scene

    _, fdir, sdir, _ = write_scene(tmp_path, n=6)
    (tmp_path / "t.json").write_text(json.dumps({"tracker": {"keyframe-every": "auto", "keyframe-max-gap": 2}}))
    rc = main(["track", str(fdir), "--segments", str(sdir), "-o", str(tmp_path / "out"), "-q", "--json",
               "--config", str(tmp_path / "t.json")])
    assert rc == 0
    tj = json.loads((tmp_path / "out" / "tracks.json").read_text())
    assert tj["tracker"]["keyframe_every"] == "auto" and tj["tracker"]["keyframe_max_gap"] == 2
    assert json.loads(capsys.readouterr().out)["keyframes"] < 6


def test_run_takes_video_and_volume_options_with_a_prefix(labels, tmp_path, capsys):
    # `run` has its own options; those of `video` / `volume` come as video.* / volume.*
    # (the two engines share knob names), from --set or from a file's sections
    fake = ["--segmenter-factory", "tests.conftest:fake_segmenter", "-q"]
    out = tmp_path / "job"
    assert main(["run", str(labels), "-o", str(out), *fake, "--set", "volume.memory=2"]) == 0
    assert json.loads((out / "volumes" / "lab.json").read_text())["engine"]["lifecycle"]["memory"] == 2
    (tmp_path / "run.yaml").write_text("volume:\n  memory: 5\n  min-iou: 0.4\nvideo:\n  memory: 9\n")
    out2 = tmp_path / "job2"
    assert main(["run", str(labels), "-o", str(out2), *fake, "--config", str(tmp_path / "run.yaml")]) == 0
    eng = json.loads((out2 / "volumes" / "lab.json").read_text())["engine"]
    assert eng["lifecycle"]["memory"] == 5 and eng["associate"]["min_iou"] == 0.4
    capsys.readouterr()
    assert main(["run", str(labels), "-o", str(tmp_path / "job3"), *fake, "--set", "memory=2"]) == 2
    err = capsys.readouterr().err
    assert "no option --memory" in err and "video., volume." in err
    assert main(["run", str(labels), "-o", str(tmp_path / "job3"), *fake, "--set", "video.keyframe-every=auto"]) == 2
    assert "not available in `run`" in capsys.readouterr().err
    for prefix in ("video", "volume"):  # `--join` of video / volume is theirs, not run's
        assert main(["run", str(labels), "-o", str(tmp_path / "job3"), *fake, "--set", f"{prefix}.join=j"]) == 2
        assert f"{prefix}.join is not available in `run`" in capsys.readouterr().err
    for setting, said in (("video.memory=-3", "video.memory must be"), ("volume.waist-ratio=-1", "volume.waist-ratio must")):
        assert main(["run", str(labels), "-o", str(tmp_path / "job4"), *fake, "--set", setting]) == 2
        assert said in capsys.readouterr().err  # named as it was given


@pytest.mark.parametrize("extra,flag", [
    (["--min-iou", "7"], "--min-iou must be in"),        # an engine knob (AssociateConfig.min_iou)
    (["--set", "memory=-3"], "--memory must be in"),     # LifecycleConfig.memory, through --set
    (["--waist-ratio", "-1"], "--waist-ratio must be"),  # VolumeConfig.waist_ratio
])
def test_errors_name_the_flag_not_the_dataclass_field(extra, flag, labels, tmp_path, capsys):
    assert main(["stack", str(labels), "-o", str(tmp_path / "o.npy"), "-q", *extra]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Config." not in err and "_" not in err.split("must")[0], err


@pytest.mark.parametrize("extra,flag", [
    (["--batch-size", "0"], "--batch-size must be"),          # SegmenterConfig.batch_size ...
    (["--frames-per-call", "-1"], "--frames-per-call must be"),  # ... and TrackerConfig.batch_size
    (["--keyframe-every", "0"], "--keyframe-every must be"),
])
def test_two_configs_with_one_field_name_each_name_their_own_flag(extra, flag, tmp_path, capsys):
    from tests.conftest import write_frames

    frames = write_frames(tmp_path / "clip", 2)
    assert main(["video", str(frames), "-o", str(tmp_path / "o"), "--model", "tiny-random", "-q", *extra]) == 2
    assert flag in capsys.readouterr().err


# ----------------------------------------------------------------------------- options declared once
def _subparser(name):
    import argparse

    from diffseg.cli import build_parser

    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _presets():
    from diffseg.distributed import RunConfig
    from diffseg_core.config import SegmenterConfig
    from temporal.config import TrackerConfig
    from volume.cli import _presets as volume_presets

    vol = volume_presets()
    return [("image", "segmenter", SegmenterConfig(), ()),
            ("video", "segmenter", SegmenterConfig(), ()), ("video", "tracker", TrackerConfig(), ()),
            ("track", "tracker", TrackerConfig(), ()),
            ("volume", "segmenter", SegmenterConfig(), ()), ("volume", "volume", *vol["volume"]),
            ("stack", "volume", *vol["stack"]), ("run", "segmenter", SegmenterConfig(), ()),
            ("run", "run", RunConfig(), ())]


def _paths(obj, path=""):
    import dataclasses

    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("cli", {}) is False:
            continue
        if dataclasses.is_dataclass(value):
            yield from _paths(value, f"{path}{f.name}.")
        else:
            yield path + f.name


#: fields set by an option of another shape (documented in the command's help and docs)
OTHER_OPTIONS = {("volume", "volume", "background"): None,  # DiffSeg's slices: every value is a segment
                 ("volume", "volume", "clear_outside"): "--background",  # auto | none
                 ("stack", "volume", "clear_outside"): None,  # `stack` never clears (its labels are the user's)
                 ("stack", "volume", "resample_inplane"): None}  # no segmenter in `stack`


@pytest.mark.parametrize("command, root, preset, skip", _presets(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_config_field_is_an_option_of_its_command(command, root, preset, skip):
    """Any option reachable from the Python config is reachable from the CLI, and so from a
    config file or --set (they take every long option)."""
    dests = {a.dest for a in _subparser(command)._actions}
    for path in _paths(preset):
        other = OTHER_OPTIONS.get((command, root, path.split(".")[-1]), "")
        if other == "" and path not in skip:
            assert f"{root}__{path.replace('.', '__')}" in dests, f"{command}: no option for {root}.{path}"
        elif other:
            assert any(other in a.option_strings for a in _subparser(command)._actions)


@pytest.mark.parametrize("command, root, preset, skip", _presets(), ids=lambda x: x if isinstance(x, str) else "")
def test_no_option_given_is_the_preset_itself(command, root, preset, skip):
    from diffseg.settings import defaults_of
    from diffseg_core.cli_args import options_config

    assert options_config(defaults_of(_subparser(command)), preset, root) == preset


def test_generated_options_take_none_values_switches_and_custom_types():
    from diffseg_core.cli_args import options_config
    from volume.cli import _presets as volume_presets

    p = _subparser("stack")
    stack = volume_presets()["stack"][0]
    cfg = options_config(p.parse_args(["l.npy", "-o", "o", "--background", "none", "--axis", "y",
                                       "--int32", "--no-montage", "--window", "40,400", "--memory", "7"]), stack, "volume")
    assert cfg.background is None and cfg.axis == 1 and cfg.output_dtype == "int32" and not cfg.montage
    assert cfg.window == (40.0, 400.0) and cfg.engine.lifecycle.memory == 7
    assert options_config(p.parse_args(["l.npy", "-o", "o"]), stack, "volume").background == 0
    with pytest.raises(SystemExit):
        p.parse_args(["l.npy", "-o", "o", "--window", "40,-1"])


def test_a_generated_switch_from_set_and_config(labels, tmp_path):
    out = tmp_path / "o.npy"
    assert main(["stack", str(labels), "-o", str(out), "-q", "--set", "no-montage=true", "--set", "no-json=true"]) == 0
    assert not out.with_name("o_montage.png").exists() and not out.with_suffix(".json").exists()
    assert main(["stack", str(labels), "-o", str(out), "-q", "--set", "no-montage=false"]) == 0
    assert out.with_name("o_montage.png").exists()
