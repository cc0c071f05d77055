"""User queries can never run code: the selection language (gandl_core.selection) and every place
that takes a query (issue 12, item 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gandl_core.errors import ConfigError
from gandl_core.selection import check_expr, quote_column, select


def _table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "Metadata_Plate": rng.choice(["P1", "P2"], n),
        "Metadata_Well": [f"{r}{c:02d}" for r, c in zip(rng.choice(list("BCDE"), n), rng.integers(2, 12, n))],
        "Metadata_Role": rng.choice(["positive", "negative", "treated"], n),
        "Metadata_Concentration": rng.choice([0.0, 0.1, 1.0, 10.0], n),
        "Metadata_Site": rng.integers(1, 4, n),
        "Metadata_IsControl": rng.random(n) < 0.3,
        "Metadata_Dose (uM)": rng.choice([0.5, 5.0], n),
        "GAN_0": rng.normal(size=n),
    })


def _payloads(target) -> list[str]:
    t = str(target)
    return [
        f"Metadata_Role == 'positive' | (@pd.io.common.os.system('touch {t}') == 0)",   # the reported one
        f"Metadata_Role == 'positive' and @pd.io.common.os.system('touch {t}') == 0",
        f"__import__('os').system('touch {t}') == 0",
        f"Metadata_Role == 'positive' or (lambda: __import__('os').system('touch {t}'))() == 0",
        f"Metadata_Role.__class__.__init__.__globals__['os'].system('touch {t}') == 0",
        f"`Metadata_Role`.str.startswith('p') | (open('{t}', 'w') == 0)",
        f"`x` + `y` == 0 or print('touch {t}') == 0",
        f"[c for c in ().__class__.__base__.__subclasses__()] == 0",
        f"Metadata_Role == 'a' if open('{t}', 'w') else Metadata_Role == 'b'",
        f"(t := open('{t}', 'w')) == 0",
        f"Metadata_Role[0] == 'p'",
        f"Metadata_Role == f\"{{open('{t}', 'w')}}\"",
        f"Metadata_Concentration ** 2 > 1",
        f"Metadata_Role == b'positive'",
    ]


def test_reported_payload_and_variants_refused_and_run_nothing(tmp_path) -> None:
    df = _table()
    target = tmp_path / "PWNED"
    for payload in _payloads(target):
        with pytest.raises(ConfigError) as err:
            select(df, payload, option="--controls")
        assert "--controls" in str(err.value), payload
        with pytest.raises(ConfigError):
            check_expr(payload, option="--controls")
    assert not target.exists()


@pytest.mark.parametrize("payload, part", [
    ("Metadata_Role == 'positive' | (@pd.io.common.os.system('x') == 0)", "'@'"),
    ("__import__('os').system('x') == 0", "function call"),
    ("Metadata_Role.str.len() > 2", "function call"),
    ("Metadata_Role.values == 1", "attribute access"),
    ("Metadata_Role[0] == 'p'", "indexing"),
    ("Metadata_Concentration + 1 > 2", "arithmetic"),
    ("(lambda: 1) == 1", "lambda"),
])
def test_refusal_names_option_and_offending_part(payload, part) -> None:
    with pytest.raises(ConfigError) as err:
        check_expr(payload, option="--positive")
    msg = str(err.value)
    assert msg.startswith("--positive ") and part in msg and "Allowed:" in msg


def test_backticked_names_are_data_never_code(tmp_path) -> None:
    target = tmp_path / "PWNED"
    # A column whose *name* is a payload: referenced with backticks it is only a name.
    evil = f"x` == 0 or __import__('os').system('touch {target}') == 0 or `y"
    df = _table()
    df[evil.replace("`", "")] = 1
    for expr in [f"`{evil.replace('`', '')}` == 1", f"`__import__('os').system('touch {target}')` == 1"]:
        try:
            mask = select(df, expr)
            assert mask.all()  # the column of ones, found by its name
        except ConfigError as exc:  # the second names no column: refused, naming it
            assert "no column" in str(exc)
    with pytest.raises(ConfigError):  # the raw payload cannot close a backtick early into code
        select(df, f"`{evil}` == 1")
    assert not target.exists()
    assert quote_column("Metadata_Dose (uM)") == "`Metadata_Dose (uM)`"
    assert quote_column("Metadata_Role") == "Metadata_Role"
    with pytest.raises(ConfigError):
        quote_column("a`b")


CLEAN_QUERIES = [
    "Metadata_Role == 'positive'",
    "Metadata_Role == \"negative\"",
    "Metadata_Role != 'treated'",
    "Metadata_Role == 'positive' | Metadata_Concentration > 1",
    "Metadata_Role == 'negative' & Metadata_Plate == 'P2'",
    "Metadata_Role == 'negative' and Metadata_Plate == 'P2' or Metadata_Site >= 3",
    "(Metadata_Role == 'negative') & (Metadata_Concentration <= 0.1)",
    "not Metadata_Role == 'treated'",
    "~(Metadata_Concentration < 1)",
    "Metadata_Role in ['positive', 'negative']",
    "Metadata_Role not in ('treated',)",
    "Metadata_Concentration in [0.1, 10]",
    "0.05 < Metadata_Concentration < 5",
    "Metadata_Concentration > -1",
    "Metadata_Site == 2",
    "Metadata_IsControl",
    "Metadata_IsControl and Metadata_Site != 1",
    "Metadata_IsControl == True",
    "`Metadata_Dose (uM)` > 1",
    "`Metadata_Role` == 'positive' and `Metadata_Dose (uM)` == 0.5",
    "Metadata_Well == 'B02' or Metadata_Well == 'C11'",
]


@pytest.mark.parametrize("expr", CLEAN_QUERIES)
def test_same_mask_as_pandas_query_on_clean_inputs(expr) -> None:
    for seed in range(3):
        df = _table(seed=seed)
        df.index = df.index * 3 + 7  # a non-default index is kept
        want = pd.Series(df.index.isin(df.query(expr).index), index=df.index)
        got = select(df, expr)
        assert got.dtype == bool and got.index.equals(df.index)
        pd.testing.assert_series_equal(got, want, check_names=False)


def test_query_over_several_lines() -> None:
    df = _table()
    pd.testing.assert_series_equal(select(df, "Metadata_Role\n == 'positive'\n | Metadata_Site == 1"),
                                   select(df, "Metadata_Role == 'positive' | Metadata_Site == 1"))


def test_check_expr_lists_columns_and_helpful_errors() -> None:
    assert check_expr("`Metadata_Dose (uM)` > 1 & Metadata_Role == 'x'") == ["Metadata_Dose (uM)", "Metadata_Role"]
    df = _table()
    with pytest.raises(ConfigError, match="no column 'Metadata_Rol'.*Metadata_Role"):
        select(df, "Metadata_Rol == 'positive'", option="--negative")
    with pytest.raises(ConfigError, match="cannot compare"):
        select(df, "Metadata_Role < 3")
    with pytest.raises(ConfigError, match="not a true/false column"):
        select(df, "Metadata_Role")
    with pytest.raises(ConfigError, match="not closed"):
        select(df, "Metadata_Role == 'positive")
    with pytest.raises(ConfigError, match="list"):
        select(df, "Metadata_Role == ['positive']")
    for bad in ["", "   ", None, "Metadata_Role ==", "(" * 500 + "Metadata_Site == 1" + ")" * 500,
                "not " * 5000 + "Metadata_IsControl", "Metadata_Role == 'a' # comment"]:
        with pytest.raises(ConfigError):
            select(df, bad)


def test_none_means_missing() -> None:
    df = pd.DataFrame({"Metadata_Treatment": ["DMSO", None, "drug"], "Metadata_Dose": [0.0, np.nan, 1.0]})
    assert select(df, "Metadata_Treatment == None").tolist() == [False, True, False]
    assert select(df, "Metadata_Dose != None").tolist() == [True, False, True]
    # NaN never matches a comparison (as in pandas)
    assert select(df, "Metadata_Dose < 5").tolist() == [True, False, True]


# ----- every command that takes a query refuses the payload and runs nothing -----------------------------------

@pytest.fixture
def wells_table(tmp_path):
    from gandl_core.tables import write_table

    rng = np.random.default_rng(0)
    rows = []
    for w in range(36):
        role = ["positive", "negative", "treated"][w % 3]
        conc = [0.1, 1.0, 10.0][(w // 3) % 3] if role == "treated" else 0.0
        f = rng.normal(size=6)
        f[0] += {"positive": 8.0, "negative": 0.0, "treated": 8.0 * conc / (conc + 1)}[role]
        rows.append({"Metadata_Plate": "P1", "Metadata_Well": f"{'ABCDEF'[w // 6]}{w % 6 + 1:02d}",
                     "Metadata_Role": role, "Metadata_Treatment": "drug" if role == "treated" else "",
                     "Metadata_Concentration": conc, **{f"GAN_{i}": v for i, v in enumerate(f)}})
    path = tmp_path / "wells.parquet"
    write_table(pd.DataFrame(rows), path)
    return path


def _commands(table, out, payload):
    ok_pos, ok_neg = "Metadata_Role == 'positive'", "Metadata_Role == 'negative'"
    t = str(table)
    return [
        ("--controls", ["profile", t, "-o", str(out / "p.parquet"), "--controls", payload]),
        ("--positive", ["evaluate", t, "-o", str(out / "e1"), "--positive", payload, "--negative", ok_neg]),
        ("--negative", ["evaluate", t, "-o", str(out / "e2"), "--positive", ok_pos, "--negative", payload]),
        ("--query", ["evaluate", t, "-o", str(out / "e3"), "--label", "Metadata_Role", "--query", payload]),
        ("--map-query", ["evaluate", t, "-o", str(out / "e4"), "--map", "Metadata_Treatment", "--map-query",
                         payload]),
        ("--positive", ["project", t, "-o", str(out / "pj1"), "--positive", payload, "--negative", ok_neg]),
        ("--negative", ["project", t, "-o", str(out / "pj2"), "--positive", ok_pos, "--negative", payload]),
        ("--positive", ["dose-response", t, "-o", str(out / "dr"), "--positive", payload, "--negative", ok_neg]),
        ("--task", ["compare", t, "-o", str(out / "cmp"), "--no-map", "--task", f"{payload};{ok_neg}"]),
    ]


def test_every_query_option_refuses_the_reported_payload(wells_table, tmp_path, monkeypatch, capsys) -> None:
    from gandl_core.cli import main

    monkeypatch.chdir(tmp_path)
    target = tmp_path / "PWNED"
    payload = f"Metadata_Role == 'positive' | (@pd.io.common.os.system('touch {target}') == 0)"
    out = tmp_path / "out"
    out.mkdir()
    for option, argv in _commands(wells_table, out, payload):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 1, (argv[0], option, err)
        assert option in err and "'@'" in err and "Traceback" not in err, (argv[0], err)
        assert not target.exists(), f"{argv[0]} {option} ran the payload"
    # The same commands with clean queries work (the refusal is the query's, not the command's).
    assert main(["project", str(wells_table), "-o", str(out / "ok"), "--positive", "Metadata_Role == 'positive'",
                 "--negative", "`Metadata_Role` == 'negative'"]) == 0


def test_text_in_column_is_substring_match() -> None:
    df = pd.DataFrame({"Metadata_moa": ["proteasome inhibitor", "NFkB pathway inhibitor|proteasome inhibitor",
                                        None, "HDAC inhibitor"]})
    want = df["Metadata_moa"].str.contains("proteasome", regex=False, na=False)
    pd.testing.assert_series_equal(select(df, "'proteasome' in Metadata_moa"), want, check_names=False)
    assert select(df, "'proteasome' not in Metadata_moa").tolist() == [False, False, True, True]
    assert select(df, "'.*' in Metadata_moa").sum() == 0  # text, never a regular expression
