"""Content-addressed evidence files: the name of a file is the SHA-256 of its bytes.

The same bytes deposited twice are stored once, a stored file can never be changed without
its name changing, and the digest recorded with the evidence (and in the audit trail)
proves which document a verifier reviewed. Size and type are limited, and the declared
type must match the bytes (magic numbers), so a renamed executable is not accepted as PDF.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .domain.errors import DomainError
from .domain.labels import MEDIA, label_of

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# content type -> check on the first bytes
ALLOWED_TYPES: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "application/json": (),
    "application/jose": (),
    "text/plain": (),
}


def check_content(data: bytes, content_type: str, max_bytes: int) -> str:
    """Validate size and type; return the normalised content type."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in ALLOWED_TYPES:
        raise DomainError(
            "type_refuse",
            f"type de fichier refusé ({'type non reconnu' if not ctype else 'type non accepté'}) : "
            f"déposez un fichier {', '.join(label_of(MEDIA, t) for t in ALLOWED_TYPES)}",
        )
    if not data:
        raise DomainError("fichier_vide", "le fichier est vide")
    if len(data) > max_bytes:
        raise DomainError(
            "fichier_trop_gros",
            f"fichier trop volumineux : {-(-len(data) // 1024)} Kio pour {max_bytes // 1024} Kio au plus",
        )
    magics = ALLOWED_TYPES[ctype]
    if magics and not any(data.startswith(m) for m in magics):
        raise DomainError(
            "type_incoherent", f"le contenu du fichier n'est pas celui d'un fichier {label_of(MEDIA, ctype)}"
        )
    if not magics:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DomainError(
                "type_incoherent", f"un fichier {label_of(MEDIA, ctype)} doit être du texte (UTF-8)"
            ) from exc
    return ctype


class FileStore:
    """Files under ``root/ab/cd/<sha256>``, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not SHA256_RE.match(sha256):
            raise DomainError("empreinte_invalide", "empreinte SHA-256 invalide")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        p = self.path(digest)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{digest}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(p)
        return digest

    def get(self, sha256: str) -> bytes:
        p = self.path(sha256)
        try:
            data = p.read_bytes()
        except FileNotFoundError as exc:
            raise DomainError("fichier_inconnu", "fichier introuvable") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise DomainError("fichier_altere", "le fichier stocké ne correspond plus à son empreinte")
        return data
