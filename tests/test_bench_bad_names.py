"""Every bench refuses an unknown name (preset, variant, target, model, layout) before it measures
anything: one `prog: error:` line listing the valid names, exit status 2, no results file.

Two of them used to run first and fail late: `nhf_ablation.py --only` trained nothing and died
with an UnboundLocalError, `hgn_throughput.py --configs` ran every variant's worker to a KeyError
and merged the failures into its results JSON.
"""
from pathlib import Path

import pytest

CASES = [
    ("hgn_throughput", ["--configs", "pytorch,huge"], "unknown config 'huge'; valid: quick, quality"),
    ("hgn_throughput", ["--variants", "graph_fp64"], "unknown variant 'graph_fp64'; valid: xla_fp32"),
    ("hgn_recipe", ["--variants", "nope"], "unknown variant(s) nope; valid: paper, small, pytorch"),
    ("nhf_ablation", ["--only", "base,baseline"], "unknown variant(s) baseline; valid: base, width_32"),
    ("nhf_quality", ["--targets", "mixture,spiral"], "unknown --targets spiral; valid: banana, checkerboard"),
    ("nhf_quality", ["--models", "glow"], "unknown --models glow; valid: nhf, realnvp, maf"),
    ("nhf_speed", ["--targets", "spiral"], "unknown --targets spiral; valid: banana, checkerboard"),
    ("scaling", ["--layouts", "ring"], "valid: hgn, nhf; default, mirrored, two_workers"),
    ("conv_kernels", ["--shapes", "decoder_64"], "valid: decoder_32, decoder_16, decoder_rgb, encoder_32"),
]


@pytest.mark.parametrize("bench, argv, phrase", CASES, ids=[f"{b} {' '.join(a)}" for b, a, _ in CASES])
def test_unknown_name_is_refused_before_any_work(load_bench, bench, argv, phrase, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))  # siblings, as run as scripts
    out = tmp_path / "results.json"
    module = load_bench(bench)
    with pytest.raises(SystemExit) as info:
        module.main([*argv, "--output" if bench == "scaling" else "--out", str(out)])
    assert info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error:" in line]
    assert len(errors) == 1 and phrase in errors[0], errors
    assert not out.exists()
