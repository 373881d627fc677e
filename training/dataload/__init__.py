"""The data path: dataset files -> MariaDB (loader) -> RDS-export-layout Parquet (exporter).

``python -m training.dataload load|export`` is the command line; the reader of the export
layout is ``training.sources.export``.
"""
