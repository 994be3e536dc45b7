"""ONNX Runtime fp32 vs static int8 (QDQ) of the bundled student: 256x256 and 144x256, 1 and 2 threads."""

from harness import bench_main

if __name__ == "__main__":
    bench_main("onnxruntime", ["onnx-fp32", "onnx-int8"])
