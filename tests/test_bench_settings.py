"""`bench/hgn_systems.py --settings`: the comparison of one system's runs, one setting each.

Its table is the README's evidence of which settings were tried on the double pendulum, so
what it reads from each result is checked here on made-up results: the setting is the flags
beyond the recipe's own, the curve is read at the right minute or not at all, and runs of
another CPU or another system stay out.
"""
import json

import pytest


@pytest.fixture(scope="module")
def systems(load_bench):
    return load_bench("hgn_systems")


def _result(path, command, forward, cpu="AMD EPYC 7B13", curve_minutes=(5, 10, 15)):
    curve = [{"step": 100 * i, "train_seconds": 60.0 * m + 0.4, "test_mse_x1e4_forward": 80.0 - m,
              "test_mse_x1e4_backward": 81.0 - m} for i, m in enumerate(curve_minutes, 1)]
    path.write_text(json.dumps({
        "command": command, "cpu": {"model": cpu}, "batch_size": 16, "steps": 300, "train_seconds": 900.0,
        "test_mse_x1e4": {"forward": forward, "backward": forward + 1},
        "vpt_median_frames": {"test_forward": 1, "test_backward": 0}, "latent_r2": 0.2,
        "mean_frame_mse_x1e4": 84.5, "test_curve": curve}))


def test_a_runs_setting_is_what_it_does_not_share_with_the_others(systems):
    base = "python bench/hgn_quality.py --dataset double_pendulum --budget-minutes 35 --tag T -- "
    shared, own = systems.settings([
        base + "--preset quality --decoder subpixel --steps 4500 --beta 1e-2",
        base + "--preset quality --decoder subpixel --steps 9000 --window 12 --curriculum-start 6",
        base + "--preset quality --decoder subpixel --steps 13000",
        base + "--preset quality --decoder subpixel --steps 4500 --no-variational --encoder-widths 64,64"])
    assert shared == "--preset quality --decoder subpixel"
    # --steps is a column of its own, not a setting.
    assert own == ["--beta 1e-2", "--window 12 --curriculum-start 6", "(only the shared flags)",
                   "--no-variational --encoder-widths 64,64"]
    # A run on another decoder does not hide behind the others' recipe.
    shared, own = systems.settings([base + "--preset quality --steps 4200",
                                    base + "--preset quality --decoder subpixel --steps 4500"])
    assert shared == "--preset quality" and own == ["(only the shared flags)", "--decoder subpixel"]
    # The bench script's own flags (before " -- ") are not the model's setting.
    assert systems.flag_groups("python bench/hgn_quality.py --dataset double_pendulum --budget-minutes 95") == []


def test_curve_is_read_at_the_minute_or_not_at_all(systems):
    curve = [{"train_seconds": 300.3, "test_mse_x1e4_forward": 77.0},
             {"train_seconds": 600.3, "test_mse_x1e4_forward": 67.5},
             {"train_seconds": 900.8, "test_mse_x1e4_forward": 64.7}]
    assert systems.at_minutes(curve, 10) == 67.5
    assert systems.at_minutes(curve, 15) == 64.7
    # A run that stopped at 15 minutes has no figure at 20 (not its last point's).
    assert systems.at_minutes(curve, 20) is None


