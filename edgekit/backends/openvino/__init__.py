"""OpenVINO IR artifacts (FP32, FP16 weights, NNCF INT8) run by the OpenVINO runtime."""

from edgekit.backends.declaration import Backend, Option

BACKEND = Backend(
    format="openvino", runtime="OpenVINO", precisions=("fp32", "fp16", "int8"), quantized=("int8",),
    converter="edgekit.backends.openvino.converter:OpenVINOConverter",
    session="edgekit.backends.openvino.session:OpenVINOSession",
    extra="openvino", packages=("openvino", "nncf"),
    delegates={"cpu": "cpu", "gpu": "gpu", "npu": "npu", "auto": "mixed", "hetero:...": "mixed"},
    options=(
        Option("inference_precision", "precision the CPU plugin computes in (bf16 is faster and looser)",
               choices=("f32", "bf16", "f16"), default="f32"),
        Option("nncf_mode", "NNCF quantization: plain PTQ, or accuracy control driven by the task metric",
               choices=("default", "accuracy_control"), default="default", precisions=("int8",)),
        Option("pooled_layers", "layers fed by a global pooling (squeeze-excite) in float (negligible cost; their "
               "narrow calibrated ranges saturate on unlike inputs) or in int8", choices=("float", "int8"),
               default="float", precisions=("int8",)),
    ),
)
