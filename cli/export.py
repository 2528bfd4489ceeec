"""`export`: a trained student in the forms used outside the project."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import app, reported
from pipeline.core.config import from_dict, load_params, override


@app.command("export")
def export_cmd(
    name: str = typer.Argument(..., help="the student: its checkpoint is students/<name>/model.pt"),
    formats: list[str] = typer.Option(
        None, "--format", help="hf | onnx, repeatable (default: params `export`)"
    ),
    quantize: str = typer.Option(None, help='int8: also write an int8 ONNX form ("" for none)'),
    seed: int = typer.Option(
        None, help="the training seed to export (default: params export.seeds, else the first)"
    ),
    checkpoint: Path = typer.Option(None, help="default: students/<name>/model.pt"),
    out: Path = typer.Option(None, help="output folder (default: exports/<name>)"),
    manifest: Path = typer.Option(
        Path("data/manifest.jsonl"), help="corpus manifest, for int8 agreement (if it exists)"
    ),
    params: Path = typer.Option(
        Path("params.yaml"), "--params", help="params file; its `export` section, if any"
    ),
) -> None:
    """Export a student (a transformers model directory that loads with transformers alone, with
    an s3prl upstream; ONNX; int8 ONNX), each form checked against the PyTorch student; no
    teacher and no cache needed."""
    from pipeline.export.config import ExportConfig
    from stages import export

    with reported():
        raw = load_params(params) if params.is_file() else {}
        raw = override(raw, {"export.formats": formats or None, "export.quantize": quantize})
        cfg = from_dict(ExportConfig, raw.get("export", {}), "export")
        checkpoint = checkpoint or Path("students") / name / "model.pt"
        out = out or Path("exports") / name
        seed = cfg.seeds.get(name) if seed is None else seed
        record = export.run(cfg, checkpoint, out, manifest, seed)
    typer.echo(f"{name}: training seed {record['seed']}")
    for form, info in record["forms"].items():
        typer.echo(f"{out / info['path']}: {form}, max |diff| {info['max_abs_diff']:.1e}")
    agreement = record.get("int8_agreement") or {}
    for form, scores in agreement.items():
        for key, value in scores.items() if isinstance(scores, dict) else ():
            if key != "frames":
                typer.echo(f"{form}: {key} {value:.2%} with fp32 on {agreement['split']} "
                           f"({scores['frames']} frames)")  # fmt: skip
    stream = record["streaming"]
    typer.echo(f"streams: {stream['latency_ms']:g} ms latency, one frame per {stream['hop_ms']:g} "
               "ms" if stream["streams"] else f"does not stream: {stream['why_not']}")  # fmt: skip
