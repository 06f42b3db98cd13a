"""`python -m vibeserve.bench` / `vibeserve bench`: options in, report JSON out, exit 0 / 1 / 2."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vibeserve.bench.client import run_benchmark
from vibeserve.bench.metrics import BenchReport
from vibeserve.bench.workload import BenchConfig, BenchError, parse_goodput

# Extra arguments let `--goodput ttft:500 tpot:50` work as in vLLM (click options take one value each).
CONTEXT_SETTINGS = {"allow_extra_args": True}
HELP = "Open-loop load generator for OpenAI-compatible servers; writes a JSON report (vLLM field names)."

app = typer.Typer(add_completion=False, help=HELP, rich_markup_mode=None, pretty_exceptions_enable=False)


def _usage_error(err: Console, message: str) -> SystemExit:
    err.print(f"[red]error:[/red] {message}")
    return SystemExit(2)


def _print_summary(err: Console, report: BenchReport) -> None:
    table = Table(title="vibeserve bench", show_header=False)
    rows = [
        ("completed / failed", f"{report.completed} / {report.failed}"),
        ("failures", ", ".join(f"{k}: {v}" for k, v in report.failures.items()) or "none"),
        ("duration", f"{report.duration:.2f} s"),
        ("request throughput", f"{report.request_throughput:.2f} req/s"),
        ("output throughput", f"{report.output_throughput:.1f} tok/s ({report.token_counter})"),
        ("TTFT mean / p50 / p99", f"{report.mean_ttft_ms:.1f} / {report.median_ttft_ms:.1f} / {report.p99_ttft_ms:.1f} ms"),
        ("TPOT mean / p50 / p99", f"{report.mean_tpot_ms:.2f} / {report.median_tpot_ms:.2f} / {report.p99_tpot_ms:.2f} ms"),
        ("ITL mean / p50 / p99", f"{report.mean_itl_ms:.2f} / {report.median_itl_ms:.2f} / {report.p99_itl_ms:.2f} ms"),
        ("send lag p50 / p99 / max", f"{report.send_lag_ms.p50:.2f} / {report.send_lag_ms.p99:.2f} / {report.send_lag_ms.max:.2f} ms"),
    ]
    if report.request_goodput is not None:
        rows.append(("goodput", f"{report.request_goodput:.2f} req/s"))
    for name, value in rows:
        table.add_row(name, value)
    err.print(table)


def bench(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(help="Base URL of the server, e.g. http://127.0.0.1:8000.")],
    endpoint: Annotated[str, typer.Option(help="completions (/v1/completions) or chat (/v1/chat/completions).")] = "completions",
    model: Annotated[str | None, typer.Option(help="Model name to send (default: first of GET /v1/models).")] = None,
    rate: Annotated[float, typer.Option(help="Offered rate in req/s; inf sends all at once.")] = math.inf,
    arrival: Annotated[str, typer.Option(help="poisson (seeded), fixed (evenly spaced) or burst (all at t=0).")] = "poisson",
    num_requests: Annotated[int | None, typer.Option(help="Requests to send (default: dataset lines, or 100).")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="At most this many in flight; others wait for a slot.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic prompts and Poisson arrivals.")] = 0,
    dataset: Annotated[Path | None, typer.Option(help='JSONL: "prompt" or "messages", optional "max_tokens".')] = None,
    requests: Annotated[Path | None, typer.Option(help='Like --dataset, and every other field of a line is sent '
                                                        'in the body (e.g. "response_format", "prediction").')] = None,
    input_len: Annotated[int, typer.Option(help="Synthetic prompt length in tokens (words without --tokenizer).")] = 128,
    output_len: Annotated[int, typer.Option(help="max_tokens of each request (unless the dataset says).")] = 64,
    prefix_len: Annotated[int, typer.Option(help="Synthetic prefix shared by all prompts, before --input-len.")] = 0,
    nonce: Annotated[bool, typer.Option(help="Append a unique per-request suffix so no response can be cached.")] = True,
    stream: Annotated[bool, typer.Option(help="Stream (SSE); --no-stream times whole responses.")] = True,
    ignore_eos: Annotated[bool, typer.Option(help='Send "ignore_eos": true (a vLLM extension).')] = False,
    request_timeout: Annotated[float, typer.Option(help="Seconds for a whole request, stream included.")] = 60.0,
    tokenizer: Annotated[Path | None, typer.Option(help="Target tokenizer folder for counting tokens (default: whitespace).")] = None,
    goodput: Annotated[list[str] | None, typer.Option(help="SLOs in ms, e.g. --goodput ttft:500 tpot:50.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the JSON report to stdout.")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    save_responses: Annotated[Path | None, typer.Option(help="JSONL of each request's prompt, text and timing.")] = None,
) -> None:
    """Send requests on an open-loop schedule and report throughput, TTFT, TPOT, ITL and latency."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    extra = list(ctx.args)
    if extra and not goodput:
        raise _usage_error(err, f"unexpected arguments {' '.join(extra)}")
    if dataset is not None and requests is not None:
        raise _usage_error(err, "--dataset and --requests both name the requests; give one")
    try:
        slos = parse_goodput([*(goodput or []), *extra])
        config = BenchConfig(
            url=url, endpoint=endpoint, model=model, rate=rate, arrival=arrival, num_requests=num_requests,
            max_concurrency=max_concurrency, seed=seed, dataset=requests or dataset,
            send_extra_fields=requests is not None, input_len=input_len,
            output_len=output_len, prefix_len=prefix_len, nonce=nonce, stream=stream, ignore_eos=ignore_eos,
            request_timeout=request_timeout, tokenizer=tokenizer, goodput=slos, save_responses=save_responses,
        )  # fmt: skip
    except BenchError as e:
        raise _usage_error(err, str(e)) from None
    except ValidationError as e:
        problems = "; ".join(f"--{'.'.join(map(str, x['loc'])).replace('_', '-')}: {x['msg']}" for x in e.errors())
        raise _usage_error(err, problems) from None

    total = config.num_requests or 0
    bar = Progress(
        TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=not progress, refresh_per_second=4,
    )  # fmt: skip
    with bar:
        task = bar.add_task("requests", total=total or None)
        try:
            report = run_benchmark(config, on_result=lambda _: bar.advance(task))
        except BenchError as e:
            raise _usage_error(err, str(e)) from None
    text = report.model_dump_json(indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    if json_output:
        typer.echo(text)
    _print_summary(err, report)
    if report.failed:
        err.print(f"[red]{report.failed} of {report.num_prompts} requests failed[/red]")
        # SystemExit, not typer.Exit: a parent app run with standalone_mode=False returns typer.Exit's code
        # instead of exiting with it, and the status is this command's verdict.
        raise SystemExit(1)


app.command(context_settings=CONTEXT_SETTINGS)(bench)


def main() -> None:
    """Entry point of `python -m vibeserve.bench`."""
    app()
