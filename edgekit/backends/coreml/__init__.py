"""Core ML ``.mlpackage`` artifacts (mlprogram fp32/fp16, w8 linear, w6/w4 palettized weights).

Prediction needs macOS; elsewhere the gate runs edgekit's MIL evaluator (:mod:`.mil_reference`).
"""

from edgekit.backends.declaration import Backend, Option

BACKEND = Backend(
    format="coreml", runtime="Core ML", precisions=("fp32", "fp16", "w8", "w6", "w4"), quantized=("w8", "w6", "w4"),
    converter="edgekit.backends.coreml.converter:CoreMLConverter",
    session="edgekit.backends.coreml.session:CoreMLSession",
    extra="coreml", packages=("coremltools", "onnx2torch"),
    delegates={"cpu": "cpu", "gpu": "gpu", "npu": "npu", "all": "mixed"},
    options=(
        Option("input_type", "tensor input, or an image input with the normalization folded in (camera frames)",
               choices=("tensor", "image"), default="tensor"),
        Option("palette", "palettization granularity of w6/w4 (per_grouped_channel needs iOS 18)",
               choices=("per_tensor", "per_grouped_channel"), default="per_tensor", precisions=("w6", "w4")),
    ),
)
