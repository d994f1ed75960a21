"""FP16 preparation of the fusewatch ONNX exports for TensorRT.

:func:`fp16_safe_clip_floors`: the exports guard ``Sqrt``/``Div`` with ``Clip(min=1e-12)`` (the torch
model's eps). 1e-12 is 0 in float16, so an all-zero (absent) representation gives 0/0 = NaN when
TensorRT runs those layers in FP16. Every FP16 build (TensorRT 10 ``BuilderFlag.FP16`` and the
strongly typed path below) first raises those floors to :data:`FP16_SAFE_EPS`; FP32 builds keep
the export exactly as torch computes it.

FP32 → FP16 conversion for strongly typed builds:
TensorRT ≥ 11 (and TensorRT-RTX) have no ``BuilderFlag.FP16``: precision follows the network's
types. :func:`to_float16` turns a fusewatch export into an FP16 network whose inputs and output stay
float32 (a ``Cast`` after each input and before the output), so the engine's I/O buffers are the same
in both precisions. Every float32 initializer / ``Constant`` / ``Cast(to=FLOAT)`` becomes float16.

:func:`to_float16` applies :func:`fp16_safe_clip_floors` first.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CONVERTER_VERSION = "2"
"""Part of the TensorRT engine cache key of FP16 engines: bump when the preparation changes."""
FP16_SAFE_EPS = 2.0**-24
"""Smallest positive float16 (5.96e-8, a subnormal): the floor of ``Clip`` guards in FP16 networks.
Not the smallest *normal* float16 (2^-14 = 6.1e-5): real guarded sums are that small (the variance
of a fused graph's diagonal, ~4e-5), and a 2^-14 floor moved scores by 1.1e-2 on the test model,
over the FP16 tolerance; 2^-24 moves them by < 5e-6. It relies on FP16 subnormals not being flushed
to zero (CUDA's FP16 arithmetic keeps them); ``bench/trt_check.py --fp16`` checks an absent
representation on the GPU."""
_SUFFIX = "__fp16"
_FLOOR = "fp16_safe_clip_min"


def fp16_safe_clip_floors(model: bytes | onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every constant ``Clip`` minimum in ``(0, FP16_SAFE_EPS)`` raised to
    ``FP16_SAFE_EPS`` (float32 tensors; one shared initializer ``fp16_safe_clip_min``)."""
    src = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    m = onnx.ModelProto()
    m.CopyFrom(src)
    g = m.graph
    consts = {
        n.output[0]: n.attribute[0].t
        for n in g.node
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
    }
    consts.update({t.name: t for t in g.initializer})
    for node in g.node:
        if node.op_type != "Clip" or len(node.input) < 2 or node.input[1] not in consts:
            continue
        v = numpy_helper.to_array(consts[node.input[1]])
        if v.size != 1 or v.dtype != np.float32 or not 0.0 < float(v.reshape(())) < FP16_SAFE_EPS:
            continue
        if _FLOOR not in consts:
            consts[_FLOOR] = numpy_helper.from_array(np.asarray(FP16_SAFE_EPS, np.float32), _FLOOR)
            g.initializer.append(consts[_FLOOR])
        node.input[1] = _FLOOR
    return m


def _tensor16(t: TensorProto) -> TensorProto:
    if t.data_type != TensorProto.FLOAT:
        return t
    return numpy_helper.from_array(numpy_helper.to_array(t).astype("float16"), t.name)


def to_float16(model: bytes | onnx.ModelProto, safe_floors: bool = True) -> onnx.ModelProto:
    """A float16 copy of ``model`` (serialized bytes or proto) with float32 I/O and FP16-safe Clip
    floors (see module doc; ``safe_floors=False`` keeps the Clip minimums as they are).
    Integer/bool tensors are untouched; ``value_info`` is dropped (shape inference recomputes it)."""
    if safe_floors:
        m = fp16_safe_clip_floors(model)
    else:
        m = onnx.ModelProto()
        m.CopyFrom(model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model))
    g = m.graph
    for i, t in enumerate(list(g.initializer)):
        g.initializer[i].CopyFrom(_tensor16(t))
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                a.t.CopyFrom(_tensor16(a.t))
            elif node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    renamed = {}
    casts_in = []
    for vi in g.input:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            renamed[vi.name] = vi.name + _SUFFIX
            casts_in.append(
                helper.make_node(
                    "Cast", [vi.name], [vi.name + _SUFFIX], to=TensorProto.FLOAT16, name=f"{vi.name}_to_fp16"
                )
            )
    for node in g.node:
        for j, x in enumerate(node.input):
            if x in renamed:
                node.input[j] = renamed[x]
    casts_out = []
    for vo in g.output:
        if vo.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = vo.name + _SUFFIX
        for node in g.node:
            for j, x in enumerate(node.output):
                if x == vo.name:
                    node.output[j] = inner
            for j, x in enumerate(node.input):  # (an output also consumed inside the graph)
                if x == vo.name:
                    node.input[j] = inner
        casts_out.append(helper.make_node("Cast", [inner], [vo.name], to=TensorProto.FLOAT, name=f"{vo.name}_to_fp32"))
    nodes = casts_in + list(g.node) + casts_out
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return m
