"""Shorter ONNX files: internal tensor and node names replaced by short ids.

Exporters and quantizers name every tensor by its module path (``/stages.0/.../Conv_output_0
_QuantizeLinear_Output``); on a small quantized model those names weigh as much as a third of
the int8 weights. Graph inputs and outputs keep their names; nothing else reads the rest.
"""

from __future__ import annotations

from pathlib import Path

import onnx


def compact_names(path: Path) -> int:
    """Rename internal tensors and nodes of the model at ``path`` in place; bytes saved."""
    model = onnx.load(str(path))
    before = model.ByteSize()
    g = model.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    new: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in new:
            new[name] = f"t{len(new)}"
        return new[name]

    for init in g.initializer:
        init.name = short(init.name)
    for i, node in enumerate(g.node):
        node.name = f"n{i}"
        node.doc_string = ""
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    for vi in g.value_info:
        vi.name = short(vi.name)
    model.doc_string = ""
    onnx.checker.check_model(model)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return before - model.ByteSize()
