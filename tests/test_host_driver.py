"""The engine driver and runtime against the engine model (golden transport): identity refusals,
layers that do not fit, tensors of the wrong shape, missing bitstreams, DMA timeouts, the
register shadow and the reused output memory."""

from pathlib import Path

import numpy as np
import pytest

from litefly.config import load_network
from litefly.errors import ConfigError, LiteflyError, ShapeError
from litefly.host.driver import STAGES, EngineDriver
from litefly.host.golden_transport import GoldenTransport
from litefly.host.runtime import NetworkRunner, execute, prepare_program
from litefly.host.transport import DMATimeout
from litefly.hw import regmap
from litefly.hw.spec import EngineEnvelope
from litefly.network import network_forward_int, plan_network

from network_params import calibrated_network_params

ROOT = Path(__file__).resolve().parent.parent
VGG = ROOT / "examples" / "vgg_net.yaml"


@pytest.fixture(scope="module")
def vgg():
    net = load_network(VGG)
    x = np.random.default_rng(9).standard_normal((2, 3, 8, 8))
    params, ref = calibrated_network_params(net, x, np.random.default_rng(10))
    return net, params, x, ref


def one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_refuses_an_engine_that_is_not_the_networks():
    net = load_network(VGG)
    env = EngineEnvelope.for_network(net, (8, 8))
    with pytest.raises(LiteflyError) as exc:
        EngineDriver(GoldenTransport(env, config_hash=0x1234ABCD), env).check_identity()
    assert one_line(exc) == (f"bitstream engine hash 0x1234abcd does not match engine 'vgg_head' (0x{env.hash32:08x}): "
                             f"load the bitstream built for this network")
    with pytest.raises(LiteflyError, match="has 32 lanes, engine 'vgg_head' expects 64"):
        EngineDriver(GoldenTransport(env, lanes=32), env).check_identity()
    with pytest.raises(LiteflyError, match=r"interface version 9\.0 is not supported"):
        EngineDriver(GoldenTransport(env, version=(9, 0)), env).check_identity()
    with pytest.raises(LiteflyError) as exc:           # 3.2 engines had no LANE_BEATS
        EngineDriver(GoldenTransport(env, version=(3, 2)), env).check_identity()
    assert one_line(exc) == "bitstream interface version 3.2 is older than this litefly's 3.3: rebuild the bitstream"
    ident = EngineDriver(GoldenTransport(env), env).check_identity()
    assert ident["CONFIG_HASH"] == env.hash32 and ident["LANES"] == env.lanes


def test_runner_refuses_a_layer_that_does_not_fit_its_engine(vgg):
    net, params, x, _ = vgg
    small = EngineEnvelope.for_network(load_network(VGG), (8, 8), frame_kib=1)     # 128 beats of frame
    runner = NetworkRunner(net, params, "golden", input_size=(32, 32), envelope=small)
    with pytest.raises(ConfigError) as exc:
        runner.run(np.zeros((1, 3, 32, 32)))
    msg = one_line(exc)
    assert "layer 'vgg_conv1' does not fit engine 'vgg_head'" in msg and "CAP_FRAME_BEATS" in msg and "128" in msg


def test_runner_refuses_tensors_of_the_wrong_shape_dtype_or_range(vgg):
    net, params, x, _ = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    cases = [(lambda: runner.run(np.zeros((1, 4, 8, 8))), r"input has shape \(1, 4, 8, 8\), expected \(N, 3, H, W\)"),
             (lambda: runner.run(np.zeros((3, 8, 8))), r"input has shape \(3, 8, 8\)"),
             (lambda: runner.run_int(np.zeros((1, 3, 8, 8), np.float32)), "dtype float32 is not an integer"),
             (lambda: runner.run_int(np.full((1, 3, 8, 8), 300)), "outside the 8-bit range"),
             (lambda: runner.run(np.zeros((1, 3, 1, 1))), "larger than the 1x1 map"),
             (lambda: runner.run(np.where(np.eye(8) > 0, np.nan, 0.0) + np.zeros((1, 3, 8, 8))), "holds NaN")]
    for call, pattern in cases:
        with pytest.raises((ShapeError, ConfigError), match=pattern) as exc:
            call()
        one_line(exc)


