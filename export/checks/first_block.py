"""The graph and the model cut to their first block, for the cheap parity check (--checks fast): the input
embeddings, block 0 and the final layer. Every block has the same operators, so the cut checks all of them at
about 1/depth of the cost of the whole model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:
    from ptdit import PTDiT


def first_block_graph(path: Path, block_names: list[str], target: Path) -> None:
    """Write to `target` (in the same directory as `path`, so external weights stay reachable) the exported
    graph with every block after the first cut out: the last block's output tensor is replaced by the first
    block's, so the input embeddings, block 0 and the final layer run."""
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    first, last = block_names[0], block_names[-1]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == last:
                node.input[i] = first
    live = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):  # nodes are topologically sorted: one backward sweep finds the live ones
        if any(o in live for o in node.output):
            kept.append(node)
            live.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [t for t in graph.initializer if t.name in live]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    value_info = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    onnx.save(model, str(target))


def first_block_model(model: PTDiT) -> PTDiT:
    """The fp32 PyTorch twin of first_block_graph: a depth-1 model holding the exported model's weights
    (block 0 and everything outside the blocks), upcast to fp32."""
    from ptdit import PTDiT

    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith("transformer_blocks.") or k.startswith("transformer_blocks.0.")}
    reference = PTDiT(model.cfg.replace(depth=1), seed=model.seed).eval()
    reference.load_state_dict(state)  # copies with a cast to the reference's fp32
    return reference
