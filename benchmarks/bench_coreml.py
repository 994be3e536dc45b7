"""Core ML variants of the bundled student: size, conversion time and parity verified by edgekit's MIL
reference evaluator (prediction needs macOS; no latency is reported from a machine that cannot run it)."""

from harness import bench_main

if __name__ == "__main__":
    bench_main("coreml", ["coreml-fp32", "coreml-fp16", "coreml-w8", "coreml-w6", "coreml-w4"], threads=())
