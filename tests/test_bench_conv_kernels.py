"""`bench/conv_kernels.py`: which oneDNN kernel served which convolution, the work counted, the ratios.

The README's kernel-by-kernel comparison with PyTorch comes from this bench. PyTorch is not
installed here, so its side is checked through what the bench makes of the logs and times it
gets: a verbose line is attributed to a shape only when batch, channels and size all match.
TensorFlow's worker runs for real, at a tiny shape.
"""
import pytest

# One executed primitive per kind, as oneDNN 3 logs them (taken from this bench's runs with
# ONEDNN_VERBOSE=1 and oneDNN capped at AVX2: TensorFlow first, then PyTorch).
TF_LOG = """\
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,forward_training,src:f32::blocked:acdb::f0 wei:f32:ap:blocked:Acdb24a::f0 bia:f32:a:blocked:a::f0 dst:f32::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,mb16_ic64oc64_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1,13.03
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_bwd:avx2+brg_conv_fwd:avx2,backward_data,src:f32::blocked:acdb::f0 wei:f32:ap:blocked:Bcda24b::f0 bia:undef::undef::: dst:f32::blocked:acdb::f0,,alg:convolution_direct,mb16_ic64oc64_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1,10.97
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:ABcd8b8a::f0 dst:f32::blocked:cdba::f0,,,64x64x3x3,0.05
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,src:f32::blocked:acdb::f0 wei:f32:a:blocked:ABcd8b8a::f0 bia:f32:a:blocked:a::f0 dst:f32::blocked:acdb::f0,,alg:convolution_direct,mb16_ic64oc64_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1,17.2
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,src:f32::blocked:acdb::f0 wei:f32:a:blocked:ABcd8b8a::f0 bia:f32:a:blocked:a::f0 dst:f32::blocked:acdb::f0,,alg:convolution_direct,mb16_ic32oc64_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1,9.1
onednn_verbose,v1,primitive,create:cache_hit,cpu,convolution,x64:gemm:jit,backward_weights,src:f32::blocked:acdb::f0,,alg:convolution_direct,mb16_ic64oc64_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1,0.01
"""
TORCH_LOG = """\
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src:f32:a:blocked:aBcd8b::f0 wei:f32:a:blocked:ABcd8b8a::f0 bia:f32:a:blocked:a::f0 dst:f32:a:blocked:aBcd8b::f0,attr-scratchpad:user,alg:convolution_direct,mb416_ic64oc64_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1,423.4
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src:f32:a:blocked:aBcd8b::f0 wei:f32:a:blocked:ABcd8b8a::f0 bia:f32:a:blocked:a::f0 dst:f32:a:blocked:aBcd8b::f0,attr-scratchpad:user,alg:convolution_direct,mb416_ic64oc3_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1,126.4
"""


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("conv_kernels")


def test_implementations_read_from_the_verbose_log(bench):
    # Each executed conv primitive is attributed to the shape with its batch, channels and size and
    # to its kernel kind; reorders, primitive creation and shapes outside SHAPES (ic32) are not.
    assert bench.implementations(TF_LOG) == {"encoder_32": {
        "forward": ["brg_conv_fwd:avx2"], "input_gradient": ["brg_conv_bwd:avx2+brg_conv_fwd:avx2"],
        "weight_gradient": ["jit:avx2"]}}
    assert bench.implementations(TORCH_LOG) == {"decoder_32": {"forward": ["jit:avx2"]},
                                                "decoder_rgb": {"forward": ["jit:avx2"]}}
    assert bench.implementations("no oneDNN here\n") == {}


def test_work_counted_by_hand(bench):
    # decoder_32: 416 frames x 32 x 32 pixels x 64 x 64 channels x 9 taps, 2 FLOPs per multiply-add.
    assert bench.gflop(bench.SHAPES["decoder_32"]) == pytest.approx(2 * 416 * 32 * 32 * 64 * 64 * 9 / 1e9)
    assert bench.gflop(bench.SHAPES["decoder_32"]) == pytest.approx(31.40, abs=0.01)
    assert bench.gflop(bench.SHAPES["decoder_rgb"]) == pytest.approx(bench.gflop(bench.SHAPES["decoder_32"]) * 3 / 64)


def test_summary_ratios_and_medians(bench):
    def run(tf_ms, torch_ms):
        kernels = lambda ms: {"decoder_16": dict(zip(bench.KINDS, ms))}  # noqa: E731
        return {"tensorflow": {"kernels": kernels(tf_ms)}, "pytorch": {"kernels": kernels(torch_ms)}}

    # Two runs (cores swapped): each figure is the mean of the two; ratio = PyTorch's time over ours.
    runs = [run((10.0, 20.0, 30.0), (30.0, 20.0, 30.0)), run((14.0, 20.0, 50.0), (30.0, 40.0, 30.0))]
    row = bench.summarise(runs, ["decoder_16"])["decoder_16"]
    assert row["forward"]["tensorflow_ms"] == 12.0 and row["forward"]["ratio"] == 2.5
    assert row["input_gradient"]["ratio"] == 1.5
    assert row["weight_gradient"]["ratio"] == 0.75  # slower here: below 1
    # training: the three kernels summed per run, then the median (60 and 84 ms; 80 and 100 ms).
    assert row["training"]["tensorflow_ms"] == 72.0 and row["training"]["pytorch_ms"] == 90.0
    assert row["training"]["ratio"] == 1.25
    work = bench.gflop(bench.SHAPES["decoder_16"])
    assert row["forward"]["tensorflow_gflops"] == pytest.approx(work / 12.0 * 1e3, abs=0.05)
    assert row["training"]["pytorch_gflops"] == pytest.approx(3 * work / 90.0 * 1e3, abs=0.05)


def test_tensorflow_worker_times_each_kernel(bench, monkeypatch):
    monkeypatch.setitem(bench.SHAPES, "tiny", (2, 8, 4, 3))
    result = bench.tf_worker(["tiny"], repeats=2)
    assert result["side"] == "tensorflow" and set(result["kernels"]) == {"tiny"}
    times = result["kernels"]["tiny"]
    assert set(times) == set(bench.KINDS) and all(t > 0 for t in times.values())


def test_unknown_shape_is_refused_with_the_valid_ones(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--shapes", "decoder_64"])
    err = capsys.readouterr().err
    assert "decoder_64" in err and "decoder_32" in err and "encoder_32" in err