def test_runner_refuses_missing_or_foreign_parameters(vgg):
    net, params, _, _ = vgg
    with pytest.raises(LiteflyError, match="no parameters for layer 'vgg_conv2'"):
        NetworkRunner(net, {"vgg_conv1": params["vgg_conv1"]}, backend="golden")
    with pytest.raises(LiteflyError, match="backend 'fpga' is not known"):
        NetworkRunner(net, params, backend="fpga")
    swapped = dict(params, vgg_conv2=params["vgg_conv3"])
    with pytest.raises(LiteflyError) as exc:
        NetworkRunner(net, swapped, "golden", input_size=(8, 8)).run(np.zeros((1, 3, 8, 8)))
    one_line(exc)


def test_a_network_whose_bitstream_is_missing_from_the_registry(tmp_path):
    """The registry is keyed by the network engine's envelope hash (lookup takes the envelope)."""
    from litefly.bitstreams.registry import lookup
    env = EngineEnvelope.for_network(load_network(VGG), (32, 32))
    with pytest.raises(LiteflyError) as exc:
        lookup(env, "pynq-z2", tmp_path)
    msg = one_line(exc)
    assert f"no bitstream for engine 'vgg_head' (0x{env.hash32:08x}) on pynq-z2" in msg and "litefly build" in msg


def test_dma_that_never_completes_times_out_in_one_line(vgg):
    net, params, x, _ = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8), fault="never_start", timeout=0.2)
    with pytest.raises(DMATimeout) as exc:
        runner.run(x)
    assert one_line(exc).startswith("output DMA receive did not complete within 0.20 s")
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8), fault="short_output", timeout=0.2)
    with pytest.raises(DMATimeout, match="output DMA receive"):
        runner.run(x)


def test_every_host_second_of_a_run_is_in_a_stage(vgg):
    net, params, x, ref = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    np.testing.assert_array_equal(runner.run(x), ref)         # the first run also opens
    shares = []
    for _ in range(5):      # buffers reused; a loaded machine may preempt one run between stages: best of 5
        np.testing.assert_array_equal(runner.run(x), ref)
        stages = runner.total["host_stage[s]"]
        assert set(stages) == set(STAGES)
        shares.append(sum(v for k, v in stages.items() if k != "quantize") / runner.total["wall_s"])
    assert max(shares) == pytest.approx(1.0, rel=0.05), shares
    for st in runner.stats:
        assert set(st["timings"]) == set(STAGES) and st["timings"]["wait"] > 0


