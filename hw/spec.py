"""Engine geometry derived from a layer config (numpy-free, amaranth-free: the board imports it).

The engine is a SIMD array of ``lanes`` MAC units. A *batch* is ``lanes`` input columns,
one per lane. For each factor, row by row in compact weight order ``(g, t, r, s)``, every
lane multiplies the same (broadcast) weight with its own column's element, so all lanes do
useful work every issue cycle whatever the chain's shape. ``docs/engine.md`` has the design.

Wire formats (little-endian element packing, element k of a beat at bits
``[k*bits, (k+1)*bits)``), all defined by :mod:`hw.wireformat`:

* data in (``s_axis``): per batch, element-major: for e in range(q_1): for lane in range(lanes)
* data out (``m_axis``): the same with p_N elements; TLAST on the last beat of a tile
* parameters (``s_axis`` after ``CTRL.LOAD_PARAMS``): all weights in compact order
  (the reference flat layout), ``weights_per_beat`` a beat, zero-padded to a whole beat;
  then, if the format has a bias, the p_N biases as sign-extended 32-bit containers,
  ``biases_per_beat`` a beat, zero-padded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litefly.config import LayerConfig
from litefly.errors import ConfigError

from . import regmap

__all__ = ["EngineSpec"]


@dataclass(frozen=True)
class EngineSpec:
    """Everything about an engine that follows from its layer config."""

    layer: LayerConfig

    # -- widths ------------------------------------------------------------------
    @property
    def stream_bits(self) -> int:
        return self.layer.engine.stream_bits

    @property
    def act_bits(self) -> int:
        return self.layer.format.act_bits

    @property
    def weight_bits(self) -> int:
        return self.layer.format.weight_bits

    @property
    def bias_bits(self) -> int:
        return self.layer.format.bias_bits

    @property
    def acc_bits(self) -> int:
        """Accumulator width of the shared datapath: the widest any factor needs."""
        n = len(self.layer.chain)
        return max(self.layer.format.acc_bits(f, last=(i == n - 1)) for i, f in enumerate(self.layer.chain))

    @property
    def elems_per_beat(self) -> int:
        return self.stream_bits // self.act_bits

    @property
    def weights_per_beat(self) -> int:
        return self.stream_bits // self.weight_bits

    @property
    def biases_per_beat(self) -> int:
        """Biases travel in 32-bit containers (sign-extended), so a beat holds a power of two of them."""
        return self.stream_bits // 32

    # -- the array ---------------------------------------------------------------
    @property
    def lanes(self) -> int:
        """MAC lanes: the multiplier budget rounded down to a multiple of elements per beat."""
        e = self.elems_per_beat
        budget = self.layer.engine.multipliers
        if budget < e:
            raise ConfigError(f"engine: multipliers={budget} is below one stream beat of "
                              f"{e} elements ({self.stream_bits}-bit stream, {self.act_bits}-bit activations)")
        return (budget // e) * e

    @property
    def multipliers(self) -> int:
        return self.lanes

    @property
    def in_elems(self) -> int:
        return self.layer.chain_in

    @property
    def out_elems(self) -> int:
        return self.layer.chain_out

    @property
    def beats_in_per_batch(self) -> int:
        return self.in_elems * self.lanes // self.elems_per_beat

    @property
    def beats_out_per_batch(self) -> int:
        return self.out_elems * self.lanes // self.elems_per_beat

    @property
    def total_weights(self) -> int:
        return self.layer.params

    @property
    def weight_beats(self) -> int:
        return -(-self.total_weights // self.weights_per_beat)

    @property
    def bias_beats(self) -> int:
        return -(-self.out_elems // self.biases_per_beat) if self.layer.format.bias else 0

    @property
    def param_beats(self) -> int:
        return self.weight_beats + self.bias_beats

    @property
    def issue_cycles_per_batch(self) -> int:
        """MAC issue cycles per batch: one per nonzero of the chain."""
        return self.layer.macs_per_column

    @property
    def work_depth(self) -> int:
        """Depth of one half of the intermediate ping-pong buffer (widest intermediate vector)."""
        inner = [f.p for f in self.layer.chain[:-1]]
        return max(inner) if inner else 0

    @property
    def num_factors(self) -> int:
        return len(self.layer.chain)

    @property
    def registers(self) -> list[regmap.Register]:
        return regmap.register_map(self.num_factors)

    @property
    def axil_addr_bits(self) -> int:
        return regmap.address_bits(self.num_factors)

    @property
    def info_word(self) -> int:
        return ((self.stream_bits // 8) | (self.act_bits << 8) | (self.weight_bits << 16)
                | (self.num_factors << 24))

    def manifest_base(self) -> dict[str, Any]:
        """The parts of ``manifest.json`` that follow from the config alone."""
        lay = self.layer
        return {
            "name": lay.name,
            "config_hash": lay.config_hash,
            "hash32": lay.hash32,
            "interface_version": list(regmap.VERSION),
            "layer": lay.to_dict(),
            "lanes": self.lanes,
            "multipliers": self.multipliers,
            "stream_bits": self.stream_bits,
            "act_bits": self.act_bits,
            "weight_bits": self.weight_bits,
            "bias_bits": self.bias_bits if lay.format.bias else None,
            "acc_bits": self.acc_bits,
            "elems_per_beat": self.elems_per_beat,
            "beats_in_per_batch": self.beats_in_per_batch,
            "beats_out_per_batch": self.beats_out_per_batch,
            "weight_load": {
                "via": "s_axis after CTRL.LOAD_PARAMS",
                "order": "compact (g, t, r, s) per factor, factors in chain order",
                "weights_per_beat": self.weights_per_beat,
                "weight_beats": self.weight_beats,
                "biases_per_beat": self.biases_per_beat if lay.format.bias else None,
                "bias_beats": self.bias_beats,
                "shifts": "SHIFT<i> registers over AXI-Lite",
            },
            "issue_cycles_per_batch": self.issue_cycles_per_batch,
            "registers": [
                {"name": r.name, "offset": r.offset, "access": r.access, "doc": r.doc,
                 "fields": [{"name": f.name, "lsb": f.lsb, "width": f.width, "doc": f.doc} for f in r.fields]}
                for r in self.registers
            ],
        }
