"""POST /export-data: downloads whose numbers equal the JSON endpoints'."""

from __future__ import annotations

import io
import zipfile

import openpyxl
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from openpyxl.chart import LineChart


def test_xlsx_download_matches_the_json_endpoints(client: TestClient) -> None:
    window = {"index": "ew-tech50", "start_date": "2023-02-01", "end_date": "2023-02-28"}
    response = client.post("/export-data", json={**window, "format": "xlsx"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    disposition = response.headers["content-disposition"]
    assert "attachment" in disposition and "ew-tech50_2023-02-01_2023-02-28.xlsx" in disposition
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert book.sheetnames[:4] == ["Summary", "Performance", "Compositions", "Changes"]
    assert any(isinstance(c, LineChart) for c in book["Summary"]._charts)

    perf = client.get("/index-performance", params=window).json()
    sheet = book["Performance"]
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref
    header = [c.value for c in sheet[1]]
    rows = [
        dict(zip(header, (c.value for c in row), strict=True)) for row in sheet.iter_rows(min_row=2)
    ]
    assert len(rows) == len(perf["data"])
    for got, want in zip(rows, perf["data"], strict=True):
        assert got["date"].date().isoformat() == want["date"]
        assert (got["level"], got["daily_return"], got["cumulative_return"]) == (
            want["level"],
            want["daily_return"],
            want["cumulative_return"],
        )
    assert "%" in sheet.cell(row=2, column=header.index("daily_return") + 1).number_format

    comp = client.get(
        "/index-composition", params={"index": "ew-tech50", "date": "2023-02-15"}
    ).json()
    sheet = book["Compositions"]
    header = [c.value for c in sheet[1]]
    day_rows = [
        dict(zip(header, (c.value for c in row), strict=True))
        for row in sheet.iter_rows(min_row=2)
        if row[0].value.date().isoformat() == "2023-02-15"
    ]
    assert [r["symbol"] for r in day_rows] == [c["symbol"] for c in comp["constituents"]]
    for got, want in zip(day_rows, comp["constituents"], strict=True):
        assert (got["rank"], got["market_cap"]) == (want["rank"], want["market_cap"])
        # securities with dividend/split data compound their return price from the
        # window's first rebalance: equal to the last bit or two (see test_export.py)
        for key in ("weight", "price", "units"):
            assert got[key] == pytest.approx(want[key], rel=1e-13, abs=0), key


def test_csv_and_parquet_downloads_are_zips_of_the_tables(client: TestClient) -> None:
    for fmt in ("csv", "parquet"):
        response = client.post("/export-data", json={"index": "ew100", "format": fmt})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
            names = sorted(zf.namelist())
            assert names == sorted(
                f"{t}.{fmt}" for t in ("summary", "performance", "compositions", "changes")
            )
            if fmt == "parquet":
                table = pq.read_table(io.BytesIO(zf.read("performance.parquet")))
                perf = client.get("/index-performance").json()["data"]
                assert table.column("level").to_pylist() == [p["level"] for p in perf]


def test_export_errors_are_problem_json(client: TestClient) -> None:
    assert client.post("/export-data", json={"index": "nope"}).status_code == 404
    bad = client.post("/export-data", json={"format": "pdf"})
    assert bad.status_code == 422 and bad.json()["field"] == "format"
    bad = client.post("/export-data", json={"start_date": "2023-03-01", "end_date": "2023-01-01"})
    assert bad.status_code == 422
