"""TFLite artifacts run by LiteRT (the runtime formerly called TensorFlow Lite; the file format kept its name)."""

from edgekit.backends.declaration import Backend, Option

BACKEND = Backend(
    format="tflite", runtime="LiteRT", precisions=("fp32", "fp16", "int8-dynamic", "int8"),
    quantized=("int8-dynamic", "int8"),
    converter="edgekit.backends.tflite.converter:TFLiteConverter",
    session="edgekit.backends.tflite.session:LiteRTSession",
    extra="tflite", packages=("ai_edge_litert", "tensorflow", "onnx2tf", "litert_torch", "tf2onnx"),
    delegates={"cpu": "cpu", "cpu-ref": "cpu", "gpu=LIB": "gpu", "npu=LIB": "npu"},
    options=(
        Option("io_layout", "layout of the artifact's inputs (onnx2tf writes NHWC; nchw keeps the source's)",
               choices=("nhwc", "nchw")),
        Option("io_dtype", "dtype of a full-int8 model's inputs and outputs", choices=("float", "int8"),
               default="float", precisions=("int8",)),
        Option("route", "converter route: onnx2tf (any source), litert-torch (PyTorch sources, fp32/int8)",
               choices=("onnx2tf", "litert-torch")),
        Option("hard_activations", "HardSwish/HardSigmoid as fused ops (keep: int8 HARD_SWISH runs on LiteRT's "
               "reference kernels) or as Add/Clip/Mul (decompose: every op on XNNPACK)",
               choices=("keep", "decompose"), default="decompose", precisions=("int8",)),
        Option("pooled_layers", "layers fed by a global pooling (squeeze-excite) in float (negligible cost; their "
               "narrow calibrated ranges saturate on unlike inputs; quantized by ai-edge-quantizer; with "
               "hard_activations=decompose only) or in int8",
               choices=("float", "int8"), default="float", precisions=("int8",)),
    ),
    sources=(".tflite",), source_loader="edgekit.backends.tflite.source:load",
    source_original="edgekit.backends.tflite.source:original",
    device_benchmark="benchmark_model",
    note="the format is tflite, the runtime that runs it is LiteRT (ai_edge_litert)",
)
