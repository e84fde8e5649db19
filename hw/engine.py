"""The network engine: one engine serves every layer of a network (``docs/engine.md``).

``NetworkEngine`` is the top level with the AXI ports; it holds the register file (outside
the soft-reset domain: the descriptor survives a soft reset) and the :class:`Datapath`,
which ``CTRL.SOFT_RESET`` resets as a whole through :class:`~amaranth.hdl.ResetInserter`
(loader, window generator, sequencer, MAC array, output stage, unloader, flags and
counters; memories keep their contents).

::

    s_axis -> Loader --params--> weight / index / bias memories -------------\\
                 \\--map--> frame buffer -> WindowGenerator (x G) -> IN[2] -> MacArray -> OutputStage -> OUT[2] -> Unloader -> m_axis
                                                              WORK[2] <------/
"""

from __future__ import annotations

import operator
from functools import reduce
from typing import Mapping

from amaranth import Cat, ClockDomain, Module, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from litefly.errors import ConfigError

from .axil_slave import axil_signature
from .counters import Counters
from .loader import Loader
from .mac_array import MacArray
from .fanout import replicated
from .memories import RAM_STYLES, engine_memories, frame_memory, in_banks, work_elements, work_memory
from .output_stage import OutputStage
from .registers import Registers, counters_layout, ctrl_layout, descriptor_layout, status_layout
from .sequencer import Sequencer
from .spec import EngineEnvelope
from .unloader import Unloader, beat_layout
from .window import WindowGenerator

__all__ = ["NetworkEngine", "Datapath", "FAULTS"]

FAULTS = ("weight_addr", "rounding", "window_pad", "pool", "sparse_split")
IN_ADDR_BANKS = 4           # IN banks per copy of the registered IN read address


def check_ram_styles(envelope: EngineEnvelope, ram_styles: Mapping[str, str] | None) -> dict[str, str]:
    """``ram_styles`` (memory name -> Vivado ``ram_style``) checked against the engine's memories."""
    names = {spec.name for spec in engine_memories(envelope)}
    styles = dict(ram_styles or {})
    for name, style in styles.items():
        if name not in names:
            raise ConfigError(f"ram_styles: {name!r} is not a memory of engine {envelope.name}; expected one of "
                              f"{', '.join(sorted(names))}")
        if style not in RAM_STYLES:
            raise ConfigError(f"ram_styles: {name}={style!r} is not one of {', '.join(RAM_STYLES)}")
    return styles


