"""Dtype names: manifests name every tensor's element type the numpy way (float32, float16, bfloat16, int64...);
these tables map the other vocabularies onto those names."""

from __future__ import annotations

# Export precision (--precision) -> the dtype of the weights and activations (fp8: of the activations and of
# the weights outside the quantized Linear layers, whose weights are float8_e4m3fn; ptdit.contract.fp8).
PRECISION_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp8": "float16"}

# TensorRT DataType member names -> dtype names.
TENSORRT_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
    "BOOL": "bool", "UINT8": "uint8", "FP8": "float8_e4m3fn",
}

# dtype names -> ONNX element types (onnx.TensorProto.DataType: fixed by the ONNX standard).
ONNX_ELEMENT_TYPES = {
    "float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7, "bool": 9, "float16": 10, "bfloat16": 16,
    "float8_e4m3fn": 17,
}


def tensorrt_dtype_name(member_name: str) -> str:
    """The dtype name of a TensorRT DataType (by its member name: the enum values differ between versions)."""
    return TENSORRT_DTYPES.get(member_name, member_name.lower())


def precision_of_element_type(element_type: int) -> str | None:
    """fp32 / fp16 / bf16 / fp8 for an ONNX element type of those precisions, else None."""
    if element_type == ONNX_ELEMENT_TYPES["float8_e4m3fn"]:
        return "fp8"
    for precision, dtype in PRECISION_DTYPES.items():
        if ONNX_ELEMENT_TYPES[dtype] == element_type:
            return precision
    return None

# ONNX Runtime's type strings ("tensor(float16)") -> dtype names, where they differ.
ONNXRUNTIME_DTYPES = {"float": "float32", "double": "float64", "float8e4m3fn": "float8_e4m3fn"}


def onnxruntime_dtype_name(type_string: str) -> str:
    name = type_string.removeprefix("tensor(").removesuffix(")")
    return ONNXRUNTIME_DTYPES.get(name, name)


def dtype_of_element_type(element_type: int) -> str:
    for name, value in ONNX_ELEMENT_TYPES.items():
        if value == element_type:
            return name
    return f"onnx element type {element_type}"
