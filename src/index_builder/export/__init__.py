"""Exports of a built index window: an xlsx workbook or a zip of CSV or Parquet tables.

See :func:`export_index`. Every format holds the same tables (summary,
performance, compositions, changes) with the values of the JSON API, unrounded.
"""

from index_builder.export.service import (
    EXPORT_FORMATS,
    XLSX_MEDIA_TYPE,
    ZIP_MEDIA_TYPE,
    ExportFile,
    ExportFormat,
    export_index,
)

__all__ = [
    "EXPORT_FORMATS",
    "XLSX_MEDIA_TYPE",
    "ZIP_MEDIA_TYPE",
    "ExportFile",
    "ExportFormat",
    "export_index",
]
