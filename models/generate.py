#!/usr/bin/env python3
"""Generates the models gpumesh ships and tests with, deterministically.

    .venv/bin/python models/generate.py              # tiny.onnx, multi.onnx, dtypes.onnx (committed)
    .venv/bin/python models/generate.py --resnet50   # also resnet50.onnx (~100 MB, not committed)

Every weight comes from numpy's RandomState(seed), so a run always writes
the same bytes.
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 17
IR_VERSION = 8  # FIELD-NOTES: pin it so older runtimes load the files


def save(graph, name):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gpumesh")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = os.path.join(HERE, name)
    onnx.save(model, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def weight(rng, name, shape, fan_in):
    return numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32), name)


def tiny():
    """A small CNN: input [N,3,32,32] FP32 -> logits [N,10]."""
    rng = np.random.RandomState(0)
    inits = [
        weight(rng, "conv_w", (8, 3, 3, 3), 27),
        numpy_helper.from_array(np.zeros(8, np.float32), "conv_b"),
        weight(rng, "fc_w", (8, 10), 8),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    save(graph, "tiny.onnx")


def multi():
    """Several inputs and outputs, mixed datatypes and a scalar input.

    sum   FP32 [N,4] = a * scale + float(b)
    count INT64 [N]  = sum of b over axis 1
    mask  BOOL [N,4] = a > 0
    """
    nodes = [
        helper.make_node("Mul", ["a", "scale"], ["scaled"]),
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["scaled", "b_float"], ["sum"]),
        helper.make_node("ReduceSum", ["b", "axes"], ["count"], keepdims=0),
        helper.make_node("Greater", ["a", "zero"], ["mask"]),
    ]
    graph = helper.make_graph(
        nodes, "multi",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 4]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("count", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["N", 4]),
        ],
        [
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )
    save(graph, "multi.onnx")


DTYPES = [
    ("fp32", TensorProto.FLOAT), ("fp16", TensorProto.FLOAT16), ("fp64", TensorProto.DOUBLE),
    ("int8", TensorProto.INT8), ("int16", TensorProto.INT16), ("int32", TensorProto.INT32),
    ("int64", TensorProto.INT64), ("uint8", TensorProto.UINT8), ("bool", TensorProto.BOOL),
]


def dtypes():
    """Identity for every datatype of SPEC section 5: in_<t> [N,-1] -> out_<t>."""
    nodes = [helper.make_node("Identity", [f"in_{t}"], [f"out_{t}"]) for t, _ in DTYPES]
    graph = helper.make_graph(
        nodes, "dtypes",
        [helper.make_tensor_value_info(f"in_{t}", p, ["N", "M"]) for t, p in DTYPES],
        [helper.make_tensor_value_info(f"out_{t}", p, ["N", "M"]) for t, p in DTYPES],
    )
    save(graph, "dtypes.onnx")


def resnet50():
    """ResNet-50 architecture (25.6 M parameters) with seeded weights:
    input [N,3,224,224] FP32 -> logits [N,1000]."""
    rng = np.random.RandomState(50)
    nodes, inits = [], []
    counter = [0]

    def conv(x, c_in, c_out, k, stride=1, relu=True):
        counter[0] += 1
        n = f"c{counter[0]}"
        inits.append(weight(rng, f"{n}_w", (c_out, c_in, k, k), c_in * k * k))
        inits.append(numpy_helper.from_array(np.zeros(c_out, np.float32), f"{n}_b"))
        pad = k // 2
        nodes.append(helper.make_node("Conv", [x, f"{n}_w", f"{n}_b"], [n], strides=[stride, stride],
                                      pads=[pad, pad, pad, pad]))
        if not relu:
            return n
        nodes.append(helper.make_node("Relu", [n], [f"{n}_r"]))
        return f"{n}_r"

    x = conv("input", 3, 64, 7, stride=2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, c_in = "pool0", 64
    for stage, (blocks, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)]):
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            y = conv(x, c_in, width, 1)
            y = conv(y, width, width, 3, stride=stride)
            y = conv(y, width, width * 4, 1, relu=False)
            shortcut = conv(x, c_in, width * 4, 1, stride=stride, relu=False) if block == 0 else x
            counter[0] += 1
            out = f"add{counter[0]}"
            nodes.append(helper.make_node("Add", [y, shortcut], [out]))
            nodes.append(helper.make_node("Relu", [out], [f"{out}_r"]))
            x, c_in = f"{out}_r", width * 4
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits.append(weight(rng, "fc_w", (2048, 1000), 2048))
    inits.append(numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]))
    graph = helper.make_graph(
        nodes, "resnet50",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    save(graph, "resnet50.onnx")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resnet50", action="store_true", help="also write resnet50.onnx (~100 MB)")
    args = parser.parse_args()
    tiny()
    multi()
    dtypes()
    if args.resnet50:
        resnet50()


if __name__ == "__main__":
    main()
