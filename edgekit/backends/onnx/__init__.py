"""ONNX artifacts run by ONNX Runtime: fp32 (the prepared source) and static QDQ int8."""

from edgekit.backends.declaration import Backend, Option

BACKEND = Backend(
    format="onnx", runtime="ONNX Runtime", precisions=("fp32", "int8"), quantized=("int8",),
    converter="edgekit.backends.onnx.converter:OnnxConverter",
    session="edgekit.backends.onnx.session:OrtSession",
    extra="core", packages=("onnx", "onnxruntime", "onnxslim"),
    delegates={"cpu": "cpu", "cuda": "gpu", "tensorrt": "gpu", "openvino": "mixed", "coreml": "mixed",
               "nnapi": "mixed", "qnn": "npu"},
    options=(
        Option("calibration_method", "how activation ranges are calibrated",
               choices=("percentile", "minmax", "entropy"), default="percentile", precisions=("int8",)),
        Option("hard_activations", "HardSwish/HardSigmoid as Add/Clip/Mul int8 kernels (decompose) or as ORT's "
               "float ops between Quantize/Dequantize pairs (keep)", choices=("decompose", "keep"),
               default="decompose", precisions=("int8",)),
        Option("pooled_layers", "layers fed by a global pooling (squeeze-excite) in float (negligible cost; their "
               "narrow calibrated ranges saturate on unlike inputs) or in int8", choices=("float", "int8"),
               default="float", precisions=("int8",)),
    ),
)
