"""Static check of an ONNX graph against TensorRT's ONNX-parser support list (default-deny).

Data: ``engines/data/onnx-parser-supported-ops.txt`` (one op per line, ``#`` comments) and
``engines/data/onnx-parser-restrictions.json`` (float-only ops, inputs that must be constant,
attribute rules, rank rules, data-dependent-shape and control-flow ops, custom domains).

:func:`check_onnx_for_tensorrt` returns a list of human-readable problems (empty = passes); each
starts with the node name/op, e.g. ``"node 'r1' (ReduceSum): input 1 (axes) must be a constant"``.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DATA_DIR = Path(__file__).resolve().parent / "data"
SUPPORTED_OPS_FILE = DATA_DIR / "onnx-parser-supported-ops.txt"
RESTRICTIONS_FILE = DATA_DIR / "onnx-parser-restrictions.json"
OPSET_RANGE = (9, 24)
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
DEFAULT_DOMAINS = ("", "ai.onnx")
# data inputs that the float-only rule applies to (others: every input)
_FLOAT_INPUTS = {
    "Resize": (0,),
    "GridSample": (0, 1),
    "BatchNormalization": (0, 1, 2, 3, 4),
    "LayerNormalization": (0, 1, 2),
    "GroupNormalization": (0, 1, 2),
    "RMSNormalization": (0, 1),
    "InstanceNormalization": (0, 1, 2),
}
_DEFAULTS = {
    ("TopK", "sorted"): 1,
    ("Resize", "antialias"): 0,
    ("Resize", "mode"): "nearest",
    ("Resize", "coordinate_transformation_mode"): "half_pixel",
    ("Resize", "nearest_mode"): "round_prefer_floor",
    ("Resize", "keep_aspect_ratio_policy"): "stretch",
    ("LSTM", "input_forget"): 0,
    ("LSTM", "layout"): 0,
    ("ScatterND", "reduction"): "none",
}


@lru_cache(maxsize=1)
def supported_ops() -> frozenset[str]:
    """Op types accepted by the TensorRT ONNX parser (default domain)."""
    ops = set()
    for line in SUPPORTED_OPS_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ops.add(line)
    return frozenset(ops)


@lru_cache(maxsize=1)
def restrictions() -> dict[str, Any]:
    return json.loads(RESTRICTIONS_FILE.read_text())


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return _DEFAULTS.get((node.op_type, name), default)


def _has_attr(node: onnx.NodeProto, name: str) -> bool:
    return any(a.name == name for a in node.attribute)


def _node_label(node: onnx.NodeProto, i: int) -> str:
    return f"node {node.name!r} ({node.op_type})" if node.name else f"node #{i} ({node.op_type})"


def _iter_graphs(g: onnx.GraphProto) -> Iterable[onnx.GraphProto]:
    yield g
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _iter_graphs(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sg in a.graphs:
                    yield from _iter_graphs(sg)


def check_onnx_for_tensorrt(
    model: str | os.PathLike | onnx.ModelProto, *, trt_version: str = "10", check_opset: bool = True
) -> list[str]:
    """Problems that would make TensorRT's ONNX parser reject (or mis-handle) ``model``.

    Checks, per node (subgraphs included): default-domain op in the supported list (custom domains
    denied); no control-flow (If/Loop/Scan) or data-dependent-shape ops (NonZero,
    NonMaxSuppression, Unique); float-only ops get float inputs (dtypes from ONNX shape inference;
    unknown dtype is a problem); ``const_input`` inputs are initializers or ``Constant`` outputs
    (e.g. Reduce* ``axes``, Squeeze/Unsqueeze ``axes``); TopK ``K`` constant and ``< K_max``;
    attribute rules; input rank rules; the default-domain opset within 9..24.

    Args:
        model: path or ``ModelProto``. trt_version: selects version-specific rank rules
            (``GridSample`` rank 5 needs >= 11.2).
    Returns: list of problem strings (empty: the graph passes).
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    rules = restrictions()
    ops = supported_ops()
    problems: list[str] = []

    if check_opset:
        for imp in proto.opset_import:
            if imp.domain in DEFAULT_DOMAINS and not OPSET_RANGE[0] <= imp.version <= OPSET_RANGE[1]:
                problems.append(
                    f"model: default-domain opset {imp.version} outside the supported "
                    f"range {OPSET_RANGE[0]}..{OPSET_RANGE[1]}"
                )
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False)
    except Exception as e:  # noqa: BLE001
        problems.append(f"model: ONNX shape inference failed ({e}); dtypes cannot be verified")
        inferred = proto

    float_only = set(rules.get("float_only", []))
    const_input = {k: list(v) for k, v in rules.get("const_input", {}).items()}
    attr_rules = rules.get("attr_rules", {})
    rank_rules = dict(rules.get("rank_rules", {}))
    major_minor = tuple(int(x) for x in (trt_version.split(".") + ["0"])[:2] if x.isdigit())
    grid_key = "GridSample_11_2plus" if major_minor >= (11, 2) else "GridSample_10x"
    if grid_key in rank_rules:
        rank_rules["GridSample"] = rank_rules[grid_key]
    dd_ops = set(rules.get("data_dependent_shape_ops", []))
    cf_ops = set(rules.get("control_flow_ops", []))

    counter = 0
    for g in _iter_graphs(inferred.graph):
        types: dict[str, int] = {}
        ranks: dict[str, int] = {}
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            tt = vi.type.tensor_type
            if tt.elem_type:
                types[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                ranks[vi.name] = len(tt.shape.dim)
        consts: dict[str, np.ndarray | None] = {}
        for init in g.initializer:
            types[init.name] = init.data_type
            ranks[init.name] = len(init.dims)
            consts[init.name] = None  # decoded lazily
        inits = {i.name: i for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS:
                for o in n.output:
                    consts[o] = None

        def const_value(name: str) -> np.ndarray | None:  # noqa: B023 - used within this iteration only
            if name in inits:  # noqa: B023
                return numpy_helper.to_array(inits[name])  # noqa: B023
            for nd in g.node:  # noqa: B023
                if nd.op_type == "Constant" and name in nd.output:
                    for a in nd.attribute:
                        if a.name == "value":
                            return numpy_helper.to_array(a.t)
                        if a.name in ("value_int", "value_float"):
                            return np.array(helper.get_attribute_value(a))
                        if a.name in ("value_ints", "value_floats"):
                            return np.array(helper.get_attribute_value(a))
            return None

        for n in g.node:
            label = _node_label(n, counter)
            counter += 1
            op = n.op_type
            if n.domain not in DEFAULT_DOMAINS:
                problems.append(f"{label}: custom domain {n.domain!r} is not supported (no TensorRT plugin registered)")
                continue
            if op in cf_ops:
                problems.append(f"{label}: control-flow op is not allowed")
                continue
            if op in dd_ops:
                problems.append(f"{label}: data-dependent output shape op is not allowed")
                continue
            if op not in ops:
                problems.append(f"{label}: op not supported by the TensorRT ONNX parser")
                continue
            # float-only inputs
            if op in float_only:
                idxs = _FLOAT_INPUTS.get(op, range(len(n.input)))
                for i in idxs:
                    if i >= len(n.input) or not n.input[i]:
                        continue
                    t = types.get(n.input[i])
                    if t is None:
                        problems.append(
                            f"{label}: dtype of input {i} ({n.input[i]!r}) unknown; float-only op cannot be verified"
                        )
                    elif t not in FLOAT_TYPES:
                        problems.append(
                            f"{label}: input {i} ({n.input[i]!r}) is "
                            f"{TensorProto.DataType.Name(t)}; op supports float types only"
                        )
            # constant inputs
            for i in const_input.get(op, []):
                if i < len(n.input) and n.input[i] and n.input[i] not in consts:
                    problems.append(
                        f"{label}: input {i} ({n.input[i]!r}) must be a constant (initializer or Constant node)"
                    )
            # attribute rules
            ar = attr_rules.get(op, {})
            for key, rule in ar.items():
                if key == "K_max_exclusive":
                    if len(n.input) > 1 and n.input[1] in consts:
                        k = const_value(n.input[1])
                        if k is not None and int(np.max(k)) >= int(rule):
                            problems.append(f"{label}: K={int(np.max(k))} must be < {rule}")
                elif key == "outputs_max":
                    used = sum(1 for o in n.output if o)
                    if used > int(rule):
                        problems.append(f"{label}: at most {rule} output(s) supported (has {used})")
                elif key == "forbidden_attrs":
                    for a in rule:
                        if _has_attr(n, a):
                            problems.append(f"{label}: attribute {a!r} is not supported")
                elif key == "zero_point":
                    if len(n.input) > 2 and n.input[2]:
                        zp = const_value(n.input[2]) if n.input[2] in consts else None
                        if zp is None or np.any(zp != 0):
                            problems.append(f"{label}: zero_point must be a constant 0")
                elif key == "inputs_rank":
                    r = ranks.get(n.input[0]) if n.input else None
                    if r is not None and r != int(rule):
                        problems.append(f"{label}: input rank {r} not supported (needs {rule})")
                elif key == "unsupported_inputs":
                    names = ["Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"]
                    for nm in rule:
                        j = names.index(nm) if nm in names else -1
                        if 0 <= j < len(n.input) and n.input[j]:
                            problems.append(f"{label}: input {nm!r} is not supported")
                elif key == "unsupported_outputs":
                    names = ["Y", "present_key", "present_value", "qk_matmul_output"]
                    for nm in rule:
                        j = names.index(nm) if nm in names else -1
                        if 0 <= j < len(n.output) and n.output[j]:
                            problems.append(f"{label}: output {nm!r} is not supported")
                elif key == "unsupported_attrs":
                    for a in rule:
                        v = _attr(n, a)
                        if v not in (None, 0, 0.0):
                            problems.append(f"{label}: attribute {a!r}={v!r} is not supported")
                elif rule == "empty_or_all_ones":
                    v = _attr(n, key)
                    if v and any(int(x) != 1 for x in v):
                        problems.append(f"{label}: {key}={list(v)} not supported (must be all ones)")
                elif isinstance(rule, list):
                    v = _attr(n, key)
                    if v is not None and v not in rule:
                        problems.append(f"{label}: {key}={v!r} not supported (allowed: {rule})")
                else:
                    v = _attr(n, key)
                    if v is not None and v != rule:
                        problems.append(f"{label}: {key}={v!r} not supported (must be {rule!r})")
            # rank rules
            if op in rank_rules and n.input:
                r = ranks.get(n.input[0])
                if r is None:
                    problems.append(f"{label}: rank of input 0 unknown (needs {rank_rules[op]})")
                elif r not in rank_rules[op]:
                    problems.append(f"{label}: input rank {r} not supported (needs one of {rank_rules[op]})")
    return problems


def assert_tensorrt_compatible(model: str | os.PathLike | onnx.ModelProto, **kw) -> None:
    """Raise ``ValueError`` listing every problem found by :func:`check_onnx_for_tensorrt`."""
    probs = check_onnx_for_tensorrt(model, **kw)
    if probs:
        raise ValueError("ONNX graph is not TensorRT-compatible:\n  " + "\n  ".join(probs))
