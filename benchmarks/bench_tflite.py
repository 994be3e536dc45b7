"""Every TFLite variant of the bundled student on LiteRT (XNNPACK): size, parity, latency, conversion time."""

from harness import bench_main

if __name__ == "__main__":
    bench_main("tflite", ["tflite-fp32", "tflite-fp16", "tflite-int8-dynamic", "tflite-int8"])
