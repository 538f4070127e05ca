// RFC 9440 Client-Cert: ":" base64(DER) ":" of the certificate nginx verified.
// The base64 body of a PEM certificate is its DER in base64: strip the armour and newlines.
function rfc9440(r) {
    var pem = r.variables.ssl_client_raw_cert;
    if (!pem || r.variables.ssl_client_verify !== 'SUCCESS') {
        return '';
    }
    return ':' + pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, '') + ':';
}

export default { rfc9440 };
