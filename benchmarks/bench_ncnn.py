"""NCNN fp32, fp16 and int8 of the bundled student on the CPU, plus the Vulkan path on lavapipe (a *software*
GPU: it exercises the GPU code path, its latency says nothing about a real GPU)."""

from harness import bench_main

if __name__ == "__main__":
    bench_main("ncnn", ["ncnn-fp32", "ncnn-fp16", "ncnn-int8"], delegates={"ncnn-fp32": ["cpu", "gpu"]})
