"""Just enough ASN.1 DER to read an X.509 certificate's notAfter (no crypto dependency).

Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber
INTEGER, signature AlgorithmIdentifier, issuer Name, validity SEQUENCE { notBefore Time,
notAfter Time }, ... }, ... }; Time is UTCTime (YYMMDDHHMMSSZ, YY < 50 meaning 20YY) or
GeneralizedTime (YYYYMMDDHHMMSS[.fff]Z).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

SEQUENCE = 0x30
INTEGER = 0x02
CONTEXT_0 = 0xA0
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PEM_END = b"-----END CERTIFICATE-----"


class CertificateError(ValueError):
    """The bytes are not a certificate this parser can read; the message says why."""


def _tlv(data: bytes, pos: int, limit: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``, which must end by ``limit``."""
    if pos + 2 > limit:
        raise CertificateError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise CertificateError("unexpected high-number tag")
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if not 1 <= n <= 4 or pos + n > limit:
            raise CertificateError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > limit:
        raise CertificateError("truncated DER")
    return tag, pos, end


def _expect(data: bytes, pos: int, limit: int, tag: int, what: str) -> tuple[int, int]:
    got, start, end = _tlv(data, pos, limit)
    if got != tag:
        raise CertificateError(f"expected {what}")
    return start, end


def parse_time(tag: int, raw: bytes) -> float:
    """Unix time of a UTCTime or GeneralizedTime value (UTC, "Z" form)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise CertificateError("time is not ASCII") from None
    if not text.endswith("Z"):
        raise CertificateError("time without Z (UTC) suffix")
    text = text[:-1]
    fraction = 0.0
    if tag == UTC_TIME:
        if len(text) not in (10, 12) or not text.isdigit():
            raise CertificateError("bad UTCTime")
        yy = int(text[:2])
        year, rest = (2000 + yy if yy < 50 else 1900 + yy), text[2:]
    elif tag == GENERALIZED_TIME:
        whole, dot, frac = text.partition(".")
        if len(whole) not in (12, 14) or not whole.isdigit() or (dot and not frac.isdigit()):
            raise CertificateError("bad GeneralizedTime")
        year, rest = int(whole[:4]), whole[4:]
        fraction = float("0." + frac) if dot else 0.0
    else:
        raise CertificateError("validity time of unknown type")
    if len(rest) == 8:
        rest += "00"  # seconds may be left out (BER)
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise CertificateError("time out of range") from None
    return when.timestamp() + fraction


def not_after(der: bytes) -> float:
    """Unix time of the certificate's notAfter."""
    limit = len(der)
    cert, cert_end = _expect(der, 0, limit, SEQUENCE, "Certificate SEQUENCE")
    pos, tbs_end = _expect(der, cert, cert_end, SEQUENCE, "tbsCertificate SEQUENCE")
    tag, _, end = _tlv(der, pos, tbs_end)
    if tag == CONTEXT_0:  # version
        pos = end
    _, pos = _expect(der, pos, tbs_end, INTEGER, "serialNumber INTEGER")
    _, pos = _expect(der, pos, tbs_end, SEQUENCE, "signature AlgorithmIdentifier")
    _, pos = _expect(der, pos, tbs_end, SEQUENCE, "issuer Name")
    validity, validity_end = _expect(der, pos, tbs_end, SEQUENCE, "validity SEQUENCE")
    _, _, before_end = _tlv(der, validity, validity_end)
    tag, start, end = _tlv(der, before_end, validity_end)
    return parse_time(tag, der[start:end])


def first_certificate(data: bytes) -> bytes:
    """DER of the first PEM "CERTIFICATE" block in ``data`` (or ``data`` itself if DER)."""
    begin = data.find(PEM_BEGIN)
    if begin < 0:
        if data[:1] == bytes([SEQUENCE]):
            return data
        raise CertificateError("no PEM certificate block")
    start = begin + len(PEM_BEGIN)
    end = data.find(PEM_END, start)
    if end < 0:
        raise CertificateError("PEM certificate block not closed")
    try:
        return base64.b64decode(b"".join(data[start:end].split()), validate=True)
    except binascii.Error:
        raise CertificateError("PEM block is not valid base64") from None
