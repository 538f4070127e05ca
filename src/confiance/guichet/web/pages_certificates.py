"""Certificates ordered from a dossier: the sandbox test certificate (generated key, shown
once) and, after the grant, the production certificate from the operator's own CSR, and
its renewal. The production private key never reaches the guichet."""

from __future__ import annotations

from starlette.responses import Response

from .common import attempt
from .core import Flash, Rq

CSR_MAX = 20_000


def _csr(rq: Rq) -> tuple[str | None, Flash | None]:
    """The CSR from the uploaded file, else from the pasted text; None when neither."""
    up = rq.file("csr_file")
    if up is not None and up.filename:
        data = up.file.read(CSR_MAX + 1)
        if len(data) > CSR_MAX:
            return None, Flash("error", "Demande de certificat (CSR) trop volumineuse : 20 Ko au plus.")
        try:
            return data.decode("ascii"), None
        except UnicodeDecodeError:
            return None, Flash("error", "La demande de certificat (CSR) doit être un fichier PEM (texte).")
    pasted = rq.f("csr_pem")
    return (pasted or None), None


def _issued(rq: Rq, cid: int, out: object) -> Response:
    resp = rq.render("certificate.html", title="Certificat émis", cid=cid, cert=out)
    resp.headers["Cache-Control"] = "no-store"  # a sandbox key is shown on this response only
    return resp


def certificate_order(rq: Rq) -> Response:
    cid = rq.int_param("cid")
    back = rq.url("candidature", cid=cid) + "#cert-h"
    try:
        comp = int(rq.f("component_id"))
    except ValueError:
        return rq.redirect(back, Flash("error", "Choisissez un composant."))
    csr, err = _csr(rq)
    if err is not None:
        return rq.redirect(back, err)
    out, err = attempt(rq.web.service.order_certificate, rq.user_required().principal, cid, comp, csr)
    if err is not None or out is None:
        return rq.redirect(back, err)
    return _issued(rq, cid, out)


def certificate_renew(rq: Rq) -> Response:
    cid, cert_id = rq.int_param("cid"), rq.int_param("cert")
    back = rq.url("candidature", cid=cid) + "#cert-h"
    csr, err = _csr(rq)
    if err is not None:
        return rq.redirect(back, err)
    out, err = attempt(rq.web.service.renew_certificate, rq.user_required().principal, cid, cert_id, csr)
    if err is not None or out is None:
        return rq.redirect(back, err)
    return _issued(rq, cid, out)
