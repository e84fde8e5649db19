"""The network engine's memories, one list (amaranth-free): what ``NetworkEngine`` instantiates and
what a memory plan (``litefly.boards.memory_plan``) places.

Every memory has one write port; ``read_ports`` says how many read ports it has. Block RAM and
UltraRAM have one read port beside the write port, so a memory with ``r`` read ports is ``r``
copies of itself (Yosys and Vivado replicate it); LUT-RAM reads any number of ports from one
copy of the bits. The frame buffer, which each window generator reads, is therefore written as
one copy per generator (``frame_mem``, ``frame_mem1``, ...; the same writes into each): each is a
simple dual-port memory, the shape every tool maps to block RAM or UltraRAM as it stands.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import EngineEnvelope, ceil_div

__all__ = ["EngineMemory", "engine_memories", "frame_memory", "skewed_bank", "in_banks", "in_slots", "out_slots",
           "work_elements", "work_half_words", "work_memory", "RAM_STYLES"]

# Values of the ``ram_style`` attribute the generator writes (Vivado's and Yosys's names).
RAM_STYLES = ("block", "ultra", "distributed")


@dataclass(frozen=True)
class EngineMemory:
    name: str                  # the engine's submodule name
    width: int                 # bits a word
    depth: int                 # words
    read_ports: int = 1
    granularity: int | None = None      # write-enable granularity in bits (None: whole word)
    role: str = ""             # what it holds, for reports

    @property
    def bits(self) -> int:
        return self.width * self.depth


def frame_memory(generator: int) -> str:
    """The name of window generator ``generator``'s copy of the frame buffer."""
    return "frame_mem" if generator == 0 else f"frame_mem{generator}"


def in_banks(env: EngineEnvelope) -> int:
    """IN banks per window generator: the elements it writes a cycle, ``E`` times the beats of a
    frame-buffer word (``EngineEnvelope.frame_word_beats``)."""
    return env.elems_per_beat * env.frame_word_beats


def in_slots(env: EngineEnvelope) -> int:
    """Lanes a word of one IN bank holds: a window generator's lanes over its :func:`in_banks`."""
    return ceil_div(env.lanes // env.window_generators, in_banks(env))


def work_elements(env: EngineEnvelope) -> int:
    """Elements of every lane a WORK word holds: 2 on a row-quad engine (an interleaved quad reads
    columns ``c`` and ``c + 1``, ``c`` even, in one read: ``cycles.factor_issue``), else 1. Element
    ``e`` of the words is memory :func:`work_memory` (``e``), all read at one address; a factor's
    output rows are written one a cycle, row ``k`` into element ``k mod work_elements``."""
    return 2 if env.row_quads else 1


def work_memory(element: int) -> str:
    """The name of the memory holding ``element`` of every WORK word (:func:`work_elements`)."""
    return "work_mem" if element == 0 else f"work_mem{element}"


def work_half_words(env: EngineEnvelope) -> int:
    """WORK words one half holds (a factor reads one half and writes the other): ``max_work``
    elements, :func:`work_elements` a word."""
    return ceil_div(env.max_work, work_elements(env))


def out_slots(env: EngineEnvelope) -> int:
    """Lanes a word of one OUT bank holds: the lanes over the E banks."""
    return ceil_div(env.lanes, env.elems_per_beat)


def skewed_bank(lane: int, element: int, banks: int) -> tuple[int, int]:
    """Where IN keeps ``element`` of a window generator's ``lane``, and OUT channel ``element`` of
    ``lane``: (bank, slot in the word); the word's address is the element (plus the half's offset,
    ``max_q`` or ``max_p``). ``banks`` is ``E`` (OUT) or :func:`in_banks` (IN: ``E`` times the beats of a frame word).

    Bank ``(lane + element) mod banks`` is a skew: the ``banks`` consecutive elements of one lane
    that a read brings (IN) or a beat takes (OUT) are in different banks, one word each, and one
    element of all the lanes, what the MAC array reads from IN or the output stage writes to OUT
    in a cycle, is one word of each bank at one address."""
    return (lane + element) % banks, lane // banks


def engine_memories(env: EngineEnvelope) -> list[EngineMemory]:
    """The memories of the engine of ``env``, in the order the engine creates them."""
    L, A, E, SB, G = env.lanes, env.act_bits, env.elems_per_beat, env.stream_bits, env.window_generators
    mems = [EngineMemory("weight_mem", SB, env.weight_beats, role="factor weights"),
            EngineMemory("bias_mem", SB, env.bias_beats, read_ports=env.lane_rows,
                         role="biases (a row pair's, quad's or octet's rows read one each)")]
    fw = env.frame_word_beats             # beats a frame-buffer word, one written at a time
    mems += [EngineMemory(frame_memory(g), SB * fw, env.frame_beats // fw, granularity=SB if fw > 1 else None,
                          role="frame buffer (a copy per window generator)")
             for g in range(G)]
    if env.index_beats:
        mems.append(EngineMemory("index_mem", SB, env.index_beats, role="sparse factors' column indices"))
    # IN: per window generator, `in_banks` banks skewed by lane (see `skewed_bank`): each word holds
    # one element of `in_slots` lanes, so a bank is narrower and deeper than an element-mod-E bank
    # of all the generator's lanes (block RAM's 512-deep shapes are filled)
    mems += [EngineMemory(f"in_mem{b}_{g}", in_slots(env) * A, 2 * env.max_q, granularity=A,
                          role="IN (im2col columns)")
             for b in range(in_banks(env)) for g in range(G)]
    if env.max_factors > 1:
        # one memory per element of a WORK word (memories.work_elements), read at one address
        mems += [EngineMemory(work_memory(e), L * A, 2 * work_half_words(env), role="factor intermediates")
                 for e in range(work_elements(env))]
    # OUT: E banks skewed by lane, like IN (`skewed_bank`); read by the output stage (pooling) and
    # by the unloader
    mems += [EngineMemory(f"out_mem{b}", out_slots(env) * A, 2 * env.max_p, read_ports=2, role="OUT")
             for b in range(E)]
    return mems
