"""Pentest reports for the guichet tests: the demo's signed report builder
(``confiance.demo.pentest_report``), and the attack a first-page check alone misses."""

from __future__ import annotations

import io

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from confiance.demo.pentest_report import PASSI_DEMO, report_lines, signed_report

__all__ = ["PASSI_DEMO", "append_revision", "report_lines", "signed_report"]


def append_revision(signed: bytes, name: str, version: str) -> bytes:
    """The attack a first-page check alone misses: an incremental update after signing
    whose new page states another version (pypdf reads the last revision)."""
    writer = IncrementalPdfFileWriter(io.BytesIO(signed), strict=False)
    from pyhanko.pdf_utils import generic

    page = writer.root["/Pages"]["/Kids"][0].get_object()
    text = f"BT /F1 12 Tf 1 0 0 1 50 800 Tm (Application : {name}) Tj 1 0 0 1 50 782 Tm (Version : {version}) Tj ET"
    stream = generic.StreamObject(stream_data=text.encode("latin-1"))
    page[generic.NameObject("/Contents")] = writer.add_object(stream)
    writer.update_container(page)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()
