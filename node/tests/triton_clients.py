"""Triton's own clients (tritonclient.grpc and tritonclient.http), unchanged,
against every node of a cluster where the models live on one node only.

Usage: triton_clients.py NODES_JSON MODELS_DIR
NODES_JSON: [{"name": "n1", "http": "127.0.0.1:p", "grpc": "127.0.0.1:q"}, ...];
the first node serves tiny, multi and dtypes. Every check raises on a wrong
answer; the last line printed is a JSON summary of what was checked.
"""

import json
import queue
import sys

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

NODES = json.loads(sys.argv[1])
MODELS = sys.argv[2]
OWNER = NODES[0]["name"]
RNG = np.random.default_rng(7)
SESSIONS = {m: ort.InferenceSession(f"{MODELS}/{m}.onnx") for m in ("tiny", "multi", "dtypes")}
DTYPES = [("fp32", np.float32, "FP32"), ("fp16", np.float16, "FP16"), ("fp64", np.float64, "FP64"),
          ("int8", np.int8, "INT8"), ("int16", np.int16, "INT16"), ("int32", np.int32, "INT32"),
          ("int64", np.int64, "INT64"), ("uint8", np.uint8, "UINT8"), ("bool", np.bool_, "BOOL")]


def reference(model, feeds):
    session = SESSIONS[model]
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def expect_error(what, call, *needles):
    try:
        call()
    except InferenceServerException as error:
        text = str(error)
        assert all(n in text for n in needles), f"{what}: {text!r} lacks {needles}"
        return text
    raise AssertionError(f"{what}: no error")


def inputs_of(lib, feeds, binary):
    made = []
    for name, array in feeds.items():
        datatype = {np.dtype(t): d for _, t, d in DTYPES}[array.dtype]
        tensor = lib.InferInput(name, list(array.shape), datatype)
        if lib is httpclient:
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        made.append(tensor)
    return made


def outputs_of(lib, names, binary):
    if lib is httpclient:
        return [lib.InferRequestedOutput(n, binary_data=binary) for n in names]
    return [lib.InferRequestedOutput(n) for n in names]


def provenance(lib, result):
    response = result.get_response()
    if lib is httpclient:
        return response["parameters"]["gpumesh_node"]
    return response.parameters["gpumesh_node"].string_param


def infer_equal(lib, client, model, feeds, binary=True):
    want = reference(model, feeds)
    result = client.infer(model, inputs_of(lib, feeds, binary), outputs=outputs_of(lib, want, binary))
    for name, expected in want.items():
        got = result.as_numpy(name)
        assert got is not None, f"{model}: no output {name}"
        assert got.dtype == expected.dtype, f"{model}.{name}: {got.dtype} != {expected.dtype}"
        assert got.shape == expected.shape, f"{model}.{name}: {got.shape} != {expected.shape}"
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(got, expected)
    assert provenance(lib, result) == OWNER, f"{model} ran on {provenance(lib, result)}, not {OWNER}"


def stats_of(lib, client, model):
    stats = client.get_inference_statistics(model) if lib is httpclient else \
        client.get_inference_statistics(model, as_json=True)
    entry = stats["model_stats"]
    assert len(entry) == 1 and entry[0]["name"] == model, stats
    return int(entry[0].get("inference_count", 0)), int(entry[0].get("execution_count", 0))


