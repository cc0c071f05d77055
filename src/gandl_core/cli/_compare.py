"""``gandl-core compare``: one table comparing embeddings (GAN-DL vs counterparts) on the same tasks.

Examples::

    gandl-core compare gan.parquet randd.parquet hc.parquet -o cmp/
    gandl-core compare gan.parquet hc.parquet --task controls --task percelltype \\
        --ground-truth screen/ground_truth.csv -o cmp/
    gandl-core compare a.parquet b.parquet --task "Metadata_Condition == 'Mock';Metadata_Condition == 'Active SARS-CoV-2'" -o cmp/

Writes DIR/compare.csv (rows = task/metric, columns = embeddings), DIR/compare.md, DIR/compare.html (a report
page) and DIR/compare.json (its numbers).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "compare embeddings on the same tasks (accuracy, Z', dose fits, replicate mAP)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="+", metavar="TABLE", help="embeddings tables (.parquet/.csv), site or well level")
    p.add_argument("--task", action="append", metavar="TASK",
                   help="controls (default), celltype, percelltype, or \"POS_QUERY;NEG_QUERY\"; repeatable")
    p.add_argument("--name", action="append", metavar="NAME",
                   help="column name for each table, in order (default: the featurizer's name)")
    p.add_argument("--ground-truth", metavar="CSV", help="ground_truth.csv of a synthetic screen (EC50 agreement)")
    p.add_argument("--no-map", action="store_true", help="skip the replicate-retrieval mAP (copairs)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="folder to write compare.csv/.md/.html")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.compare import compare_embeddings, embedding_name, report_section, to_markdown
    from ..errors import ConfigError
    from ..tables import read_table, write_table

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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_table(result.reset_index(), out / "compare.csv")
    md = to_markdown(result)
    tmp = out / ".compare.md.tmp"
    tmp.write_text(md)
    tmp.replace(out / "compare.md")
    from ..analysis.report import write_report

    html = write_report(out / "compare.html", [report_section(result)], title="Embedding comparison")
    print(md)
    for note in result.attrs.get("notes", [])[:10]:
        print("note:", note)
    print(f"wrote {out / 'compare.csv'}, {out / 'compare.md'}, {html} and {html.with_suffix('.json')}")
    return 0