class RecordingTransport(GoldenTransport):
    """The engine model, recording the register writes it receives."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.writes: list[tuple[int, int]] = []

    def write_reg(self, offset: int, value: int) -> None:
        self.writes.append((offset, value))
        super().write_reg(offset, value)


def descriptor_words(driver, desc, shifts, images, skip_align=(0, 0)) -> dict[int, int]:
    words = dict(desc.register_words(images))
    words.update({f"F{i}_SHIFT": regmap.pack(driver.reg(f"F{i}_SHIFT"), {"SHIFT": s}) for i, s in enumerate(shifts)})
    words["SKIP"] = regmap.pack("SKIP", {"M": skip_align[0], "K": skip_align[1]})
    return {driver.reg(n).offset: w for n, w in words.items()}


def test_register_shadow_skips_only_unchanged_registers(vgg):
    net, params, _, _ = vgg
    env = EngineEnvelope.for_network(net, (8, 8))
    tr = RecordingTransport(env)
    drv = EngineDriver(tr, env)
    drv.check_identity()
    prog = prepare_program(env, plan_network(net, (3, 8, 8)), params)
    (a, b), (sa, sb) = prog.descriptors[:2], prog.shifts[:2]
    want_a, want_b = descriptor_words(drv, a, sa, 2), descriptor_words(drv, b, sb, 1)
    drv.write_descriptor(a, sa, 2)
    assert dict(tr.writes) == want_a and len(tr.writes) == len(want_a)        # a new engine: every register
    tr.writes.clear()
    drv.write_descriptor(a, sa, 2)
    assert tr.writes == []                                                    # nothing changed, nothing written
    drv.write_descriptor(b, sb, 1)
    assert dict(tr.writes) == {o: w for o, w in want_b.items() if want_a.get(o) != w} != {}
    assert {o: tr.read_reg(o) for o in want_b} == want_b                      # nothing stale left behind
    for forget in (drv.soft_reset, drv.check_identity, lambda: setattr(drv, "transport", tr), drv.forget_registers):
        forget()
        tr.writes.clear()
        drv.write_descriptor(b, sb, 1)
        assert dict(tr.writes) == want_b, forget                              # trusted nothing: all written again
    tr.writes.clear()
    drv.write("IMAGES", 2)                                                    # a write by name updates the shadow
    assert tr.writes == [(regmap.REG["IMAGES"], 2)]
    tr.writes.clear()
    drv.write_descriptor(b, sb, 2)            # another pass size: IMAGES already 2; NPOS, FRAME_BEATS follow
    changed = {o for o, _ in tr.writes}
    assert regmap.REG["IMAGES"] not in changed and {regmap.REG["NPOS"], regmap.REG["FRAME_BEATS"]} <= changed


def test_one_driver_runs_networks_of_other_geometry_bit_exact(vgg):
    """Two programs (other map sizes, batch sizes, images per pass) taking turns on one driver: each
    layer's descriptor differs from the last one written in some registers; a skipped write shows here."""
    net, params, _, _ = vgg
    env = EngineEnvelope.for_network(net, (8, 8), frame_kib=4)
    drv = EngineDriver(GoldenTransport(env), env)
    drv.check_identity()
    rng = np.random.default_rng(11)
    runs = []
    for hw, n in (((8, 8), 3), ((6, 6), 2), ((8, 4), 1)):
        steps = plan_network(net, (3,) + hw)
        x_int = params["vgg_conv1"].quantize_input(rng.standard_normal((n, 3) + hw))
        runs.append((prepare_program(env, steps, params), x_int, network_forward_int(steps, params, x_int)))
    passes = set()
    for prog, x_int, want in runs + runs[::-1] + runs:
        y, stats = execute(drv, prog, x_int)
        np.testing.assert_array_equal(y, want)
        passes.update((s["passes"], s["images_per_pass"]) for s in stats)
    assert len(passes) > 2                    # IMAGES changes between and within layers too


def test_outputs_the_caller_keeps_are_never_written_again(vgg):
    net, params, x, ref = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    steps = plan_network(net, (3, 8, 8))
    scale = params["vgg_conv3"].out_scale
    inputs = [x * k for k in (1.0, -1.0, 0.5, 2.0)]
    refs = [network_forward_int(steps, params, params["vgg_conv1"].quantize_input(v)) * scale for v in inputs]
    kept = runner.run(inputs[0])
    view = runner.run(inputs[1])[1:, 2]             # only a view of the second output is kept
    for v in inputs[2:] * 2:
        runner.run(v)
    np.testing.assert_array_equal(kept, ref)
    np.testing.assert_array_equal(view, refs[1][1:, 2])
    assert kept.dtype == np.float64 and kept.transpose(0, 2, 3, 1).flags.c_contiguous    # channels-last NCHW
    del view                                        # its block is free again (kept holds the other one)
    addresses, taken = set(), []
    for v, want in zip(inputs * 2, refs * 2):       # outputs dropped at once: the same memory serves every run
        y = runner.run(v)
        np.testing.assert_array_equal(y, want)
        addresses.add(y.__array_interface__["data"][0])
        del y
        taken.append(np.ones_like(kept))            # a new array per run would not get the freed memory back
    assert len(addresses) == 1
    np.testing.assert_array_equal(kept, ref)