def check_node(node, lib, url):
    client = lib.InferenceServerClient(url=url)
    as_json = {} if lib is httpclient else {"as_json": True}
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny")
    assert client.get_server_metadata(**as_json)["name"] == "gpumesh"

    metadata = client.get_model_metadata("tiny", **as_json)
    assert metadata["inputs"][0]["name"] == "input" and metadata["inputs"][0]["datatype"] == "FP32"
    assert [int(d) for d in metadata["inputs"][0]["shape"]] == [-1, 3, 32, 32], metadata

    config = client.get_model_config("tiny", **as_json)
    config = config.get("config", config)
    assert int(config["max_batch_size"]) == 32, config
    assert config["input"][0]["data_type"] == "TYPE_FP32", config
    assert [int(d) for d in config["input"][0]["dims"]] == [3, 32, 32], config
    assert [int(d) for d in config["output"][0]["dims"]] == [10], config
    multi = client.get_model_config("multi", **as_json)
    multi = multi.get("config", multi)
    assert int(multi.get("max_batch_size", 0)) == 0, multi

    index = client.get_model_repository_index(**as_json)
    index = index.get("models", index) if isinstance(index, dict) else index
    names = sorted(m["name"] for m in index)
    assert names == ["dtypes", "multi", "tiny"], index
    assert all(m["state"] == "READY" for m in index), index

    before = stats_of(lib, client, "tiny")
    batch = RNG.standard_normal((3, 3, 32, 32), dtype=np.float32)
    infer_equal(lib, client, "tiny", {"input": batch})
    if lib is httpclient:
        infer_equal(lib, client, "tiny", {"input": batch}, binary=False)
    after = stats_of(lib, client, "tiny")
    runs = 2 if lib is httpclient else 1
    assert after[0] == before[0] + 3 * runs, (before, after)
    assert after[1] >= before[1] + 1, (before, after)
    everything = client.get_inference_statistics(**as_json)
    assert sorted(s["name"] for s in everything["model_stats"]) == ["dtypes", "multi", "tiny"], everything

    infer_equal(lib, client, "multi", {
        "a": RNG.standard_normal((2, 4), dtype=np.float32),
        "b": RNG.integers(-5, 5, (2, 4), dtype=np.int64),
        "scale": np.array(1.5, dtype=np.float32),
    })
    feeds = {}
    for suffix, numpy_type, _ in DTYPES:
        values = RNG.integers(0, 2, (2, 3)) if numpy_type is np.bool_ else RNG.integers(-3, 100, (2, 3))
        feeds[f"in_{suffix}"] = values.astype(numpy_type)
    infer_equal(lib, client, "dtypes", feeds)
    if lib is httpclient:
        infer_equal(lib, client, "dtypes", feeds, binary=False)

    expect_error("unknown model", lambda: client.get_model_config("nope"), "unknown model", "nope")
    expect_error("unknown model infer", lambda: client.infer("nope", inputs_of(lib, {"input": batch}, True)),
                 "unknown model")
    expect_error("wrong version", lambda: client.get_model_metadata("tiny", model_version="7"), "only version 1")
    wrong = {"input": RNG.standard_normal((1, 3, 8, 8), dtype=np.float32)}
    expect_error("wrong shape", lambda: client.infer("tiny", inputs_of(lib, wrong, True)), "input")
    if lib is grpcclient:
        check_stream(client)
    client.close()


def check_stream(client):
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent = {}
    for i in range(8):
        batch = RNG.standard_normal((1 + i % 3, 3, 32, 32), dtype=np.float32)
        sent[str(i)] = batch
        client.async_stream_infer("tiny", inputs_of(grpcclient, {"input": batch}, True), request_id=str(i))
    client.async_stream_infer("nope", inputs_of(grpcclient, {"input": sent["0"]}, True), request_id="bad")
    results, errors = {}, []
    for _ in range(9):
        result, error = answers.get(timeout=30)
        if error is not None:
            errors.append(str(error))
        else:
            results[result.get_response().id] = result.as_numpy("logits")
    client.stop_stream()
    assert len(errors) == 1 and "unknown model" in errors[0], errors
    assert sorted(results) == sorted(sent), results.keys()
    for key, batch in sent.items():
        np.testing.assert_allclose(results[key], reference("tiny", {"input": batch})["logits"], rtol=1e-5, atol=1e-6)


checked = []
for node in NODES:
    check_node(node, grpcclient, node["grpc"])
    checked.append(f"{node['name']}/grpc")
    check_node(node, httpclient, node["http"])
    checked.append(f"{node['name']}/http")
print(json.dumps({"checked": checked}))
