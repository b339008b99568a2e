"""summary_table and write_report on a synthetic evaluation result."""

import copy
import json

import numpy as np
import pytest

from ipguard_fast.evaluation.report import summary_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def suspect(name, family, role, rate):
    return {"name": name, "family": family, "role": role, "accuracy": 0.9, "matching_rate": rate}


@pytest.fixture
def result():
    return {
        "owner": {"name": "tiny-cnn", "accuracy": 0.9123},
        "settings": {"seed": 0, "threshold": 0.5},
        "runs": [
            {
                "k": 1.0, "n_fingerprints": 100, "extract_seconds": 2.5,
                "suspects": [
                    suspect("FTAL lr=0.01 e=2", "FTAL", "positive", 0.9),
                    suspect("FTAL lr=0.1 e=2", "FTAL", "positive", 0.7),
                    suspect("prune 50%", "Prune", "positive", 0.8),
                    suspect("indep seed 1", "Independent", "negative", 0.1),
                    suspect("indep seed 2", "Independent", "negative", 0.3),
                ],
                "aruc": 0.6123, "roc_auc": 1.0,
            },
            {
                "k": 10.0, "n_fingerprints": 100, "extract_seconds": 3.0,
                "suspects": [
                    suspect("FTAL lr=0.01 e=2", "FTAL", "positive", 1.0),
                    suspect("FTAL lr=0.1 e=2", "FTAL", "positive", 0.96),
                    suspect("prune 50%", "Prune", "positive", 0.99),
                    suspect("indep seed 1", "Independent", "negative", 0.05),
                    suspect("indep seed 2", "Independent", "negative", 0.02),
                ],
                "aruc": 0.9401, "roc_auc": 1.0,
            },
        ],
    }


def table_row(table, first_cell):
    rows = [line for line in table.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, table
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_summary_table_rows(result):
    table = summary_table(result)
    assert "tiny-cnn" in table and "0.9123" in table
    header = table_row(table, "Family")
    assert header == ["Family", "Role", "Suspects", "k=1", "k=10"]
    assert table_row(table, "FTAL") == ["FTAL", "positive", "2", "0.800 [0.700, 0.900]", "0.980 [0.960, 1.000]"]
    assert table_row(table, "Independent") == [
        "Independent", "negative", "2", "0.200 [0.100, 0.300]", "0.035 [0.020, 0.050]"
    ]
    assert table_row(table, "**ARUC / ROC AUC**")[3:] == ["0.612 / 1.000", "0.940 / 1.000"]
    assert "- k=10: 100 fingerprints extracted in 3.0 s" in table


def test_family_missing_from_a_run_shows_a_dash(result):
    result["runs"][1]["suspects"] = [s for s in result["runs"][1]["suspects"] if s["family"] != "Prune"]
    assert table_row(summary_table(result), "Prune")[3:] == ["0.800 [0.800, 0.800]", "–"]


def test_write_report_files(result, tmp_path):
    paths = write_report(result, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "ru_curves", "matching_rates"}
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "results.json", "results.md", "ru_curves.png", "matching_rates.png"
    }  # and no temp files left behind
    assert json.loads(paths["json"].read_text()) == result
    assert paths["markdown"].read_text() == summary_table(result)
    for key in ("ru_curves", "matching_rates"):
        data = paths[key].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_json_is_strict(result, tmp_path):
    result["runs"][0]["aruc"] = float("nan")
    result["runs"][0]["roc_auc"] = np.float64(0.5)
    result["settings"]["ks"] = np.array([1.0, 10.0])
    paths = write_report(result, tmp_path)
    text = paths["json"].read_text()
    assert "NaN" not in text
    loaded = json.loads(text)
    assert loaded["runs"][0]["aruc"] is None
    assert loaded["runs"][0]["roc_auc"] == 0.5
    assert loaded["settings"]["ks"] == [1.0, 10.0]
    assert "n/a / 0.500" in paths["markdown"].read_text()


def test_run_with_one_role_still_plots(result, tmp_path):
    result["runs"] = result["runs"][:1]
    result["runs"][0]["suspects"] = [s for s in result["runs"][0]["suspects"] if s["role"] == "positive"]
    result["runs"][0]["aruc"] = None
    paths = write_report(result, tmp_path)
    assert paths["ru_curves"].read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("runs"), "result\\['runs'\\]: must be a non-empty list"),
        (lambda r: r["runs"][1].pop("aruc"), "result\\['runs'\\]\\[1\\]: is missing 'aruc'"),
        (lambda r: r["runs"][0]["suspects"][2].update(role="copy"),
         "result\\['runs'\\]\\[0\\]\\['suspects'\\]\\[2\\]\\['role'\\]: must be 'positive' or 'negative'"),
        (lambda r: r["runs"][0]["suspects"][0].update(matching_rate=1.5), "\\['matching_rate'\\]: must be a number in"),
        (lambda r: r["runs"][0].update(k="one"), "\\['k'\\]: must be a number"),
    ],
)
def test_bad_result_is_rejected_before_writing(result, tmp_path, mutate, message):
    bad = copy.deepcopy(result)
    mutate(bad)
    with pytest.raises(ValueError, match=message):
        write_report(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
