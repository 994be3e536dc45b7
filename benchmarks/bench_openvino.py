"""OpenVINO FP32 (f32 hint), FP32 (bf16 hint), FP16 and INT8 of the bundled student on the CPU plugin."""

from harness import bench_main

if __name__ == "__main__":
    bench_main("openvino", ["openvino-fp32", "openvino-fp16", "openvino-int8"],
               delegates={"openvino-fp32": ["cpu", "cpu@bf16"]})
