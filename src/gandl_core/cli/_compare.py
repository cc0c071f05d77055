"""``gandl-core compare``: one table comparing embeddings (GAN-DL vs counterparts) on the same tasks.

Examples:

    gandl-core compare gan.parquet randd.parquet hc.parquet -o cmp/
    gandl-core compare gan.parquet hc.parquet --task controls --task percelltype \\
        --ground-truth screen/ground_truth.csv -o cmp/
    gandl-core compare a.parquet b.parquet --task "Metadata_Condition == 'Mock';Metadata_Condition == 'Active SARS-CoV-2'" -o cmp/

Writes DIR/compare.csv (rows = task/metric, columns = embeddings), DIR/compare.md, DIR/compare.html
and its numbers in DIR/compare.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_out_argument, add_overwrite_argument, plain, staged_output

HELP = "compare embeddings on the same tasks (accuracy, Z', dose fits, replicate mAP)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help=HELP, description=plain(__doc__),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="+", metavar="TABLE", help="embeddings tables (.parquet/.csv), site or well level")
    p.add_argument("--task", action="append", metavar="TASK",
                   help="controls (default), celltype, percelltype, or \"POS_QUERY;NEG_QUERY\"; repeatable")
    p.add_argument("--name", action="append", metavar="NAME",
                   help="column name for each table, in order (default: the featurizer's name)")
    p.add_argument("--ground-truth", metavar="CSV", help="ground_truth.csv of a synthetic screen (EC50 agreement)")
    p.add_argument("--no-map", action="store_true", help="skip the replicate-retrieval mAP (copairs)")
    add_out_argument(p, "DIR", "folder to write compare.csv/.md/.html/.json")
    add_overwrite_argument(p, "compare output in DIR")
    p.set_defaults(func=run)


FILES = ["compare.csv", "compare.md", "compare.html", "compare.json"]


def run(args: argparse.Namespace) -> int:
    from ..analysis.compare import parse_task

    for task in args.task or []:
        parse_task(task)  # a bad task or query fails before any table is read
    with staged_output(args.out, "compare", overwrite=args.overwrite, known=FILES) as stage:
        md, notes, written = _compare(args, stage)
    print(md)
    for note in notes[:10]:
        print("note:", note)
    print(f"wrote {args.out}/" + ", ".join(written))
    return 0


def _compare(args: argparse.Namespace, out: Path) -> tuple[str, list, list[str]]:
    from ..analysis.compare import compare_embeddings, embedding_name, report_section, to_markdown
    from ..errors import ConfigError
    from ..tables import read_table, write_table, write_text_atomic

    if args.name and len(args.name) != len(args.tables):
        raise ConfigError(f"--name given {len(args.name)} time(s) for {len(args.tables)} table(s); give one per table.")
    tables = {}
    for i, path in enumerate(args.tables):
        df = read_table(path)
        name = args.name[i] if args.name else embedding_name(df, Path(path).stem)
        while name in tables:
            name += "'"
        tables[name] = df
    result = compare_embeddings(tables, tasks=args.task or ["controls"], ground_truth=args.ground_truth,
                                replicate_map=not args.no_map)
    write_table(result.reset_index(), out / "compare.csv")
    md = to_markdown(result)
    write_text_atomic(out / "compare.md", md)
    from ..analysis.report import write_report

    write_report(out / "compare.html", [report_section(result)], title="Embedding comparison")
    return md, list(result.attrs.get("notes", [])), sorted(p.name for p in out.iterdir())