def top_signature(envelope: EngineEnvelope) -> dict:
    sb = envelope.stream_bits
    sig = {
        "aclk": In(1), "aresetn": In(1),
        "s_axis_tdata": In(sb), "s_axis_tvalid": In(1), "s_axis_tready": Out(1),
        "s_axis_tlast": In(1), "s_axis_tkeep": In(sb // 8),
        "m_axis_tdata": Out(sb), "m_axis_tvalid": Out(1), "m_axis_tready": In(1),
        "m_axis_tlast": Out(1), "m_axis_tkeep": Out(sb // 8),
    }
    sig.update(axil_signature(envelope.axil_addr_bits))
    return sig


class Datapath(wiring.Component):
    """Everything a soft reset clears: the components, their memories, flags and counters."""

    def __init__(self, envelope: EngineEnvelope, fault: str | None = None,
                 ram_styles: Mapping[str, str] | None = None) -> None:
        self._env = envelope
        self._fault = fault
        self._ram_styles = check_ram_styles(envelope, ram_styles)
        super().__init__({
            "s_axis": In(stream.Signature(envelope.stream_bits)),
            "m_axis": Out(stream.Signature(beat_layout(envelope.stream_bits))),
            "desc": In(descriptor_layout(envelope.max_factors)),
            "ctrl": In(ctrl_layout()),
            "status": Out(status_layout()),
            "counters": Out(counters_layout()),
        })

    def elaborate(self, platform):
        env, fault = self._env, self._fault
        E = env.elems_per_beat
        m = Module()
        d = self.desc

        m.submodules.loader = loader = Loader(env)
        G = env.window_generators
        windows = [WindowGenerator(env, fault, g, G) for g in range(G)]
        window = windows[0]
        for g, w in enumerate(windows):
            m.submodules["window" if g == 0 else f"window{g}"] = w
        m.submodules.sequencer = seq = Sequencer(env, fault)
        m.submodules.mac = mac = MacArray(env)
        m.submodules.output = outst = OutputStage(env, fault)
        m.submodules.unloader = unl = Unloader(env)
        m.submodules.counters = cnt = Counters()
        self.sequencer, self.window, self.unloader = seq, window, unl      # for testbenches' probes
        for c in (loader, *windows, seq, unl):
            m.d.comb += c.desc.eq(d)

        # memories (hw/memories.py lists them; a memory plan may give each a ram_style)
        mems, specs = {}, {spec.name: spec for spec in engine_memories(env)}
        for spec in specs.values():
            style = self._ram_styles.get(spec.name)
            mems[spec.name] = m.submodules[spec.name] = Memory(
                shape=spec.width, depth=spec.depth, init=[], attrs={"ram_style": style} if style else None)
        w_mem, b_mem = mems["weight_mem"], mems["bias_mem"]
        wiring.connect(m, loader.weight_w, w_mem.write_port())
        wiring.connect(m, loader.bias_w, b_mem.write_port())
        # a frame-buffer copy per window generator, the same writes into each; a word holds FB beats
        # (EngineEnvelope.frame_word_beats), the loader's beat a written into word a // FB, part a mod FB
        FB = env.frame_word_beats
        LFB = FB.bit_length() - 1
        fw = loader.frame_w
        for g, w in enumerate(windows):
            f_mem = mems[frame_memory(g)]
            wp = f_mem.write_port(granularity=env.stream_bits if FB > 1 else None)
            m.d.comb += [wp.addr.eq(fw.addr[LFB:]), wp.data.eq(Cat(*([fw.data] * FB))),
                         wp.en.eq(fw.en << fw.addr[:LFB] if FB > 1 else fw.en)]
            wiring.connect(m, w.frame_r, f_mem.read_port())
        if env.index_beats:
            i_mem = mems["index_mem"]
            wiring.connect(m, loader.index_w, i_mem.write_port())
            i_rp = i_mem.read_port()
            m.d.comb += [i_rp.addr.eq(seq.index_addr), seq.index_data.eq(i_rp.data)]
        # the issue register (cycles.ISSUE_LAG): the sequencer's read addresses (all but the weight
        # memory's, below) and control, registered once more before the memories and the MAC array,
        # so that no memory's address is the sequencer's adder plus a route to every IN bank; IN's
        # address one copy per IN_ADDR_BANKS banks
        NB = in_banks(env)
        ctl_r = Signal.like(seq.ctl, name="issue_ctl")
        bias_addr, work_addr = (Signal.like(a, name=f"issue_{n}", reset_less=True) for a, n in (
            (seq.bias_addr, "bias_addr"), (seq.work_addr, "work_addr")))
        in_addr = replicated(m, "issue_in_addr", seq.in_addr.shape(), seq.in_addr,
                             copies=-(-G * NB // IN_ADDR_BANKS))
        m.d.sync += [ctl_r.eq(seq.ctl), bias_addr.eq(seq.bias_addr), work_addr.eq(seq.work_addr)]
        # the weight memory is read a cycle earlier, at the sequencer's index itself (a register,
        # no logic: Sequencer.weight_addr), and its word registered: the block RAM's output
        # register, so the weight select and packing start from a register, not from a read
        w_rp, b_rp = w_mem.read_port(), b_mem.read_port()
        weight_q = Signal.like(w_rp.data, name="weight_q", reset_less=True)
        m.d.sync += weight_q.eq(w_rp.data)
        m.d.comb += [w_rp.addr.eq(seq.weight_addr), b_rp.addr.eq(bias_addr),
                     mac.weight_data.eq(weight_q), mac.bias_data.eq(b_rp.data)]
        for k in range(1, env.lane_rows):       # a row pair's or quad's further rows' biases
            b_rpk = b_mem.read_port()
            m.d.comb += [b_rpk.addr.eq(mac.bias_more_addr[k - 1]), mac.bias_more_data[k - 1].eq(b_rpk.data)]
        # IN: per window generator g (lanes g, g + G, ...), NB banks skewed by lane (memories.in_banks,
        # memories.skewed_bank: lane l of generator g in bank (l + element) mod NB, slot l // NB), all
        # read at one address (the element); the MAC array unskews them
        for g, w in enumerate(windows):
            for b in range(NB):
                name = f"in_mem{b}_{g}"
                wiring.connect(m, w.in_w[b], mems[name].write_port(granularity=specs[name].granularity))
                rp = mems[name].read_port()
                m.d.comb += [rp.addr.eq(in_addr[(g * NB + b) // IN_ADDR_BANKS]), mac.in_data[g * NB + b].eq(rp.data)]
        if env.max_factors > 1:
            # WORK: a memory per element of its words (memories.work_elements), read at one address; the
            # output stage writes a row into one of them
            work_rd = []
            for e in range(work_elements(env)):
                wiring.connect(m, outst.work_w[e], mems[work_memory(e)].write_port())
                rp = mems[work_memory(e)].read_port()
                m.d.comb += rp.addr.eq(work_addr)
                work_rd.append(rp.data)
            m.d.comb += mac.work_data.eq(Cat(*work_rd))
        for b in range(E):
            mem = mems[f"out_mem{b}"]
            wiring.connect(m, outst.out_w[b], mem.write_port())
            wiring.connect(m, outst.out_r[b], mem.read_port())      # not transparent: see OutputStage
            wiring.connect(m, unl.out_r[b], mem.read_port())

        # pipeline
        m.d.comb += [mac.ctl.eq(ctl_r), mac.bias_en.eq(d.LAYER.BIAS),
                     outst.ctl.eq(mac.ctl_out), outst.res.eq(mac.res),
                     outst.relu_en.eq(d.LAYER.RELU & ~(d.LAYER.RESIDUAL if env.residual else 0)),
                     outst.pool_en.eq(d.LAYER.POOL)]
        wiring.connect(m, loader.skip, unl.skip)

        # flags
        busy, done, params_valid = Signal(), Signal(), Signal()
        out_full = Signal(2)
        ctrl = self.ctrl
        idle = ~busy & ~loader.params_busy
        start = Signal()
        load = Signal()
        images = Signal()       # IMAGES != 0, registered (written at least two cycles before a START acts)
        m.d.sync += images.eq(d.IMAGES != 0)
        m.d.comb += [start.eq(ctrl.START & idle & images), load.eq(ctrl.LOAD_PARAMS & idle)]
        m.d.comb += [loader.start.eq(start), loader.load_params.eq(load), seq.start.eq(start), unl.start.eq(start)]
        for w in windows:
            m.d.comb += [w.go.eq(start), w.frame_loading.eq(loader.frame_busy), w.frame_count.eq(loader.frame_count)]
        # all generators start each batch-phase together: the first's batch start is the batch's lowest
        m.d.comb += [loader.release.eq(windows[0].release), loader.release_all.eq(windows[0].release_all)]
        # a pass ends when its output is out and its whole frame is in (a frame may end in rows
        # no window reads, so the unloader can finish first). The unloader's last beat is registered
        # (`pass_done_r`, a cycle of cycles.PASS_TAIL): the m_axis handshake and the FIFO's level
        # are not on the path to BUSY, DONE and `unloaded`
        unloaded, pass_done_r = Signal(), Signal()
        m.d.sync += pass_done_r.eq(unl.pass_done)
        with m.If(start):
            m.d.sync += [busy.eq(1), done.eq(0), unloaded.eq(0)]
        with m.Elif((pass_done_r | unloaded) & ~loader.frame_busy):
            m.d.sync += [busy.eq(0), done.eq(1), unloaded.eq(0)]
        with m.Elif(pass_done_r):
            m.d.sync += unloaded.eq(1)
        with m.If(load):
            m.d.sync += params_valid.eq(0)
        with m.If(loader.params_done):
            m.d.sync += params_valid.eq(1)
        m.d.sync += out_full.eq((out_full | outst.out_set) & ~unl.out_clr)
        # a half of IN is full when every window generator has formed its lanes of it; each
        # generator waits on its own part (it may not refill a half the sequencer has not read)
        formed = [Signal(2, name=f"in_formed{g}") for g in range(G)]
        halves = Cat(*(w.half for w in windows))
        for g, (f, w) in enumerate(zip(formed, windows)):
            f_next = Signal(2, name=f"in_formed{g}_next")
            m.d.comb += f_next.eq((f | w.in_set) & ~seq.in_clr)
            m.d.sync += f.eq(f_next)
            m.d.comb += [w.in_full_next.eq(f_next), w.sync.eq((halves == 0) | (halves == (1 << G) - 1))]
        for h in range(2):
            m.d.comb += [seq.in_meta[h].eq(window.meta[h]),
                         seq.in_meta[h].lanes.eq(sum(w.meta[h].lanes for w in windows))]
        m.d.comb += [seq.in_full.eq(reduce(operator.and_, formed)),
                     seq.out_full.eq(out_full), unl.out_full.eq(out_full), unl.meta.eq(outst.meta)]
        m.d.comb += [self.status.BUSY.eq(busy), self.status.DONE.eq(done),
                     self.status.LOADING.eq(loader.params_busy), self.status.PARAMS_VALID.eq(params_valid)]

        # streams
        wiring.connect(m, wiring.flipped(self.s_axis), loader.sink)
        wiring.connect(m, unl.source, wiring.flipped(self.m_axis))

        # counters
        ev = cnt.events
        m.d.comb += [
            cnt.clear.eq(ctrl.CLEAR_COUNTERS),
            ev.busy.eq(busy), ev.issue.eq(seq.ctl.valid),
            ev.starved.eq(busy & seq.waiting_in & reduce(operator.or_, (w.busy for w in windows))
                          & ~reduce(operator.or_, (w.load_wait for w in windows))),
            ev.stalled.eq(self.m_axis.valid & ~self.m_axis.ready),
            ev.column_done.eq(unl.column_done), ev.loading.eq(loader.frame_busy),
            self.counters.eq(cnt.counts),
        ]
        return m


class NetworkEngine(wiring.Component):
    """The engine's top level: ``aclk``, ``aresetn``, ``s_axis_*``, ``m_axis_*``, ``s_axil_*``."""

    def __init__(self, envelope: EngineEnvelope, fault: str | None = None, external_clock: bool = True,
                 ram_styles: Mapping[str, str] | None = None) -> None:
        if fault is not None and fault not in FAULTS:
            raise ConfigError(f"fault={fault!r} is not one of {', '.join(FAULTS)}")
        self._env = envelope
        self._fault = fault
        self._ram_styles = ram_styles            # checked by the Datapath that places them
        self._external_clock = external_clock
        super().__init__(top_signature(envelope))

    @property
    def envelope(self) -> EngineEnvelope:
        return self._env

    def elaborate(self, platform):
        env = self._env
        m = Module()
        if self._external_clock:
            m.domains.sync = cd = ClockDomain("sync", local=True)
            m.d.comb += [cd.clk.eq(self.aclk), cd.rst.eq(~self.aresetn)]
        m.submodules.registers = regs = Registers(env)
        for name, member in axil_signature(env.axil_addr_bits).items():
            port, mine = getattr(regs, name), getattr(self, name)
            m.d.comb += (mine.eq(port) if member.flow == Out else port.eq(mine))
        self.datapath = dp = Datapath(env, self._fault, self._ram_styles)
        m.submodules.datapath = ResetInserter(regs.ctrl.SOFT_RESET)(dp)
        m.d.comb += [
            dp.desc.eq(regs.desc), dp.ctrl.eq(regs.ctrl),
            regs.status.eq(dp.status), regs.counters.eq(dp.counters),
            dp.s_axis.payload.eq(self.s_axis_tdata), dp.s_axis.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(dp.s_axis.ready),
            self.m_axis_tdata.eq(dp.m_axis.payload.data), self.m_axis_tlast.eq(dp.m_axis.payload.last),
            self.m_axis_tvalid.eq(dp.m_axis.valid), dp.m_axis.ready.eq(self.m_axis_tready),
            self.m_axis_tkeep.eq((1 << (env.stream_bits // 8)) - 1),
        ]
        return m
