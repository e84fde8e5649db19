"""litefly.hw: the network engine's RTL (Amaranth 0.5) and its generator.

``engine.NetworkEngine`` (top level) = ``registers.Registers`` + a soft-resettable
``engine.Datapath`` of ``loader.Loader``, ``window.WindowGenerator``, ``sequencer.Sequencer``,
``mac_array.MacArray``, ``output_stage.OutputStage``, ``unloader.Unloader`` and
``counters.Counters``; ``generate.generate`` writes the Verilog and ``manifest.json``.
``regmap`` and ``spec`` are the register map and the envelope/descriptor/cycle model.
"""
