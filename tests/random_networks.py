"""Seeded random networks for the network engine: random valid DeBut chains, random conv
geometries and random or extreme integer parameters, all fitting one fixed envelope.

* :func:`random_chain` builds a shape-valid chain from a given input width ``q``;
* :func:`random_network` builds a 1-3 layer :class:`~litefly.config.NetworkConfig` (conv
  layers with non-square kernel/stride/padding/dilation, C not a multiple of E, fused ReLU
  and 2x2/3x3 max pooling, flatten then linear layers, or a linear-first network = host
  im2col columns as 1x1 images) that fits the envelope;
* :func:`random_case` adds parameters (``quantize_network`` on random floats, or pushed to
  the extremes of their fields: weights at +-max, biases at the ends of the bias field,
  inputs at -128/127, small shifts so results saturate at both ends), an input batch, and
  a stall pattern.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from litefly.chain import AnyFactor, SparseFactor, validate_chain
from litefly.config import NetworkConfig
from litefly.errors import LiteflyError
from litefly.fixed import QuantizedLayer, int_range, random_float_weights
from litefly.hw.spec import EngineEnvelope
from litefly.network import EngineStep, network_forward_int, plan_network, quantize_network

__all__ = ["ENVELOPES", "random_chain", "random_network", "random_case", "Case", "cases", "STALLS",
           "extreme_params"]

# Small envelopes: one Verilator build each serves every case below. rand32 shares each
# multiplier between two lanes (macs_per_dsp=2) and forms its windows with four window
# generators, rand64 has one of each, rand16rq has two multipliers per lane of two rows each
# (row_quads: factors with r divisible by 4 and s >= 4 issue four rows, later ones with r and t even
# and s >= 4 four as interleaved quads, other factors with r even two, the rest one) with two window generators: the MAC arrays and the window paths are covered.
# rand64's frame-buffer words hold four beats and rand16rq's two (a window read takes 1, 2 or 4
# beats of a pixel: cycles.window_read_beats), rand32's one. rand16ro has four multipliers per lane
# (row_octets: factors with r divisible by 8 and s >= 8 issue eight rows, the others as on rand16rq).
ENVELOPES = {
    "rand64": EngineEnvelope(name="rand64", lanes=8, stream_bits=64, act_bits=8, weight_bits=8, max_factors=3,
                             max_q=64, max_p=32, max_work=64, weight_beats=256, frame_beats=512, acc_bits=21,
                             index_beats=160, frame_word_beats=4),
    "rand32": EngineEnvelope(name="rand32", lanes=16, stream_bits=32, act_bits=8, weight_bits=8, max_factors=3,
                             max_q=48, max_p=24, max_work=48, weight_beats=512, frame_beats=1024, acc_bits=21,
                             macs_per_dsp=2, index_beats=320, window_generators=4),
    "rand16rq": EngineEnvelope(name="rand16rq", lanes=16, stream_bits=64, act_bits=8, weight_bits=8, max_factors=3,
                               max_q=64, max_p=32, max_work=64, weight_beats=256, frame_beats=512, acc_bits=21,
                               macs_per_dsp=2, index_beats=160, window_generators=2, row_pairs=True,
                               row_quads=True, frame_word_beats=2),
    "rand16ro": EngineEnvelope(name="rand16ro", lanes=16, stream_bits=64, act_bits=8, weight_bits=8, max_factors=3,
                               max_q=72, max_p=64, max_work=64, weight_beats=256, frame_beats=512, acc_bits=21,
                               macs_per_dsp=2, window_generators=1, row_pairs=True, row_quads=True,
                               row_octets=True, frame_word_beats=4),
}

STALLS = ("none", "rand30", "slow_sink", "bursty_source", "both_slow", "rand60_sink")


def _divisors(n: int, cap: int) -> list[int]:
    return [d for d in range(1, min(n, cap) + 1) if n % d == 0]


def random_chain(rng: random.Random, q: int, max_factors: int, max_p: int, max_work: int,
                 max_s: int = 8, sparse: float = 0.2, quads: float = 0.0,
                 octets: float = 0.0) -> tuple[AnyFactor, ...] | None:
    """A random shape-valid chain with input width ``q`` (None if this draw does not fit); each
    factor is a random sparse pattern with probability ``sparse`` (a third of those after the
    first read ``[input ; previous output]``), at most 160 entries each; with probability ``quads``
    a DeBut factor takes a row quad's shape (``r = 4``, ``s >= 4``) where one fits, or after the
    first factor with ``t`` even, four times in five, an interleaved quad's (``r = 2``); with probability
    ``octets`` a row octet's (``r = 8``, ``s >= 8``) where one fits."""
    n = rng.randint(1, max_factors)
    chain: list = []
    t = 1
    q0 = q
    for i in range(n):
        last = i == n - 1
        if rng.random() < sparse:
            p = rng.randint(1, max_p if last else max_work)
            concat = i > 0 and rng.random() < 1 / 3
            width = q0 + q if concat else q
            density = min(rng.uniform(0.02, 0.6), 160 / (p * width))
            mask = np.random.default_rng(rng.randrange(1 << 30)).random((p, width)) < density
            chain.append(SparseFactor.from_mask(mask, concat=concat).to_config())
            q, t = p, 1
            continue
        if q % t:
            t = 1
        if rng.random() < 0.25:                      # break the mixing rule now and then
            t = rng.choice(_divisors(q, 8))
        s = rng.choice(_divisors(q // t, max_s))
        octet = octets and rng.random() < octets and [d for d in _divisors(q // t, 16) if d >= 8]
        quad = not octet and quads and rng.random() < quads and [d for d in _divisors(q // t, max_s) if d >= 4]
        if octet:                                    # a row octet's shape: s >= 8, r = 8
            s = rng.choice(octet)
        if quad:                                     # a row quad's shape: s >= 4, r = 4
            s = rng.choice(quad)
        g = q // (s * t)
        rs = [r for r in range(1, 5) if g * r * t <= (max_p if last else max_work)]
        if octet and g * 8 * t <= (max_p if last else max_work):
            rs = [8]
        if not rs:
            return None
        # most quads after the first factor with t even interleaved (r = 2: cycles.factor_issue)
        inter = quad and i > 0 and t % 2 == 0 and 2 in rs and rng.random() < 0.8
        r = 2 if inter else 4 if quad and 4 in rs else rng.choice(rs)
        p = g * r * t
        chain.append([p, q, r, s, t])
        q, t = p, r * t
    try:
        return validate_chain(chain)
    except LiteflyError:
        return None


def _layer(name: str, kind: str, chain, cin: int, geometry: dict[str, Any], bias: bool, relu: bool,
           env: EngineEnvelope) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "kind": kind, "chain": [f.as_list() for f in chain],
                         "format": {"act_bits": env.act_bits, "weight_bits": env.weight_bits, "bias": bias,
                                    "relu": relu},
                         "engine": {"multipliers": env.lanes, "stream_bits": env.stream_bits}}
    if kind == "linear":
        d.update(in_features=cin, out_features=chain[-1].p)
    else:
        d.update(in_channels=cin, out_channels=chain[-1].p, **geometry)
    return d


def _fitting_chain(rng: random.Random, q: int, env: EngineEnvelope) -> tuple[AnyFactor, ...] | None:
    """A random chain of input width ``q`` within ``env`` (None if ``q`` or this draw does not fit)."""
    if q > env.max_q:
        return None
    return random_chain(rng, q, env.max_factors, env.max_p, env.max_work, quads=0.3 if env.row_quads else 0.0,
                        octets=0.5 if env.row_octets else 0.0)


def random_network(seed: int, env: EngineEnvelope) -> tuple[NetworkConfig, tuple[int, int, int], tuple]:
    """A random network fitting ``env``: ``(config, input shape (C, H, W), steps)``."""
    rng = random.Random(seed)
    for _ in range(500):
        try:
            got = _try_network(rng, seed, env)
        except LiteflyError:
            continue
        if got is not None:
            return got
    raise RuntimeError(f"no random network fits envelope {env.name} for seed {seed}")


def _try_network(rng: random.Random, seed: int, env: EngineEnvelope):
    nlayers = rng.choice([1, 2, 2, 3])
    linear_first = rng.random() < 0.15
    if linear_first:
        c, h, w = rng.randint(2, env.max_q), 1, 1
    else:
        c, h, w = rng.randint(1, 12), rng.randint(3, 8), rng.randint(3, 8)
    items: list[dict[str, Any]] = []
    flat = linear_first
    cur = (c, h, w)
    for k in range(nlayers):
        cc, hh, ww = cur
        bias = rng.random() < 0.7
        relu_fmt = rng.random() < 0.3
        if flat or (k > 0 and rng.random() < 0.35 and cc * hh * ww <= env.max_q):
            if not flat:
                items.append({"op": "flatten"})
                flat = True
            q = cc * hh * ww
            chain = _fitting_chain(rng, q, env)
            if chain is None:
                return None
            items.append(_layer(f"l{k}", "linear", chain, q, {}, bias, relu_fmt, env))
            cur = (chain[-1].p, 1, 1)
            continue
        kh, kw = rng.randint(1, 3), rng.randint(1, 3)
        geometry = {"kernel": [kh, kw], "stride": [rng.randint(1, 2), rng.randint(1, 2)],
                    "padding": [rng.randint(0, min(2, kh)), rng.randint(0, min(2, kw))],
                    "dilation": [rng.choice([1, 1, 2]), rng.choice([1, 1, 2])]}
        chain = _fitting_chain(rng, kh * kw * cc, env)
        if chain is None:
            return None
        items.append(_layer(f"l{k}", "conv2d", chain, cc, geometry, bias, relu_fmt, env))
        if rng.random() < 0.3:
            items.append({"op": "relu"})
        if rng.random() < 0.4:
            pk = rng.choice([2, 3])
            items.append({"op": "maxpool2d", "kernel": pk, "stride": rng.choice([pk, 1, 2])})
        net = NetworkConfig.from_dict({"name": f"rnd{seed}", "layers": list(items)})
        steps = plan_network(net, (c, h, w))
        cur = steps[-1].out_shape
    net = NetworkConfig.from_dict({"name": f"rnd{seed}", "layers": items})
    steps = plan_network(net, (c, h, w))
    for st in steps:
        env.check_fits(st)
    return net, (c, h, w), steps


def extreme_params(steps, rng: np.random.Generator, mode: str) -> dict[str, QuantizedLayer]:
    """Integer parameters at the ends of their fields.

    ``mode="saturate"``: weights +-max, biases at the ends of the bias field, shift 0..2 so
    results saturate at both ends; ``mode="round"``: the same weights with the largest shifts
    (results near zero, rounding at its edges); ``mode="mixed"``: random shifts.
    """
    params = {}
    for st in steps:
        lay = st.layer
        fmt = lay.format
        wlo, whi = int_range(fmt.weight_bits)
        ws = [rng.choice(np.array([wlo, whi, wlo, whi, 0, 1, -1]), size=f.compact_shape) for f in lay.chain]
        shifts = []
        for i, f in enumerate(lay.chain):
            top = fmt.acc_bits(f, last=i == len(lay.chain) - 1) - 1
            if mode == "saturate":
                sh = int(rng.integers(0, 3))
            elif mode == "round":
                sh = int(rng.integers(max(0, top - 3), top + 1))
            else:
                sh = int(rng.integers(0, top + 1))
            shifts.append(sh)
        bias = None
        if fmt.bias:
            blo, bhi = int_range(fmt.bias_bits)
            bias = rng.choice(np.array([blo, bhi, blo, bhi, 0, blo + 1, bhi - 1]), size=lay.chain_out)
        params[st.name] = QuantizedLayer(lay, [np.asarray(w, np.int64) for w in ws], shifts,
                                         None if bias is None else np.asarray(bias, np.int64))
    return params


@dataclass
class Case:
    seed: int
    envelope: EngineEnvelope
    network: NetworkConfig
    in_shape: tuple[int, int, int]
    steps: tuple[EngineStep, ...]
    params: dict[str, QuantizedLayer]
    x: np.ndarray
    stall: str
    kind: str                              # "calibrated", "saturate", "round", "mixed"
    expected: np.ndarray = field(default=None)  # type: ignore[assignment]

    @property
    def label(self) -> str:
        return f"{self.envelope.name}-s{self.seed}-{self.kind}-{self.stall}"

    def batches(self) -> list[int]:
        """Batches of lanes in each layer's largest pass."""
        out = []
        for st in self.steps:
            desc = self.envelope.describe(st)
            ipp = min(desc.images_per_pass, self.x.shape[0])
            out.append(-(-ipp * desc.out_positions_per_image // self.envelope.lanes))
        return out

    def job(self, **extra: Any) -> dict[str, Any]:
        return {"kind": "network", "steps": self.steps, "params": self.params, "x": self.x, "stall": self.stall,
                "seed": self.seed, "label": self.label, **extra}


def random_case(seed: int, env: EngineEnvelope, stall: str | None = None) -> Case:
    rng = random.Random(seed * 7919 + 17)
    nrng = np.random.default_rng(seed)
    net, in_shape, steps = random_network(seed, env)
    kind = rng.choice(["calibrated", "calibrated", "saturate", "round", "mixed"])
    stall = stall or STALLS[seed % len(STALLS)]
    desc0 = env.describe(steps[0])
    # several images per pass; with a slow consumer, enough images for >= 4 batches when they fit
    per_img = desc0.out_positions_per_image
    want = max(1, -(-4 * env.lanes // max(1, per_img))) if stall in ("slow_sink", "rand60_sink") else 0
    images = min(max(want, rng.randint(1, 4)), 2 * desc0.images_per_pass, 12)
    if kind == "calibrated":
        xf = nrng.standard_normal((images,) + in_shape)
        w = {s.name: random_float_weights(s.layer, nrng) for s in steps}
        b = {s.name: nrng.standard_normal(s.layer.chain_out) * 0.5 for s in steps}
        params = quantize_network(steps, w, xf, b)
        x = params[steps[0].name].quantize_input(xf)
        if rng.random() < 0.5:                       # inputs at the ends of the range too
            lo, hi = int_range(env.act_bits)
            mask = nrng.random(x.shape) < 0.2
            x = np.where(mask, nrng.choice([lo, hi], size=x.shape), x)
    else:
        params = extreme_params(steps, nrng, kind)
        lo, hi = int_range(env.act_bits)
        x = nrng.choice(np.array([lo, hi, lo, hi, 0, 1, -1, lo + 1, hi - 1]), size=(images,) + in_shape)
    x = np.asarray(x, dtype=np.int64)
    case = Case(seed, env, net, in_shape, steps, params, x, stall, kind)
    case.expected = network_forward_int(steps, params, x)
    return case


def cases(env_name: str, seeds) -> list[Case]:
    env = ENVELOPES[env_name]
    return [random_case(s, env) for s in seeds]
