"""NCNN artifacts (pnnx export, fp16 weights, edgekit's implementation of ncnn's int8 scheme) run by ncnn."""

from edgekit.backends.declaration import Backend, Option

BACKEND = Backend(
    format="ncnn", runtime="ncnn", precisions=("fp32", "fp16", "int8"), quantized=("int8",),
    converter="edgekit.backends.ncnn.converter:NcnnConverter",
    session="edgekit.backends.ncnn.session:NcnnSession",
    extra="ncnn", packages=("ncnn", "pnnx"),
    delegates={"cpu": "cpu", "gpu": "gpu", "gpu:N": "gpu"},
    options=(
        Option("calibration_method", "activation calibration: KL divergence (ncnn2table's default) or ACIQ",
               choices=("kl", "aciq"), default="kl", precisions=("int8",)),
        Option("pooled_layers", "layers fed by a global pooling (squeeze-excite) in float (negligible cost; their "
               "narrow calibrated ranges saturate on unlike inputs) or in int8", choices=("float", "int8"),
               default="float", precisions=("int8",)),
    ),
)
