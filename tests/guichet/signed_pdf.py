"""A GENERATED pentest report signed with the test PKI (issue 19 §5): a real one-page PDF
whose first page states application, version and verdict, signed (PAdES, pyHanko) with a
certificate the test IGC-Santé issues to an auditing organisation (subject O)."""

from __future__ import annotations

import io
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.fields import SigFieldSpec, SigSeedSubFilter

from confiance.pki import Pki

from .helpers import report_pdf

PASSI_DEMO = "Audit Sécurité Démo"


def report_lines(name: str, version: str, *, eligible: bool = True) -> list[str]:
    verdict = "L'application peut être référencée" if eligible else "L'application ne peut pas être référencée"
    return ["Rapport de test d'intrusion", f"Application : {name}", f"Version : {version}", verdict]


def signer_for(pki: Pki, organisation: str, workdir: Path) -> signers.SimpleSigner:
    """A document signer whose certificate the test PKI issues to ``organisation``; the
    intermediate travels in the signature so the guichet can chain it to the root."""
    issued = pki.issue_client(
        "1" + uuid.uuid4().hex[:14],
        "rapport-pentest",
        organization=organisation,
        name=f"pentest-{uuid.uuid4().hex[:12]}",
    )
    inter = workdir / f"inter-{uuid.uuid4().hex[:8]}.pem"
    inter.write_bytes(pki.intermediate_cert.public_bytes(serialization.Encoding.PEM))
    signer = signers.SimpleSigner.load(issued.key_path, issued.cert_path, ca_chain_files=(str(inter),))
    assert signer is not None
    return signer


def sign_pdf(pdf: bytes, signer: signers.SimpleSigner) -> bytes:
    """PAdES baseline signature over the whole file, in a new signature field (on a thread
    of its own: pyHanko's sync API cannot run inside Playwright's event loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_sign, pdf, signer).result()


def _sign(pdf: bytes, signer: signers.SimpleSigner) -> bytes:
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    meta = signers.PdfSignatureMetadata(field_name="Signature1", subfilter=SigSeedSubFilter.PADES)
    out = signers.PdfSigner(meta, signer, new_field_spec=SigFieldSpec("Signature1")).sign_pdf(writer)
    return bytes(out.getvalue())


def signed_report(pki: Pki, workdir: Path, name: str, version: str, *, organisation: str = PASSI_DEMO) -> bytes:
    return sign_pdf(report_pdf(report_lines(name, version), signed=False), signer_for(pki, organisation, workdir))


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
