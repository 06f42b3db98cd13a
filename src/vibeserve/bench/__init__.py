"""Open-loop load generator for OpenAI-compatible servers (`vibeserve bench`, `python -m vibeserve.bench`).

Depends on no other vibeserve module. Library use::

    from vibeserve.bench import BenchConfig, run_benchmark
    report = run_benchmark(BenchConfig(url="http://127.0.0.1:8000", rate=10, num_requests=50))
"""

from vibeserve.bench.client import RequestResult, run_benchmark, run_benchmark_async
from vibeserve.bench.metrics import BenchReport
from vibeserve.bench.workload import BenchConfig, BenchError

__all__ = ["BenchConfig", "BenchError", "BenchReport", "RequestResult", "run_benchmark", "run_benchmark_async"]