def test_rows_keep_one_system_on_one_cpu_ordered_by_final_mse(systems, tmp_path):
    tail = " -- --preset quality --decoder subpixel --steps 4500"
    _result(tmp_path / "hgn_quality_double_pendulum_epyc_a.json", "c" + tail + " --beta 1e-2", 59.6)
    _result(tmp_path / "hgn_quality_double_pendulum_epyc_b.json", "c" + tail, 44.1, curve_minutes=(5, 10, 20, 30))
    _result(tmp_path / "hgn_quality_double_pendulum_xeon.json", "c" + tail, 61.8, cpu="Intel(R) Xeon(R)")
    _result(tmp_path / "hgn_quality_pendulum_epyc_c.json", "c" + tail, 7.6)
    rows = systems.settings_rows("double_pendulum", "AMD EPYC", tmp_path)
    assert [r["tag"] for r in rows] == ["epyc_b", "epyc_a"]
    assert [r["setting"] for r in rows] == ["(only the shared flags)", "--beta 1e-2"]
    assert rows[0]["shared"] == "--preset quality --decoder subpixel"
    assert rows[0]["forward_at_minutes"]["20"] == 60.0 and rows[1]["forward_at_minutes"]["20"] is None
    table = systems.settings_markdown(rows).splitlines()
    assert len(table) == 4 and "**44.10 / 45.10**" in table[2] and "`--beta 1e-2`" in table[3]
    assert "| (only the shared flags) |" in table[2]
    systems.settings_plot(rows, "double_pendulum", tmp_path / "settings.png")
    assert (tmp_path / "settings.png").stat().st_size > 10_000


def test_cpu_without_settings_is_an_error(systems, capsys):
    with pytest.raises(SystemExit):
        systems.main(["--cpu", "AMD EPYC"])  # even the default, said without --settings
    assert "--settings" in capsys.readouterr().err


def _quickstart_run(command, forward):
    return {"command": command, "wall_clock_seconds": 725.0, "steps": 5900, "compute_dtype": "bfloat16",
            "test_mse_x1e4": {"forward": forward, "backward": forward + 0.5}, "mean_frame_mse_x1e4": 100.0,
            "vpt_median_frames": {"forward": 25, "backward": 25}, "peak_rss_gb": 8.0,
            "rollout_strips": {"forward": "strip.png"}, "cpu": {"model": "AMD EPYC"}}


def test_quickstart_table_reads_one_machines_runs(systems, tmp_path, monkeypatch):
    monkeypatch.setattr(systems, "RESULTS", tmp_path)
    monkeypatch.setattr(systems, "QUICKSTART_PENDULUM", {"epyc": (tmp_path / "qs_epyc.json", "default"),
                                                         "zen4": (tmp_path / "qs_zen4.json", "fixed_kinetic")})
    (tmp_path / "qs_zen4.json").write_text(json.dumps({"runs": {
        "default": _quickstart_run("old default", 9.9), "fixed_kinetic": _quickstart_run("new default", 3.97)}}))
    (tmp_path / "hgn_quickstart_systems_zen4.json").write_text(json.dumps({"runs": {
        "two_body": _quickstart_run("two_body", 1.0)}}))
    (tmp_path / "hgn_quickstart_systems_epyc.json").write_text(json.dumps({"runs": {
        "pendulum": _quickstart_run("epyc pendulum", 17.3)}}))
    rows, missing = systems.quickstart_rows("zen4")
    # Pendulum comes from that machine's quick start, under the named run; the rest from its systems file.
    assert [(r["system"], r["command"], r["test_forward"]) for r in rows] == [
        ("pendulum", "new default", 3.97), ("two_body", "two_body", 1.0)]
    assert missing == ["mass_spring", "double_pendulum", "three_body"]
    # A systems file's own pendulum run wins; another machine's runs never mix in.
    rows, missing = systems.quickstart_rows("epyc")
    assert [(r["system"], r["test_forward"]) for r in rows] == [("pendulum", 17.3)]
    assert "**3.97 / 4.47**" in systems.quickstart_markdown(systems.quickstart_rows("zen4")[0])
    # A machine with no separate quick start: its systems file must hold pendulum itself.
    monkeypatch.setitem(systems.QUICKSTART_PENDULUM, "zen4", None)
    rows, missing = systems.quickstart_rows("zen4")
    assert [r["system"] for r in rows] == ["two_body"] and missing[0] == "pendulum"


def test_machine_without_quickstart_is_an_error(systems, capsys):
    with pytest.raises(SystemExit):
        systems.main(["--machine", "zen5"])
    assert "--machine selects the runs of --quickstart" in capsys.readouterr().err
